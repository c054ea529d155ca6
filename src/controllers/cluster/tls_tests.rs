use super::*;
use crate::shared::secrets::{ca_secret_name, client_material};

fn cluster(tls: &str) -> EtcdCluster {
    let mut ec: EtcdCluster = serde_norway::from_str(&format!(
        "apiVersion: etcdpilot.io/v1alpha1\nkind: EtcdCluster\nmetadata: {{name: main, namespace: prod, uid: u1}}\nspec: {{version: 3.4.23, tls: {tls}}}\n"
    ))
    .unwrap();
    ec.metadata.uid = Some("u1".into());
    ec
}

fn by_name(writes: Vec<SecretWrite>) -> BTreeMap<String, Secret> {
    writes.into_iter().map(|w| (w.secret.name_any(), w.secret)).collect()
}

#[test]
fn names_per_mode() {
    assert_eq!(secret_names(&cluster("{mode: Disabled}")), None);
    let op = secret_names(&cluster("{}")).unwrap();
    assert_eq!(
        (op.peer.as_str(), op.server.as_str(), op.client.as_str()),
        ("main-peer-tls", "main-server-tls", "main-client-tls")
    );
    let own = secret_names(&cluster("{mode: Secrets, secrets: {peer: p, server: s, client: c}}")).unwrap();
    assert_eq!((own.peer.as_str(), own.server.as_str(), own.client.as_str()), ("p", "s", "c"));
}

#[test]
fn first_pass_writes_ca_and_three_leaves_then_nothing() {
    let ec = cluster("{}");
    let now = OffsetDateTime::now_utc();
    let first = operator_secrets(&ec, &BTreeMap::new(), now, "cluster.local", false, &[]).unwrap();
    let names: Vec<String> = first.iter().map(|w| w.secret.name_any()).collect();
    assert_eq!(names, ["main-ca", "main-peer-tls", "main-server-tls", "main-client-tls"]);
    for w in &first {
        assert_eq!(w.secret.owner_references().len(), 1, "owned by the cluster");
    }
    let existing = by_name(first);
    assert!(operator_secrets(&ec, &existing, now, "cluster.local", false, &[]).unwrap().is_empty());
    let client = client_material(&existing["main-client-tls"]).unwrap();
    assert!(String::from_utf8(client.cert_pem).unwrap().contains("BEGIN CERTIFICATE"));
    // Other modes write nothing.
    assert!(
        operator_secrets(&cluster("{mode: Disabled}"), &BTreeMap::new(), now, "cluster.local", false, &[])
            .unwrap()
            .is_empty()
    );
    assert!(
        operator_secrets(
            &cluster("{mode: Secrets, secrets: {peer: p, server: s, client: c}}"),
            &BTreeMap::new(),
            now,
            "cluster.local",
            false,
            &[]
        )
        .unwrap()
        .is_empty()
    );
}

#[test]
fn leaves_are_renewed_before_expiry_with_the_same_ca() {
    let ec = cluster("{certificateValidityDays: 365, renewBeforeDays: 30}");
    let now = OffsetDateTime::now_utc();
    let existing = by_name(operator_secrets(&ec, &BTreeMap::new(), now, "cluster.local", false, &[]).unwrap());
    // 340 days on: 25 days left, inside the 30-day window.
    let later = now + time::Duration::days(340);
    let renewed = operator_secrets(&ec, &existing, later, "cluster.local", false, &[]).unwrap();
    let names: Vec<String> = renewed.iter().map(|w| w.secret.name_any()).collect();
    assert_eq!(names, ["main-peer-tls", "main-server-tls", "main-client-tls"], "the CA stays");
    assert!(renewed.iter().all(|w| w.reason.contains("expiring")));
    // 300 days on: 65 days left, nothing to do.
    assert!(
        operator_secrets(&ec, &existing, now + time::Duration::days(300), "cluster.local", false, &[])
            .unwrap()
            .is_empty()
    );
}

#[test]
fn every_certificate_reports_its_expiry() {
    let ec = cluster("{certificateValidityDays: 90}");
    let now = OffsetDateTime::now_utc();
    let existing = by_name(operator_secrets(&ec, &BTreeMap::new(), now, "cluster.local", false, &[]).unwrap());
    let got = expiries(&ec, &existing);
    let kinds: Vec<&str> = got.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, ["ca", "server", "peer", "client"]);
    let in_days = |k: &str| (got.iter().find(|(c, _)| *c == k).unwrap().1 - now.unix_timestamp()) / 86400;
    assert_eq!(in_days("server"), 90, "a leaf: 90 days");
    assert!(in_days("ca") > 3000, "the CA: 10 years");
    assert!(expiries(&cluster("{mode: Disabled}"), &existing).is_empty());
}

