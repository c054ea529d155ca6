//! Rotation of a cluster's CA (mode `Operator`), asked for by raising
//! `spec.tls.caGeneration`. Pure: the CA Secret holds the whole state, so a pass that
//! stops between two steps resumes where it stopped, and this module decides the next
//! step from that state and what was observed.
//!
//! etcd loads the CAs it trusts only at start, while it reads its own certificate files
//! on every handshake. So a rotation goes in three phases, each safe with members in
//! either state:
//!
//! 1. `TrustBoth`: a new CA is made; every leaf's `ca.crt` becomes old + new; members
//!    are restarted (rolling, leader last) to load it. The old CA still signs.
//! 2. `SignNew`: once every member runs with the bundle and accepts a certificate of the
//!    new CA, the new CA signs: every leaf is reissued (members pick the files up without
//!    a restart; they all trust both CAs).
//! 3. `DropOld`: once every member serves certificates of the new CA on both ports, the
//!    old CA leaves every `ca.crt` and members are restarted again to forget it.
//!
//! Then the rotation is over (`Stable`, generation recorded).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;

use crate::pki::CertPair;

/// On the CA Secret: the CA generation it holds (`spec.tls.caGeneration` when made).
pub const GENERATION_ANNOTATION: &str = "etcdpilot.io/ca-generation";
/// On the CA Secret: the phase of a rotation under way; absent when none is.
pub const PHASE_ANNOTATION: &str = "etcdpilot.io/ca-rotation-phase";
/// On member pods: fingerprint of the CAs the member was started trusting.
pub const TRUST_ANNOTATION: &str = "etcdpilot.io/trust";

/// Where a rotation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Stable,
    TrustBoth,
    SignNew,
    DropOld,
}

impl Phase {
    fn label(self) -> Option<&'static str> {
        match self {
            Phase::Stable => None,
            Phase::TrustBoth => Some("TrustBoth"),
            Phase::SignNew => Some("SignNew"),
            Phase::DropOld => Some("DropOld"),
        }
    }

    fn parse(s: Option<&str>) -> Option<Phase> {
        match s {
            None => Some(Phase::Stable),
            Some("TrustBoth") => Some(Phase::TrustBoth),
            Some("SignNew") => Some(Phase::SignNew),
            Some("DropOld") => Some(Phase::DropOld),
            Some(_) => None,
        }
    }
}

/// The CA of a cluster as its Secret holds it.
#[derive(Clone, Debug)]
pub struct Authority {
    pub generation: i64,
    pub phase: Phase,
    /// Signs leaf certificates now (`tls.crt`, `tls.key`).
    pub signer: CertPair,
    /// `TrustBoth`: the CA that signs next, trusted already (`next.crt`, `next.key`).
    pub next: Option<CertPair>,
    /// `SignNew`: the CA that signed before, still trusted (`previous.crt`).
    pub previous: Option<String>,
}

fn get(secret: &Secret, key: &str) -> Option<String> {
    let b = secret.data.as_ref()?.get(key)?;
    String::from_utf8(b.0.clone()).ok()
}

impl Authority {
    /// A CA made now, generation `generation`, no rotation under way.
    pub fn new(signer: CertPair, generation: i64) -> Self {
        Authority { generation, phase: Phase::Stable, signer, next: None, previous: None }
    }

    /// Reads the CA Secret; `None` when it is incomplete (see `tls::ca_lost`).
    pub fn from_secret(secret: &Secret) -> Option<Self> {
        let signer = CertPair { cert_pem: get(secret, "tls.crt")?, key_pem: get(secret, "tls.key")? };
        let ann = secret.metadata.annotations.as_ref();
        let generation = ann.and_then(|a| a.get(GENERATION_ANNOTATION)).and_then(|g| g.parse().ok()).unwrap_or(0);
        let phase = Phase::parse(ann.and_then(|a| a.get(PHASE_ANNOTATION)).map(String::as_str))?;
        let next = match (get(secret, "next.crt"), get(secret, "next.key")) {
            (Some(cert_pem), Some(key_pem)) => Some(CertPair { cert_pem, key_pem }),
            _ => None,
        };
        let previous = get(secret, "previous.crt");
        // A phase without the CA it needs is not a state this module writes.
        match phase {
            Phase::TrustBoth if next.is_none() => return None,
            Phase::SignNew if previous.is_none() => return None,
            _ => {}
        }
        Some(Authority { generation, phase, signer, next, previous })
    }

