//! Certificates of a cluster: which Secrets hold them, and, in mode `Operator`, what to
//! write into them. Pure: the reconciler reads the Secrets, this decides, it applies.
//!
//! One CA per cluster (ten years) signs three leaf certificates shared by all members:
//! peer (server + client auth, `*.<cluster>-peers.<ns>.svc`), server (the member names
//! and the client Service) and client (what etcd-pilot and users present). etcd reads
//! its certificate files on every TLS handshake, so a renewed leaf takes effect without
//! restarting a member: rotation never costs quorum.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};
use time::OffsetDateTime;

use super::build::{Names, labels};
use super::ca_rotation::Authority;
use crate::api::EtcdCluster;
use crate::api::cluster::{TlsMode, Topology};
use crate::etcd::TlsMaterial;
use crate::pki::{self, CertPair, PkiError, Usage};

/// Common name of the operator-issued peer certificate; members accept no other on the
/// peer port (`--peer-cert-allowed-cn`).
pub const PEER_CN: &str = "etcd-peer";

const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// The Secrets (type `kubernetes.io/tls`: `tls.crt`, `tls.key`, `ca.crt`) members mount
/// and etcd-pilot reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretNames {
    pub peer: String,
    pub server: String,
    pub client: String,
}

/// `None` when TLS is disabled.
pub fn secret_names(ec: &EtcdCluster) -> Option<SecretNames> {
    let c = ec.name_any();
    let tls = &ec.spec.tls;
    match tls.mode {
        TlsMode::Disabled => None,
        TlsMode::Secrets => tls.secrets.as_ref().map(|s| SecretNames {
            peer: s.peer.clone(),
            server: s.server.clone(),
            client: s.client.clone(),
        }),
        TlsMode::Operator | TlsMode::CertManager => Some(SecretNames {
            peer: format!("{c}-peer-tls"),
            server: format!("{c}-server-tls"),
            client: format!("{c}-client-tls"),
        }),
    }
}

/// The Secret holding the operator's CA of a cluster.
pub fn ca_secret_name(cluster: &str) -> String {
    format!("{cluster}-ca")
}

/// The Secret holding the CA that signs this cluster's certificates: its own, or that of
/// the cluster named in `spec.tls.caFrom`.
pub fn ca_secret_of(ec: &EtcdCluster) -> String {
    match &ec.spec.tls.ca_from {
        Some(from) => ca_secret_name(&from.cluster),
        None => ca_secret_name(&ec.name_any()),
    }
}

/// Host names the server certificate is valid for. A Stacked cluster's certificates are
/// also valid for the addresses of every control-plane node (`node_addresses`), where
/// the node's kube-apiserver reaches its member (see [`with_node_addresses`]).
pub fn server_sans(n: &Names, domain: &str) -> Vec<String> {
    let peers = format!("{}.{}.svc", n.peer_service(), n.namespace);
    let client = n.client_service();
    vec![
        format!("*.{peers}"),
        format!("*.{peers}.{domain}"),
        client.clone(),
        format!("{client}.{}", n.namespace),
        format!("{client}.{}.svc", n.namespace),
        format!("{client}.{}.svc.{domain}", n.namespace),
        "localhost".into(),
        "127.0.0.1".into(),
    ]
}

/// Host names the peer certificate is valid for. etcd checks a peer's certificate
/// against the reverse DNS name of its IP, which is the fully qualified one.
pub fn peer_sans(n: &Names, domain: &str) -> Vec<String> {
    let peers = format!("{}.{}.svc", n.peer_service(), n.namespace);
    vec![format!("*.{peers}"), format!("*.{peers}.{domain}")]
}

/// `sans` and, for a Stacked cluster, the control-plane nodes' addresses (sorted, once
/// each); External clusters' certificates never name a node.
pub fn with_node_addresses(ec: &EtcdCluster, mut sans: Vec<String>, node_addresses: &[String]) -> Vec<String> {
    if ec.spec.topology == Topology::Stacked {
        let nodes: std::collections::BTreeSet<&String> = node_addresses.iter().collect();
        sans.extend(nodes.into_iter().filter(|a| !a.is_empty()).cloned());
    }
    sans
}

