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

use super::ca_rotation::Authority;
use crate::api::EtcdCluster;
use crate::api::cluster::{TlsMode, Topology};
use crate::pki::{self, CertPair, PkiError, Usage};
use crate::pki::{cert_sans, not_after, signed_by};
use crate::shared::names::{Names, labels};
use crate::shared::secrets::{PEER_CN, ca_secret_of, secret_names, secret_text as get};

const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

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

/// The CA kept in its Secret, if it is whole.
fn ca_of(secret: Option<&Secret>) -> Option<Authority> {
    Authority::from_secret(secret?)
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

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
