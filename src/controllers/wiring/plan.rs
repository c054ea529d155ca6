//! The pure rule of kube-apiserver's wiring: from the main cluster, the clusters its
//! overrides name, and what is published now, what to publish.

use std::collections::BTreeMap;

use crate::api::cluster::{ApiServerOverride, TlsMode};

/// Common name of the client certificate issued for kube-apiserver.
pub const CLIENT_CN: &str = "kube-apiserver-etcd-client";

/// A cluster an override names, as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Named {
    pub mode: TlsMode,
    /// `spec.tls.caFrom.cluster`.
    pub ca_from: Option<String>,
    /// Its client Service URL.
    pub url: String,
}

/// What the wiring controller saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub main: String,
    pub main_mode: TlsMode,
    pub main_url: String,
    pub main_ca_ready: bool,
    pub overrides: Vec<ApiServerOverride>,
    /// The clusters the overrides name, by name (`None`: does not exist).
    pub named: BTreeMap<String, Option<Named>>,
    /// The values published now (`etcd-servers`, `etcd-servers-overrides`).
    pub published: Option<(String, String)>,
    /// Why kube-apiserver's client certificate must be (re)issued, if it must.
    pub certificate: Option<&'static str>,
}

/// What to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Bad input: say so, publish nothing new.
    Invalid(Vec<String>),
    /// Not yet (the main cluster's CA is not there).
    Wait(String),
    /// Publish these values (and reissue the certificate when `reissue` says why).
    Publish { etcd_servers: String, overrides: String, reissue: Option<&'static str>, changed: bool },
}

/// `group/resource#url` entries, the core group written as an empty group.
pub fn overrides_value(overrides: &[ApiServerOverride], url_of: impl Fn(&str) -> Option<String>) -> String {
    overrides
        .iter()
        .filter_map(|o| Some(format!("{}/{}#{}", o.group, o.resource, url_of(&o.cluster)?)))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn plan(o: &Observed) -> Plan {
    let mut problems = Vec::new();
    if o.main_mode != TlsMode::Operator {
        problems.push(format!(
            "spec.apiServer needs spec.tls.mode Operator on {}: etcd-pilot issues kube-apiserver's client certificate from its CA",
            o.main
        ));
    }
    for ov in &o.overrides {
        let gr = if ov.group.is_empty() { ov.resource.clone() } else { format!("{}/{}", ov.group, ov.resource) };
        if ov.cluster == o.main {
            problems
                .push(format!("override {gr}: names {} itself; list only resources another cluster serves", o.main));
            continue;
        }
        match o.named.get(&ov.cluster).cloned().flatten() {
            None => problems.push(format!("override {gr}: EtcdCluster {} does not exist in this namespace", ov.cluster)),
            Some(n) if n.mode != TlsMode::Operator || n.ca_from.as_deref() != Some(o.main.as_str()) => {
                problems.push(format!(
                    "override {gr}: EtcdCluster {} does not share the CA of {} (kube-apiserver has one set of etcd TLS flags for all its servers): create it with spec.tls.caFrom: {{cluster: {}}}",
                    ov.cluster, o.main, o.main
                ))
            }
            Some(_) => {}
        }
    }
    if !problems.is_empty() {
        return Plan::Invalid(problems);
    }
    if !o.main_ca_ready {
        return Plan::Wait(format!("waiting for the CA of {}", o.main));
    }
    let overrides = overrides_value(&o.overrides, |c| o.named.get(c).cloned().flatten().map(|n| n.url));
    let changed = o.published.as_ref() != Some(&(o.main_url.clone(), overrides.clone())) || o.certificate.is_some();
    Plan::Publish { etcd_servers: o.main_url.clone(), overrides, reissue: o.certificate, changed }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ov(group: &str, resource: &str, cluster: &str) -> ApiServerOverride {
        ApiServerOverride { group: group.into(), resource: resource.into(), cluster: cluster.into() }
    }

    fn named(ca_from: Option<&str>) -> Option<Named> {
        Some(Named {
            mode: TlsMode::Operator,
            ca_from: ca_from.map(str::to_string),
            url: "https://events-client.cp.svc:2379".into(),
        })
    }

    fn base() -> Observed {
        Observed {
            main: "main".into(),
            main_mode: TlsMode::Operator,
            main_url: "https://main-client.cp.svc:2379".into(),
            main_ca_ready: true,
            overrides: vec![ov("", "events", "events"), ov("events.k8s.io", "events", "events")],
            named: BTreeMap::from([("events".to_string(), named(Some("main")))]),
            published: None,
            certificate: Some("missing"),
        }
    }

    fn with(mut o: Observed, f: impl FnOnce(&mut Observed)) -> Observed {
        f(&mut o);
        o
    }

    const OVERRIDES: &str =
        "/events#https://events-client.cp.svc:2379,events.k8s.io/events#https://events-client.cp.svc:2379";

    #[test]
    fn table() {
        let publish = |reissue, changed| Plan::Publish {
            etcd_servers: "https://main-client.cp.svc:2379".into(),
            overrides: OVERRIDES.into(),
            reissue,
            changed,
        };
        let rows: Vec<(&str, Observed, Plan)> = vec![
            ("first time: a certificate and the values", base(), publish(Some("missing"), true)),
            (
                "published and current: nothing changes",
                with(base(), |o| {
                    o.published = Some(("https://main-client.cp.svc:2379".into(), OVERRIDES.into()));
                    o.certificate = None;
                }),
                publish(None, false),
            ),
            (
                "the certificate is renewed: a change (kube-apiserver reads it at start)",
                with(base(), |o| {
                    o.published = Some(("https://main-client.cp.svc:2379".into(), OVERRIDES.into()));
                    o.certificate = Some("expiring");
                }),
                publish(Some("expiring"), true),
            ),
            (
                "no overrides: an empty value",
                with(base(), |o| {
                    o.overrides.clear();
                    o.certificate = None;
                    o.published = Some(("https://main-client.cp.svc:2379".into(), OVERRIDES.into()));
                }),
                Plan::Publish {
                    etcd_servers: "https://main-client.cp.svc:2379".into(),
                    overrides: String::new(),
                    reissue: None,
                    changed: true,
                },
            ),
            (
                "the CA is not there yet",
                with(base(), |o| o.main_ca_ready = false),
                Plan::Wait("waiting for the CA of main".into()),
            ),
        ];
        for (name, o, want) in rows {
            assert_eq!(plan(&o), want, "{name}");
        }
    }

    #[test]
    fn bad_input_publishes_nothing_and_says_why() {
        let missing = with(base(), |o| {
            o.named.insert("events".into(), None);
        });
        let Plan::Invalid(p) = plan(&missing) else { panic!() };
        assert_eq!(p.len(), 2, "one per override: {p:?}");
        assert!(p[0].contains("EtcdCluster events does not exist"), "{p:?}");
        let other_ca = with(base(), |o| {
            o.named.insert("events".into(), named(None));
        });
        let Plan::Invalid(p) = plan(&other_ca) else { panic!() };
        assert!(p[0].contains("does not share the CA of main") && p[0].contains("caFrom: {cluster: main}"), "{p:?}");
        let itself = with(base(), |o| o.overrides = vec![ov("", "events", "main")]);
        assert!(matches!(plan(&itself), Plan::Invalid(p) if p[0].contains("names main itself")));
        let plain = with(base(), |o| o.main_mode = TlsMode::Disabled);
        assert!(matches!(plan(&plain), Plan::Invalid(p) if p[0].contains("needs spec.tls.mode Operator")));
    }
}