#[test]
fn a_lost_ca_is_never_replaced_while_members_trust_it() {
    let ec = cluster("{}");
    let now = OffsetDateTime::now_utc();
    let mut existing = by_name(operator_secrets(&ec, &BTreeMap::new(), now, "cluster.local", false, &[]).unwrap());
    existing.remove("main-ca");
    let writes =
        operator_secrets(&ec, &existing, now + time::Duration::days(3000), "cluster.local", true, &[]).unwrap();
    assert!(writes.is_empty(), "no new CA, no leaf signed by one, even when renewal is due");
    let why = ca_lost(&ec, &existing, true).expect("lost");
    assert!(why.contains("main-ca") && why.contains("keep serving"), "{why}");
    assert_eq!(ca_lost(&ec, &existing, false), None, "no member yet: a CA is simply generated");
}

#[test]
fn a_lost_ca_before_any_member_reissues_every_leaf() {
    let ec = cluster("{}");
    let now = OffsetDateTime::now_utc();
    let mut existing = by_name(operator_secrets(&ec, &BTreeMap::new(), now, "cluster.local", false, &[]).unwrap());
    existing.remove("main-ca");
    let writes = operator_secrets(&ec, &existing, now, "cluster.local", false, &[]).unwrap();
    assert_eq!(writes.len(), 4);
    assert!(
        writes[1..].iter().all(|w| w.reason.contains("another CA")),
        "{:?}",
        writes.iter().map(|w| &w.reason).collect::<Vec<_>>()
    );
}

/// The leaves through a CA rotation: trusted CAs change without reissuing while the
/// old CA signs, every leaf is reissued when the new one signs, and only `ca.crt`
/// changes when the old one is dropped.
#[test]
fn leaves_follow_the_ca_rotation_phase_by_phase() {
    use super::super::ca_rotation::{self, Rotation};
    let ec = cluster("{}");
    let now = OffsetDateTime::now_utc();
    let mut existing = by_name(operator_secrets(&ec, &BTreeMap::new(), now, "cluster.local", false, &[]).unwrap());
    let cert = |e: &BTreeMap<String, Secret>, n: &str| get(&e[n], "tls.crt").unwrap();
    let before = cert(&existing, "main-peer-tls");
    let old = authority(&ec, &existing).unwrap();
    let n = Names::of(&ec);
    let step = |existing: &mut BTreeMap<String, Secret>, r: Rotation| {
        let a = authority(&ec, existing).unwrap();
        let new_ca = matches!(r, Rotation::Start { .. }).then(|| new_ca(&n, 1).unwrap());
        let next = ca_rotation::apply(&a, &r, new_ca).unwrap();
        existing.insert("main-ca".into(), next.to_secret(&existing["main-ca"]));
        let writes = operator_secrets(&ec, existing, now, "cluster.local", true, &[]).unwrap();
        let reasons: Vec<String> = writes.iter().map(|w| w.reason.clone()).collect();
        existing.extend(by_name(writes));
        (next, reasons)
    };
    // 1: old + new trusted, the old still signs: same certificates.
    let (p1, reasons) = step(&mut existing, Rotation::Start { generation: 1 });
    assert_eq!(reasons.len(), 3);
    assert!(reasons.iter().all(|r| r.contains("updated the CAs")), "{reasons:?}");
    assert_eq!(cert(&existing, "main-peer-tls"), before, "not reissued");
    assert_eq!(get(&existing["main-peer-tls"], "ca.crt").unwrap(), p1.trust_pem());
    assert!(signed_by(&before, &old.signer.cert_pem));
    // 2: the new CA signs every leaf; both still trusted.
    let (p2, reasons) = step(&mut existing, Rotation::SignWithNew);
    assert!(reasons.iter().all(|r| r.contains("signed by another CA")), "{reasons:?}");
    for leaf in ["main-peer-tls", "main-server-tls", "main-client-tls"] {
        assert!(signed_by(&cert(&existing, leaf), &p2.signer.cert_pem), "{leaf}");
        assert!(!signed_by(&cert(&existing, leaf), &old.signer.cert_pem), "{leaf}");
        assert_eq!(get(&existing[leaf], "ca.crt").unwrap(), p1.trust_pem(), "the same two CAs");
    }
    let reissued = cert(&existing, "main-server-tls");
    // 3: the old CA is dropped from ca.crt; certificates stay.
    let (p3, reasons) = step(&mut existing, Rotation::DropOld);
    assert_eq!(reasons.len(), 3);
    assert_eq!(cert(&existing, "main-server-tls"), reissued);
    assert_eq!(get(&existing["main-server-tls"], "ca.crt").unwrap(), p3.signer.cert_pem);
    // Done: nothing more to write.
    let (_, reasons) = step(&mut existing, Rotation::Finish);
    assert!(reasons.is_empty(), "{reasons:?}");
    assert!(p3.signer.cert_pem.contains("BEGIN CERTIFICATE"));
    let x = x509_parser::pem::parse_x509_pem(p3.signer.cert_pem.as_bytes()).unwrap().1;
    assert!(x.parse_x509().unwrap().subject().to_string().contains("generation 1"));
}

