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
    /// Where kube-apiserver reaches it (see [`servers`]); empty while a Stacked cluster
    /// has no member on a node yet.
    pub servers: Vec<String>,
}

/// The URLs kube-apiserver uses for a cluster: an External cluster's client Service
/// (stable across membership changes), or a Stacked cluster's members on their nodes'
/// addresses (`https://<node IP>:2379`, in member order, IPv6 bracketed), as a kubeadm
/// control plane reaches its stacked etcd. `members`: (member, node address) of the
/// member pods that have a node address.
pub fn servers(stacked: bool, client_service_url: &str, scheme: &str, members: &[(String, String)]) -> Vec<String> {
    if !stacked {
        return vec![client_service_url.to_string()];
    }
    let mut members = members.to_vec();
    members.sort();
    members
        .into_iter()
        .filter(|(_, ip)| !ip.is_empty())
        .map(|(_, ip)| {
            let host = if ip.contains(':') { format!("[{ip}]") } else { ip };
            format!("{scheme}://{host}:{}", crate::shared::names::CLIENT_PORT)
        })
        .collect()
}

/// What the wiring controller saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub main: String,
    pub main_mode: TlsMode,
    /// Where kube-apiserver reaches the main cluster (see [`servers`]).
    pub main_servers: Vec<String>,
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

/// `group/resource#url;url` entries, the core group written as an empty group.
pub fn overrides_value(overrides: &[ApiServerOverride], servers_of: impl Fn(&str) -> Option<Vec<String>>) -> String {
    overrides
        .iter()
        .filter_map(|o| Some(format!("{}/{}#{}", o.group, o.resource, servers_of(&o.cluster)?.join(";"))))
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
    let mut unplaced: Vec<&str> = o
        .named
        .iter()
        .filter(|(_, n)| n.as_ref().is_some_and(|n| n.servers.is_empty()))
        .map(|(c, _)| c.as_str())
        .collect();
    if o.main_servers.is_empty() {
        unplaced.insert(0, &o.main);
    }
    if !unplaced.is_empty() {
        return Plan::Wait(format!("waiting for a member of {} on a node", unplaced.join(", ")));
    }
    let overrides = overrides_value(&o.overrides, |c| o.named.get(c).cloned().flatten().map(|n| n.servers));
    let etcd_servers = o.main_servers.join(",");
    let changed = o.published.as_ref() != Some(&(etcd_servers.clone(), overrides.clone())) || o.certificate.is_some();
    Plan::Publish { etcd_servers, overrides, reissue: o.certificate, changed }
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
            servers: vec!["https://events-client.cp.svc:2379".into()],
        })
    }

    fn base() -> Observed {
        Observed {
            main: "main".into(),
            main_mode: TlsMode::Operator,
            main_servers: vec!["https://main-client.cp.svc:2379".into()],
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

    #[test]
    fn stacked_clusters_are_reached_on_their_members_node_addresses() {
        let members = [
            ("main-2".to_string(), "10.0.0.3".to_string()),
            ("main-0".to_string(), "10.0.0.1".to_string()),
            ("main-1".to_string(), "fd00::2".to_string()),
            ("main-3".to_string(), String::new()),
        ];
        let url = "https://main-client.cp.svc:2379";
        assert_eq!(
            servers(true, url, "https", &members),
            ["https://10.0.0.1:2379", "https://[fd00::2]:2379", "https://10.0.0.3:2379"],
            "member order, IPv6 bracketed, a member not on a node yet left out"
        );
        assert_eq!(servers(false, url, "https", &members), [url], "External: the client Service");

        let stacked = with(base(), |o| {
            o.main_servers = vec!["https://10.0.0.1:2379".into(), "https://10.0.0.2:2379".into()];
            o.named.insert(
                "events".into(),
                Some(Named {
                    mode: TlsMode::Operator,
                    ca_from: Some("main".into()),
                    servers: vec!["https://10.0.0.1:12379".into(), "https://10.0.0.2:12379".into()],
                }),
            );
        });
        let Plan::Publish { etcd_servers, overrides, .. } = plan(&stacked) else { panic!() };
        assert_eq!(etcd_servers, "https://10.0.0.1:2379,https://10.0.0.2:2379", "comma-separated");
        assert_eq!(
            overrides,
            "/events#https://10.0.0.1:12379;https://10.0.0.2:12379,events.k8s.io/events#https://10.0.0.1:12379;https://10.0.0.2:12379",
            "an override's servers joined by ';'"
        );
        let waiting = with(base(), |o| o.main_servers.clear());
        assert_eq!(plan(&waiting), Plan::Wait("waiting for a member of main on a node".into()));
        let events_waiting = with(base(), |o| {
            o.named.insert(
                "events".into(),
                Some(Named { mode: TlsMode::Operator, ca_from: Some("main".into()), servers: Vec::new() }),
            );
        });
        assert_eq!(plan(&events_waiting), Plan::Wait("waiting for a member of events on a node".into()));
    }
}