/// The subject alternative names of a PEM certificate (DNS names and IP addresses as
/// text), or `None` when it cannot be read.
pub fn cert_sans(cert_pem: &str) -> Option<std::collections::BTreeSet<String>> {
    use x509_parser::extensions::GeneralName;
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    let mut out = std::collections::BTreeSet::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(d) => {
                    out.insert(d.to_string());
                }
                GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => <[u8; 4]>::try_from(*b).ok().map(|a| std::net::IpAddr::from(a).to_string()),
                        16 => <[u8; 16]>::try_from(*b).ok().map(|a| std::net::IpAddr::from(a).to_string()),
                        _ => None,
                    };
                    out.extend(ip);
                }
                _ => {}
            }
        }
    }
    Some(out)
}

fn get(secret: &Secret, key: &str) -> Option<String> {
    let b = secret.data.as_ref()?.get(key)?;
    String::from_utf8(b.0.clone()).ok()
}

/// The CA kept in its Secret, if it is whole.
fn ca_of(secret: Option<&Secret>) -> Option<Authority> {
    Authority::from_secret(secret?)
}

/// Whether `cert_pem` was signed by the CA `ca_pem`.
pub fn signed_by(cert_pem: &str, ca_pem: &str) -> bool {
    pem_to_der(cert_pem).is_some_and(|der| der_signed_by(&der, ca_pem))
}

/// Whether the DER certificate `cert_der` was signed by the CA `ca_pem`.
pub fn der_signed_by(cert_der: &[u8], ca_pem: &str) -> bool {
    let Some((_, ca)) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()).ok() else { return false };
    let (Ok((_, leaf)), Ok(ca)) = (x509_parser::parse_x509_certificate(cert_der), ca.parse_x509()) else {
        return false;
    };
    leaf.issuer() == ca.subject() && leaf.verify_signature(Some(ca.public_key())).is_ok()
}

/// The DER bytes of a PEM certificate.
pub fn pem_to_der(cert_pem: &str) -> Option<Vec<u8>> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).ok()?;
    Some(pem.contents)
}

/// When a PEM certificate stops being valid.
pub fn not_after(cert_pem: &str) -> Option<OffsetDateTime> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes()).ok()?;
    let cert = pem.parse_x509().ok()?;
    Some(cert.validity().not_after.to_datetime())
}

/// Why a leaf certificate must be (re)issued, or `None` when it is good.
pub fn leaf_needs_issue(
    secret: Option<&Secret>,
    ca_cert_pem: &str,
    now: OffsetDateTime,
    renew_before: Duration,
) -> Option<&'static str> {
    let Some(s) = secret else { return Some("missing") };
    let (Some(cert), Some(_), Some(ca)) = (get(s, "tls.crt"), get(s, "tls.key"), get(s, "ca.crt")) else {
        return Some("incomplete");
    };
    if ca != ca_cert_pem {
        return Some("signed by another CA");
    }
    match not_after(&cert) {
        None => Some("unreadable"),
        Some(end) if end - now < renew_before => Some("expiring"),
        Some(_) => None,
    }
}

/// What a leaf Secret needs, given the CA that signs and the CAs members trust.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leaf {
    Good,
    /// A new certificate, and why.
    Issue(&'static str),
    /// Same certificate, other trusted CAs (`ca.crt`).
    Retrust,
}