#[test]
fn sans_cover_members_and_the_client_service() {
    let n = Names { cluster: "main".into(), namespace: "prod".into(), tls: true };
    let s = server_sans(&n, "cluster.local");
    assert!(s.contains(&"*.main-peers.prod.svc".to_string()));
    assert!(s.contains(&"main-client.prod.svc".to_string()));
    assert_eq!(peer_sans(&n, "cluster.local"), ["*.main-peers.prod.svc", "*.main-peers.prod.svc.cluster.local"]);
    assert_eq!(peer_sans(&n, "corp.example")[1], "*.main-peers.prod.svc.corp.example");
}

#[test]
fn a_cluster_with_ca_from_signs_with_that_ca_and_never_makes_one() {
    let mut ec = cluster("{}");
    ec.spec.tls.ca_from = Some(crate::api::cluster::CaFrom { cluster: "main".into() });
    let now = OffsetDateTime::now_utc();
    assert!(operator_secrets(&ec, &BTreeMap::new(), now, "cluster.local", false, &[]).unwrap().is_empty(), "waits");
    let main = cluster("{}");
    let mut main_existing = BTreeMap::new();
    for w in operator_secrets(&main, &BTreeMap::new(), now, "cluster.local", false, &[]).unwrap() {
        main_existing.insert(w.secret.name_any(), w.secret);
    }
    let main_ca = main_existing.get(&ca_secret_name(&main.name_any())).cloned().unwrap();
    let existing = BTreeMap::from([(ca_secret_of(&ec), main_ca.clone())]);
    let writes = by_name(operator_secrets(&ec, &existing, now, "cluster.local", false, &[]).unwrap());
    assert_eq!(writes.len(), 3, "three leaves, no CA: {:?}", writes.keys());
    for s in writes.values() {
        assert_eq!(get(s, "ca.crt"), get(&main_ca, "tls.crt"), "signed by the shared CA");
    }
}

#[test]
fn a_stacked_clusters_certificates_name_every_control_plane_node_and_follow_a_new_one() {
    let mut ec = cluster("{}");
    ec.spec.topology = Topology::Stacked;
    let now = OffsetDateTime::now_utc();
    let two = ["10.0.0.2".to_string(), "10.0.0.1".to_string()];
    let existing = by_name(operator_secrets(&ec, &BTreeMap::new(), now, "cluster.local", false, &two).unwrap());
    for leaf in ["main-server-tls", "main-peer-tls"] {
        let sans = cert_sans(&get(&existing[leaf], "tls.crt").unwrap()).unwrap();
        assert!(sans.contains("10.0.0.1") && sans.contains("10.0.0.2"), "{leaf}: {sans:?}");
    }
    let client = cert_sans(&get(&existing["main-client-tls"], "tls.crt").unwrap()).unwrap();
    assert!(client.is_empty(), "the client certificate names no host: {client:?}");
    // The same nodes in another order: nothing to do.
    let same = ["10.0.0.1".to_string(), "10.0.0.2".to_string(), "10.0.0.1".to_string()];
    assert!(operator_secrets(&ec, &existing, now, "cluster.local", true, &same).unwrap().is_empty());
    // A third control-plane node: server and peer reissued for it, the CA and client stay.
    let three = ["10.0.0.1".to_string(), "10.0.0.2".to_string(), "10.0.0.3".to_string()];
    let writes = operator_secrets(&ec, &existing, now, "cluster.local", true, &three).unwrap();
    let names: Vec<String> = writes.iter().map(|w| w.secret.name_any()).collect();
    assert_eq!(names, ["main-peer-tls", "main-server-tls"]);
    assert!(writes.iter().all(|w| w.reason.contains("names changed")), "{:?}", writes[0].reason);
    let sans = cert_sans(&get(&writes[1].secret, "tls.crt").unwrap()).unwrap();
    assert!(sans.contains("10.0.0.3") && sans.contains("*.main-peers.prod.svc"), "{sans:?}");
    // An External cluster never names a node, whatever nodes there are.
    let ext = cluster("{}");
    let existing = by_name(operator_secrets(&ext, &BTreeMap::new(), now, "cluster.local", false, &[]).unwrap());
    assert!(operator_secrets(&ext, &existing, now, "cluster.local", true, &three).unwrap().is_empty());
    let sans = cert_sans(&get(&existing["main-server-tls"], "tls.crt").unwrap()).unwrap();
    assert!(sans.contains("127.0.0.1") && !sans.iter().any(|s| s.starts_with("10.")), "{sans:?}");
}
