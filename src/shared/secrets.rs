//! The Secrets that hold a cluster's certificates, and how a controller reaches the
//! cluster's etcd with them.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;
use time::OffsetDateTime;

use crate::api::EtcdCluster;
use crate::api::cluster::TlsMode;
use crate::etcd::{AdminConfig, TlsMaterial};
use crate::pki::not_after;

/// Common name of the operator-issued peer certificate; members accept no other on the
/// peer port (`--peer-cert-allowed-cn`).
pub const PEER_CN: &str = "etcd-peer";

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

/// The text of one key of a Secret.
pub fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    let b = secret.data.as_ref()?.get(key)?;
    String::from_utf8(b.0.clone()).ok()
}

/// What etcd-pilot presents to etcd, from the client Secret.
pub fn client_material(secret: &Secret) -> Option<TlsMaterial> {
    Some(TlsMaterial {
        ca_pem: secret_text(secret, "ca.crt")?.into_bytes(),
        cert_pem: secret_text(secret, "tls.crt")?.into_bytes(),
        key_pem: secret_text(secret, "tls.key")?.into_bytes(),
        server_name: None,
    })
}

/// Why a leaf certificate must be (re)issued, or `None` when it is good.
pub fn leaf_needs_issue(
    secret: Option<&Secret>,
    ca_cert_pem: &str,
    now: OffsetDateTime,
    renew_before: Duration,
) -> Option<&'static str> {
    let Some(s) = secret else { return Some("missing") };
    let (Some(cert), Some(_), Some(ca)) =
        (secret_text(s, "tls.crt"), secret_text(s, "tls.key"), secret_text(s, "ca.crt"))
    else {
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

/// A cluster's client certificate could not be read.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("reading Secret {name}: {source}")]
    Read {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("the cluster's client certificate Secret {0} does not exist")]
    Missing(String),
    #[error("Secret {0} lacks ca.crt, tls.crt or tls.key")]
    Incomplete(String),
}

/// How a controller reaches a cluster's etcd: its client certificate (from `known`, a
/// Secret read already, or read now), or nothing when TLS is disabled.
pub async fn etcd_config(
    client: &kube::Client,
    ec: &EtcdCluster,
    known: Option<Secret>,
) -> Result<AdminConfig, AccessError> {
    let Some(names) = secret_names(ec) else { return Ok(AdminConfig::default()) };
    let secret = match known.filter(|s| s.name_any() == names.client) {
        Some(s) => s,
        None => Api::<Secret>::namespaced(client.clone(), &ec.namespace().unwrap_or_default())
            .get_opt(&names.client)
            .await
            .map_err(|source| AccessError::Read { name: names.client.clone(), source })?
            .ok_or_else(|| AccessError::Missing(names.client.clone()))?,
    };
    let material = client_material(&secret).ok_or_else(|| AccessError::Incomplete(names.client.clone()))?;
    Ok(AdminConfig { tls: Some(material), ..AdminConfig::default() })
}