/// See [`Leaf`]: a leaf is reissued when missing, incomplete, not signed by `signer`,
/// unreadable, within `renew_before` of expiry, or valid for other names than `sans`
/// (a control-plane node added to a Stacked cluster's); re-trusted when only `ca.crt`
/// differs.
pub fn leaf_state(
    secret: Option<&Secret>,
    signer_pem: &str,
    trust_pem: &str,
    now: OffsetDateTime,
    renew_before: Duration,
    sans: &[String],
) -> Leaf {
    let Some(s) = secret else { return Leaf::Issue("missing") };
    let (Some(cert), Some(_), Some(ca)) = (get(s, "tls.crt"), get(s, "tls.key"), get(s, "ca.crt")) else {
        return Leaf::Issue("incomplete");
    };
    if !signed_by(&cert, signer_pem) {
        return Leaf::Issue("signed by another CA");
    }
    match not_after(&cert) {
        None => Leaf::Issue("unreadable"),
        Some(end) if end - now < renew_before => Leaf::Issue("expiring"),
        Some(_) if cert_sans(&cert) != Some(sans.iter().cloned().collect()) => Leaf::Issue("names changed"),
        Some(_) if ca != trust_pem => Leaf::Retrust,
        Some(_) => Leaf::Good,
    }
}

fn tls_secret(ec: &EtcdCluster, name: &str, ca_cert_pem: &str, pair: &CertPair) -> Secret {
    let mut data = BTreeMap::from([
        ("tls.crt".to_string(), ByteString(pair.cert_pem.clone().into_bytes())),
        ("tls.key".to_string(), ByteString(pair.key_pem.clone().into_bytes())),
    ]);
    data.insert("ca.crt".into(), ByteString(ca_cert_pem.as_bytes().to_vec()));
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: ec.namespace(),
            labels: Some(labels(&ec.name_any())),
            owner_references: ec.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// The state of a cluster's certificates, for its `CertificatesReady` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertState {
    /// Issued and renewed; the CA's generation.
    Ready { generation: i64 },
    /// The CA Secret is lost while members trust it (see [`ca_lost`]).
    Lost(String),
    /// A CA rotation is under way: its phase.
    Rotating(String),
    /// A CA rotation was asked for and is refused: why.
    RotationRefused(String),
}

impl Default for CertState {
    fn default() -> Self {
        CertState::Ready { generation: 0 }
    }
}

/// A Secret to write and why.
#[derive(Clone, Debug)]
pub struct SecretWrite {
    pub secret: Secret,
    pub reason: String,
}

/// Why the operator's CA is lost, when it is: its Secret is gone (or broken) while
/// members exist that trust it. etcd loads trusted CAs only at start, so a new CA would
/// make every member refuse every reissued certificate: it is never generated then.
pub fn ca_lost(ec: &EtcdCluster, existing: &BTreeMap<String, Secret>, members_exist: bool) -> Option<String> {
    if ec.spec.tls.mode != TlsMode::Operator || !members_exist {
        return None;
    }
    let name = ca_secret_of(ec);
    ca_of(existing.get(&name)).is_none().then(|| {
        format!(
            "the CA Secret {name} is missing or incomplete while members trust that CA: no new CA is generated (members would refuse it) and certificates are not renewed; the members keep serving with the certificates they have. Restore the Secret {name} (tls.crt, tls.key) from a backup to resume renewals"
        )
    })
}