    /// The Secret's data and annotations for this state, on top of `base` (its name,
    /// owner and resourceVersion kept: the write is conditional on what was read).
    pub fn to_secret(&self, base: &Secret) -> Secret {
        let mut data = BTreeMap::from([
            ("tls.crt".to_string(), ByteString(self.signer.cert_pem.clone().into_bytes())),
            ("tls.key".to_string(), ByteString(self.signer.key_pem.clone().into_bytes())),
        ]);
        if let Some(n) = &self.next {
            data.insert("next.crt".into(), ByteString(n.cert_pem.clone().into_bytes()));
            data.insert("next.key".into(), ByteString(n.key_pem.clone().into_bytes()));
        }
        if let Some(p) = &self.previous {
            data.insert("previous.crt".into(), ByteString(p.clone().into_bytes()));
        }
        let mut secret = base.clone();
        secret.data = Some(data);
        secret.string_data = None;
        let ann = secret.metadata.annotations.get_or_insert_with(BTreeMap::new);
        ann.insert(GENERATION_ANNOTATION.into(), self.generation.to_string());
        match self.phase.label() {
            Some(p) => ann.insert(PHASE_ANNOTATION.into(), p.into()),
            None => ann.remove(PHASE_ANNOTATION),
        };
        secret
    }

    /// The CAs members trust in this phase, old before new (so phases 1 and 2, which
    /// trust the same two, give the same bytes and no restart between them).
    pub fn trust_pem(&self) -> String {
        let join = |a: &str, b: &str| format!("{}\n{}\n", a.trim_end(), b.trim_end());
        match (self.phase, &self.next, &self.previous) {
            (Phase::TrustBoth, Some(n), _) => join(&self.signer.cert_pem, &n.cert_pem),
            (Phase::SignNew, _, Some(p)) => join(p, &self.signer.cert_pem),
            _ => self.signer.cert_pem.clone(),
        }
    }

    /// Short fingerprint of [`Self::trust_pem`], recorded on member pods.
    pub fn trust_fingerprint(&self) -> String {
        fingerprint(&self.trust_pem())
    }

    /// The CA a member must accept (phase 1) or serve (phase 2) before the next phase.
    pub fn checked_ca(&self) -> Option<&CertPair> {
        match self.phase {
            Phase::TrustBoth => self.next.as_ref(),
            Phase::SignNew => Some(&self.signer),
            _ => None,
        }
    }
}

/// SHA-256 of a PEM bundle's certificates (DER), first 8 bytes in hex.
pub fn fingerprint(pem: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for c in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()).flatten() {
        h.update(&c.contents);
    }
    hex::encode(&h.finalize()[..8])
}

/// A member pod as the rotation sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodTrust {
    pub name: String,
    /// Its [`TRUST_ANNOTATION`].
    pub trust: Option<String>,
    pub ready: bool,
    pub terminating: bool,
}

/// What was observed for a rotation.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    /// `spec.tls.caGeneration`.
    pub requested: i64,
    /// Why this cluster's CA may not rotate (shared, wired to kube-apiserver), if so.
    pub refused: Option<String>,
    pub pods: &'a [PodTrust],
    /// `spec.size`.
    pub size: usize,
    /// Phases 1 and 2: whether every member passed [`Authority::checked_ca`]'s check
    /// (`None`: not checked, see [`needs_check`]).
    pub checked: Option<Result<(), String>>,
}

/// The next step of a rotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// Nothing asked, nothing under way.
    None,
    /// Make a new CA and trust it beside the old one.
    Start { generation: i64 },
    /// Every member trusts the new CA: let it sign.
    SignWithNew,
    /// Every member serves the new CA's certificates: stop trusting the old one.
    DropOld,
    /// Every member forgot the old CA: done.
    Finish,
    /// Under way; what it waits for.
    Wait(String),
    /// Asked for, not done.
    Refused(String),
}

/// Members restarted with the phase's trust, all ready, as many as asked.
fn rolled(auth: &Authority, pods: &[PodTrust], size: usize) -> (usize, bool) {
    let want = auth.trust_fingerprint();
    let done = pods.iter().filter(|p| p.trust.as_deref() == Some(want.as_str()) && p.ready && !p.terminating).count();
    (done, done == pods.len() && pods.len() >= size && size > 0)
}

/// Whether the IO check of [`Inputs::checked`] is due: in phases 1 and 2, once every
/// member runs with the phase's trust and is ready.
pub fn needs_check(auth: &Authority, pods: &[PodTrust], size: usize) -> bool {
    matches!(auth.phase, Phase::TrustBoth | Phase::SignNew) && rolled(auth, pods, size).1
}

