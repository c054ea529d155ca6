//! Member volumes following `spec.storage.size`: which claims to grow, or why they
//! cannot. Pure; the pass reads the claims (and, only when one must grow, its
//! StorageClass) and patches the claims this says to.

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::ResourceExt;
use kube_quantity::ParsedQuantity;

use crate::shared::names::REMOVED_ANNOTATION;

/// A member's PersistentVolumeClaim as the planner needs it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Claim {
    pub name: String,
    /// `spec.resources.requests.storage`.
    pub requested: Option<String>,
    /// `status.capacity.storage` (what the volume has now).
    pub capacity: Option<String>,
    pub class: Option<String>,
}

/// Where the volumes stand against the spec.
#[derive(Clone, Debug, PartialEq)]
pub enum Sizing {
    /// Every claim has the spec's size (or more).
    AtSize,
    /// Claims to grow now: their request is raised to the spec's size.
    Grow(Vec<String>),
    /// Claims asked to grow whose volumes the storage driver has not grown yet.
    Expanding(Vec<String>),
    /// The volumes cannot follow the spec: nothing is changed, a condition says why.
    Refused { reason: &'static str, message: String },
}

/// What StorageClass `class` allows: `Some(allowVolumeExpansion)`, `None` when there is
/// no such class.
pub type Expandable<'a> = &'a dyn Fn(&str) -> Option<bool>;

fn parse(q: &str) -> Option<ParsedQuantity> {
    ParsedQuantity::try_from(q).ok()
}

fn below(a: &Option<String>, b: &ParsedQuantity) -> bool {
    a.as_deref().and_then(parse).is_some_and(|a| a < *b)
}

/// The claims against `want` (`spec.storage.size`).
pub fn sizing(want: &str, claims: &[Claim], expandable: Expandable) -> Sizing {
    let Some(target) = parse(want) else {
        return Sizing::Refused {
            reason: "InvalidSize",
            message: format!("spec.storage.size {want} is not a quantity"),
        };
    };
    let larger: Vec<String> = claims
        .iter()
        .filter(|c| c.requested.as_deref().and_then(parse).is_some_and(|r| r > target))
        .map(|c| format!("{} ({})", c.name, c.requested.as_deref().unwrap_or_default()))
        .collect();
    if !larger.is_empty() {
        return Sizing::Refused {
            reason: "ShrinkNotPossible",
            message: format!(
                "spec.storage.size {want} is below the size of {}: volumes cannot shrink; they keep their size (set spec.storage.size back to at least theirs)",
                larger.join(", ")
            ),
        };
    }
    let grow: Vec<&Claim> = claims.iter().filter(|c| below(&c.requested, &target)).collect();
    if grow.is_empty() {
        let expanding: Vec<String> = claims
            .iter()
            .filter(|c| c.capacity.is_some() && below(&c.capacity, &target))
            .map(|c| c.name.clone())
            .collect();
        return if expanding.is_empty() { Sizing::AtSize } else { Sizing::Expanding(expanding) };
    }
    let names = |cs: &[&Claim]| cs.iter().map(|c| c.name.clone()).collect::<Vec<_>>().join(", ");
    for c in &grow {
        let Some(class) = c.class.as_deref() else {
            return Sizing::Refused {
                reason: "ExpansionNotAllowed",
                message: format!(
                    "{} has no StorageClass, so it cannot grow to {want}; the volumes keep their size, new members get {want}",
                    c.name
                ),
            };
        };
        match expandable(class) {
            Some(true) => {}
            Some(false) => {
                return Sizing::Refused {
                    reason: "ExpansionNotAllowed",
                    message: format!(
                        "StorageClass {class} does not allow volume expansion (allowVolumeExpansion is not true): {} keep their size while spec.storage.size is {want}; new members get {want}",
                        names(&grow)
                    ),
                };
            }
            None => {
                return Sizing::Refused {
                    reason: "ExpansionNotAllowed",
                    message: format!("StorageClass {class} of {} does not exist: the volumes keep their size", c.name),
                };
            }
        }
    }
    Sizing::Grow(grow.iter().map(|c| c.name.clone()).collect())
}

/// The condition `StorageAtSize` for a sizing: (ok, reason, message).
pub fn condition(s: &Sizing, want: &str) -> (bool, &'static str, String) {
    match s {
        Sizing::AtSize => (true, "AtSize", format!("every member volume has spec.storage.size ({want})")),
        Sizing::Grow(c) => (false, "Expanding", format!("growing {} to {want}", c.join(", "))),
        Sizing::Expanding(c) => {
            (false, "Expanding", format!("{} asked to grow to {want}; waiting for the storage driver", c.join(", ")))
        }
        Sizing::Refused { reason, message } => (false, reason, message.clone()),
    }
}

/// The claims of current members (not those set aside or on their way out), for sizing.
pub fn member_claims(pvcs: &[PersistentVolumeClaim]) -> Vec<Claim> {
    pvcs.iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none() && !c.annotations().contains_key(REMOVED_ANNOTATION))
        .map(|c| Claim {
            name: c.name_any(),
            requested: c
                .spec
                .as_ref()
                .and_then(|s| s.resources.as_ref())
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
                .map(|q| q.0.clone()),
            capacity: c
                .status
                .as_ref()
                .and_then(|s| s.capacity.as_ref())
                .and_then(|c| c.get("storage"))
                .map(|q| q.0.clone()),
            class: c.spec.as_ref().and_then(|s| s.storage_class_name.clone()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(name: &str, requested: &str, capacity: &str, class: Option<&str>) -> Claim {
        Claim {
            name: name.into(),
            requested: Some(requested.into()),
            capacity: (!capacity.is_empty()).then(|| capacity.into()),
            class: class.map(Into::into),
        }
    }

    #[test]
    fn table() {
        let yes = |_: &str| Some(true);
        let no = |_: &str| Some(false);
        let none = |_: &str| None;
        let fast = Some("fast");
        let two = |r: &str, c: &str| vec![claim("data-main-0", r, c, fast), claim("data-main-1", r, c, fast)];
        let rows: Vec<(&str, &str, Vec<Claim>, Expandable, Sizing)> = vec![
            ("equal", "4Gi", two("4Gi", "4Gi"), &no, Sizing::AtSize),
            ("same value, other unit", "4096Mi", two("4Gi", "4Gi"), &no, Sizing::AtSize),
            ("no claims (Memory)", "8Gi", vec![], &no, Sizing::AtSize),
            ("bound before the capacity is known", "4Gi", two("4Gi", ""), &no, Sizing::AtSize),
            (
                "grow where allowed",
                "8Gi",
                two("4Gi", "4Gi"),
                &yes,
                Sizing::Grow(vec!["data-main-0".into(), "data-main-1".into()]),
            ),
            (
                "only the small one grows",
                "8Gi",
                vec![claim("data-main-0", "8Gi", "8Gi", fast), claim("data-main-1", "4Gi", "4Gi", fast)],
                &yes,
                Sizing::Grow(vec!["data-main-1".into()]),
            ),
            (
                "asked, driver not done",
                "8Gi",
                two("8Gi", "4Gi"),
                &yes,
                Sizing::Expanding(vec!["data-main-0".into(), "data-main-1".into()]),
            ),
            ("driver done (capacity may exceed)", "8Gi", two("8Gi", "10Gi"), &yes, Sizing::AtSize),
        ];
        for (what, want, claims, exp, expected) in rows {
            assert_eq!(sizing(want, &claims, exp), expected, "{what}");
        }
        let refused = |want: &str, claims: Vec<Claim>, exp: Expandable| match sizing(want, &claims, exp) {
            Sizing::Refused { reason, message } => (reason, message),
            other => panic!("{want}: expected a refusal, got {other:?}"),
        };
        let (r, m) = refused("8Gi", two("4Gi", "4Gi"), &no);
        assert_eq!(r, "ExpansionNotAllowed");
        assert!(
            m.contains("StorageClass fast does not allow volume expansion") && m.contains("data-main-0, data-main-1"),
            "{m}"
        );
        let (r, m) = refused("2Gi", two("4Gi", "4Gi"), &yes);
        assert_eq!(r, "ShrinkNotPossible");
        assert!(m.contains("volumes cannot shrink") && m.contains("data-main-0 (4Gi)"), "{m}");
        let (r, m) = refused("8Gi", two("4Gi", "4Gi"), &none);
        assert_eq!(r, "ExpansionNotAllowed");
        assert!(m.contains("StorageClass fast of data-main-0 does not exist"), "{m}");
        let (r, _) = refused("8Gi", vec![claim("data-main-0", "4Gi", "4Gi", None)], &yes);
        assert_eq!(r, "ExpansionNotAllowed");
        assert_eq!(refused("lots", two("4Gi", "4Gi"), &yes).0, "InvalidSize");
    }

    #[test]
    fn conditions() {
        assert!(condition(&Sizing::AtSize, "4Gi").0);
        let (ok, reason, _) = condition(&Sizing::Grow(vec!["data-main-0".into()]), "8Gi");
        assert_eq!((ok, reason), (false, "Expanding"));
        let (ok, reason, m) = condition(&Sizing::Refused { reason: "ShrinkNotPossible", message: "m".into() }, "2Gi");
        assert_eq!((ok, reason, m.as_str()), (false, "ShrinkNotPossible", "m"));
    }
}