/// In mode `Operator`: the Secrets to (re)write given the ones that exist, by name. A
/// missing CA is generated only for a cluster with no members yet (see [`ca_lost`]);
/// a leaf is reissued when it is missing, incomplete, signed by another CA, or within
/// `renewBeforeDays` of expiry, or when the names it is valid for changed
/// (`node_addresses`: the control-plane nodes' addresses, which a Stacked cluster's
/// server and peer certificates name).
pub fn operator_secrets(
    ec: &EtcdCluster,
    existing: &BTreeMap<String, Secret>,
    now: OffsetDateTime,
    domain: &str,
    members_exist: bool,
    node_addresses: &[String],
) -> Result<Vec<SecretWrite>, PkiError> {
    if ca_lost(ec, existing, members_exist).is_some() {
        return Ok(Vec::new());
    }
    let Some(names) = secret_names(ec) else { return Ok(Vec::new()) };
    if ec.spec.tls.mode != TlsMode::Operator {
        return Ok(Vec::new());
    }
    let n = Names::of(ec);
    let ca_name = ca_secret_of(ec);
    let mut out = Vec::new();
    let ca = match ca_of(existing.get(&ca_name)) {
        Some(ca) => ca,
        // Another cluster's CA is waited for, never made here.
        None if ec.spec.tls.ca_from.is_some() => return Ok(Vec::new()),
        None => {
            let generation = ec.spec.tls.ca_generation;
            let ca = Authority::new(new_ca(&n, generation)?, generation);
            let mut base = tls_secret(ec, &ca_name, "", &ca.signer);
            base.type_ = Some("Opaque".into());
            out.push(SecretWrite { secret: ca.to_secret(&base), reason: "generated the cluster CA".into() });
            ca
        }
    };
    let validity = DAY * ec.spec.tls.certificate_validity_days.max(1) as u32;
    let renew_before = DAY * ec.spec.tls.renew_before_days.max(1) as u32;
    let trust = ca.trust_pem();
    let leaves = [
        (&names.peer, PEER_CN, with_node_addresses(ec, peer_sans(&n, domain), node_addresses), Usage::Peer),
        (&names.server, "etcd-server", with_node_addresses(ec, server_sans(&n, domain), node_addresses), Usage::Server),
        (&names.client, "etcd-pilot", Vec::new(), Usage::Client),
    ];
    for (name, cn, sans, usage) in leaves {
        let current = existing.get(name);
        match leaf_state(current, &ca.signer.cert_pem, &trust, now, renew_before, &sans) {
            Leaf::Good => {}
            Leaf::Issue(why) => {
                let pair = pki::issue(&ca.signer, cn, &sans, usage, validity)?;
                out.push(SecretWrite {
                    secret: tls_secret(ec, name, &trust, &pair),
                    reason: format!("issued certificate {name} ({why})"),
                });
            }
            Leaf::Retrust => {
                let pair =
                    current.and_then(|s| Some(CertPair { cert_pem: get(s, "tls.crt")?, key_pem: get(s, "tls.key")? }));
                if let Some(pair) = pair {
                    out.push(SecretWrite {
                        secret: tls_secret(ec, name, &trust, &pair),
                        reason: format!("updated the CAs certificate {name} trusts (CA generation {})", ca.generation),
                    });
                }
            }
        }
    }
    Ok(out)
}

/// A new CA for a cluster; its name tells the generation, so certificates of two
/// generations are told apart by their issuer.
pub fn new_ca(n: &Names, generation: i64) -> Result<CertPair, PkiError> {
    let cn = match generation {
        0 => format!("etcd-pilot {}/{} CA", n.namespace, n.cluster),
        g => format!("etcd-pilot {}/{} CA generation {g}", n.namespace, n.cluster),
    };
    pki::generate_ca(&cn, CA_VALIDITY)
}

/// The CA of a cluster, read from the Secrets of a pass.
pub fn authority(ec: &EtcdCluster, existing: &BTreeMap<String, Secret>) -> Option<Authority> {
    ca_of(existing.get(&ca_secret_of(ec)))
}

/// When each certificate of the cluster expires (Unix seconds), as read from the
/// Secrets of a pass: `ca`, `server`, `peer`, `client` (`tls.crt` of each).
pub fn expiries(ec: &EtcdCluster, existing: &BTreeMap<String, Secret>) -> Vec<(&'static str, i64)> {
    let Some(n) = secret_names(ec) else { return Vec::new() };
    [("ca", ca_secret_of(ec)), ("server", n.server), ("peer", n.peer), ("client", n.client)]
        .into_iter()
        .filter_map(|(kind, name)| {
            let pem = get(existing.get(&name)?, "tls.crt")?;
            Some((kind, not_after(&pem)?.unix_timestamp()))
        })
        .collect()
}

/// What etcd-pilot presents to etcd, from the client Secret.
pub fn client_material(secret: &Secret) -> Option<TlsMaterial> {
    Some(TlsMaterial {
        ca_pem: get(secret, "ca.crt")?.into_bytes(),
        cert_pem: get(secret, "tls.crt")?.into_bytes(),
        key_pem: get(secret, "tls.key")?.into_bytes(),
        server_name: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