/// The next step.
pub fn next(auth: &Authority, i: &Inputs) -> Rotation {
    let n = i.size.max(i.pods.len());
    let (done, all) = rolled(auth, i.pods, i.size);
    let g = auth.generation;
    match auth.phase {
        Phase::Stable if i.requested > auth.generation => match &i.refused {
            Some(why) => Rotation::Refused(why.clone()),
            None => Rotation::Start { generation: i.requested },
        },
        Phase::Stable => Rotation::None,
        Phase::TrustBoth if !all => Rotation::Wait(format!(
            "rotating the CA to generation {g} (1/3): restarting members to trust the new CA beside the old one, {done} of {n} done"
        )),
        Phase::TrustBoth => match &i.checked {
            Some(Ok(())) => Rotation::SignWithNew,
            Some(Err(why)) => Rotation::Wait(format!(
                "rotating the CA to generation {g} (1/3): every member restarted, not all accept the new CA yet: {why}"
            )),
            None => {
                Rotation::Wait(format!("rotating the CA to generation {g} (1/3): checking members trust the new CA"))
            }
        },
        Phase::SignNew => match (&i.checked, all) {
            (Some(Ok(())), true) => Rotation::DropOld,
            (Some(Err(why)), _) => Rotation::Wait(format!(
                "rotating the CA to generation {g} (2/3): new certificates issued, waiting for every member to serve them: {why}"
            )),
            _ => Rotation::Wait(format!(
                "rotating the CA to generation {g} (2/3): new certificates issued, waiting for every member to serve them"
            )),
        },
        Phase::DropOld if all => Rotation::Finish,
        Phase::DropOld => Rotation::Wait(format!(
            "rotating the CA to generation {g} (3/3): restarting members to trust only the new CA, {done} of {n} done"
        )),
    }
}

/// The CA state after a step (`new_ca` is the CA a `Start` makes).
pub fn apply(auth: &Authority, step: &Rotation, new_ca: Option<CertPair>) -> Option<Authority> {
    let mut a = auth.clone();
    match step {
        Rotation::Start { generation } => {
            a.next = Some(new_ca?);
            a.generation = *generation;
            a.phase = Phase::TrustBoth;
        }
        Rotation::SignWithNew => {
            let next = a.next.take()?;
            a.previous = Some(std::mem::replace(&mut a.signer, next).cert_pem);
            a.phase = Phase::SignNew;
        }
        Rotation::DropOld => {
            a.previous = None;
            a.phase = Phase::DropOld;
        }
        Rotation::Finish => a.phase = Phase::Stable,
        _ => return None,
    }
    Some(a)
}

/// What the Event of a step says.
pub fn describe(step: &Rotation, generation: i64) -> Option<String> {
    Some(match step {
        Rotation::Start { generation } => format!(
            "rotating the CA to generation {generation} (1/3): made a new CA; members are restarted one at a time to trust it beside the old one"
        ),
        Rotation::SignWithNew => format!(
            "rotating the CA to generation {generation} (2/3): every member trusts the new CA; certificates are reissued from it"
        ),
        Rotation::DropOld => format!(
            "rotating the CA to generation {generation} (3/3): every member serves the new CA's certificates; members are restarted one at a time to drop the old CA"
        ),
        Rotation::Finish => format!("rotated the CA to generation {generation}: the old CA is trusted no more"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki;
    use std::time::Duration;

    fn ca(cn: &str) -> CertPair {
        pki::generate_ca(cn, Duration::from_secs(3600)).unwrap()
    }

    fn pods(trust: &[Option<&str>], ready: bool) -> Vec<PodTrust> {
        trust
            .iter()
            .enumerate()
            .map(|(i, t)| PodTrust {
                name: format!("main-{i}"),
                trust: t.map(str::to_string),
                ready,
                terminating: false,
            })
            .collect()
    }

    fn inputs(requested: i64, pods: &[PodTrust], checked: Option<Result<(), String>>) -> Inputs<'_> {
        Inputs { requested, refused: None, pods, size: 3, checked }
    }

    fn through_secret(a: &Authority) -> Authority {
        Authority::from_secret(&a.to_secret(&Secret::default())).expect("reads back")
    }

    /// Every phase, with what it waits for and what moves it on, including a pass that
    /// stopped after writing the CA Secret (the next one starts from the Secret alone).
    #[test]
    fn a_rotation_goes_through_three_phases_each_waiting_for_every_member() {
        let old = ca("old");
        let stable = Authority::new(old.clone(), 0);
        let fp0 = stable.trust_fingerprint();
        let rolled0 = pods(&[Some(&fp0), Some(&fp0), Some(&fp0)], true);
        assert_eq!(next(&stable, &inputs(0, &rolled0, None)), Rotation::None, "nothing asked");
        let start = next(&stable, &inputs(1, &rolled0, None));
        assert_eq!(start, Rotation::Start { generation: 1 });
        let refused = Inputs { refused: Some("shared".into()), ..inputs(1, &rolled0, None) };
        assert_eq!(next(&stable, &refused), Rotation::Refused("shared".into()));

        // Phase 1: the bundle is trusted once every member restarted with it.
        let new = ca("new");
        let p1 = through_secret(&apply(&stable, &start, Some(new.clone())).unwrap());
        assert_eq!((p1.phase, p1.generation), (Phase::TrustBoth, 1));
        assert_eq!(p1.signer.cert_pem, old.cert_pem, "the old CA still signs");
        let fp1 = p1.trust_fingerprint();
        assert_ne!(fp1, fp0);
        assert!(p1.trust_pem().contains(old.cert_pem.trim_end()) && p1.trust_pem().contains(new.cert_pem.trim_end()));
        let half = pods(&[Some(&fp1), Some(&fp0), None], true);
        assert!(!needs_check(&p1, &half, 3));
        assert!(matches!(next(&p1, &inputs(1, &half, None)), Rotation::Wait(m) if m.contains("1 of 3")));
        let not_ready = pods(&[Some(&fp1), Some(&fp1), Some(&fp1)], false);
        assert!(!needs_check(&p1, &not_ready, 3), "a member restarting is not done");
        let two = pods(&[Some(&fp1), Some(&fp1)], true);
        assert!(!needs_check(&p1, &two, 3), "a member missing is not done");
        let all1 = pods(&[Some(&fp1), Some(&fp1), Some(&fp1)], true);
        assert!(needs_check(&p1, &all1, 3));
        assert_eq!(p1.checked_ca().unwrap().cert_pem, new.cert_pem, "members must accept the new CA");
        assert!(
            matches!(next(&p1, &inputs(1, &all1, Some(Err("main-2: refused".into())))), Rotation::Wait(m) if m.contains("main-2"))
        );
        assert_eq!(next(&p1, &inputs(1, &all1, Some(Ok(())))), Rotation::SignWithNew);
        // Lowering the generation mid-way does not stop a rotation.
        assert_eq!(next(&p1, &inputs(0, &all1, Some(Ok(())))), Rotation::SignWithNew);

        // Phase 2: the new CA signs; the trust is the same two CAs, so no restart.
        let p2 = through_secret(&apply(&p1, &Rotation::SignWithNew, None).unwrap());
        assert_eq!(p2.phase, Phase::SignNew);
        assert_eq!(p2.signer.cert_pem, new.cert_pem);
        assert_eq!(p2.trust_fingerprint(), fp1, "no restart between phases 1 and 2");
        assert!(needs_check(&p2, &all1, 3));
        assert!(matches!(next(&p2, &inputs(1, &all1, Some(Err("main-0 serves the old".into())))), Rotation::Wait(_)));
        assert_eq!(next(&p2, &inputs(1, &all1, Some(Ok(())))), Rotation::DropOld);

        // Phase 3: only the new CA is trusted once every member restarted again.
        let p3 = through_secret(&apply(&p2, &Rotation::DropOld, None).unwrap());
        assert_eq!(p3.phase, Phase::DropOld);
        assert_eq!(p3.trust_pem(), new.cert_pem);
        let fp3 = p3.trust_fingerprint();
        let part = pods(&[Some(&fp3), Some(&fp1), Some(&fp1)], true);
        assert!(
            matches!(next(&p3, &inputs(1, &part, None)), Rotation::Wait(m) if m.contains("3/3") && m.contains("1 of 3"))
        );
        let all3 = pods(&[Some(&fp3), Some(&fp3), Some(&fp3)], true);
        assert_eq!(next(&p3, &inputs(1, &all3, None)), Rotation::Finish);
        let done = through_secret(&apply(&p3, &Rotation::Finish, None).unwrap());
        assert_eq!((done.phase, done.generation), (Phase::Stable, 1));
        assert_eq!(next(&done, &inputs(1, &all3, None)), Rotation::None, "generation reached");
        assert_eq!(done.to_secret(&Secret::default()).data.unwrap().len(), 2, "only the new CA is kept");
    }

    #[test]
    fn a_secret_in_a_phase_without_its_ca_is_not_read() {
        let a = Authority::new(ca("a"), 0);
        let mut s = a.to_secret(&Secret::default());
        s.metadata.annotations.get_or_insert_with(BTreeMap::new).insert(PHASE_ANNOTATION.into(), "TrustBoth".into());
        assert!(Authority::from_secret(&s).is_none());
        s.metadata.annotations.get_or_insert_with(BTreeMap::new).insert(PHASE_ANNOTATION.into(), "Sideways".into());
        assert!(Authority::from_secret(&s).is_none());
        // A Secret written before rotations existed is generation 0, stable.
        let mut old = a.to_secret(&Secret::default());
        old.metadata.annotations = None;
        let read = Authority::from_secret(&old).unwrap();
        assert_eq!((read.generation, read.phase), (0, Phase::Stable));
    }

    #[test]
    fn fingerprints_follow_the_certificates_not_the_spacing() {
        let a = ca("a");
        assert_eq!(fingerprint(&a.cert_pem), fingerprint(&format!("\n{}\n\n", a.cert_pem)));
        assert_ne!(fingerprint(&a.cert_pem), fingerprint(&ca("b").cert_pem));
    }
}
