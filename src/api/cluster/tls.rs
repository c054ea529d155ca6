//! A cluster's transport security: who issues its certificates, and whose CA.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Transport security. etcd runs with client-certificate authentication on both the
/// peer and the client port unless `mode` is `Disabled`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// `Operator` (the default: etcd-pilot generates a CA per cluster and issues and
    /// rotates peer, server and client certificates), `Secrets` (you provide them),
    /// `CertManager` (cert-manager issues them from `certManager.issuerRef`; not supported
    /// by this version yet: refused with a condition) or `Disabled` (plain text; for tests
    /// only).
    #[serde(default)]
    pub mode: TlsMode,
    /// Your Secrets, for mode `Secrets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<TlsSecrets>,
    /// The issuer, for mode `CertManager`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_manager: Option<CertManagerTls>,
    /// Mode `Operator`: sign this cluster's certificates with the CA of another
    /// EtcdCluster in this namespace (as an `--etcd-servers-overrides` cluster must, to
    /// share the main cluster's CA). The cluster waits for that CA before it starts. Set
    /// at creation; it cannot change once members exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_from: Option<CaFrom>,
    /// Lifetime of operator-issued leaf certificates, in days.
    #[serde(default = "default_cert_validity_days")]
    #[schemars(range(min = 1, max = 3650))]
    pub certificate_validity_days: i32,
    /// Operator-issued leaf certificates are renewed (one member at a time) when this
    /// many days of validity remain.
    #[serde(default = "default_renew_before_days")]
    #[schemars(range(min = 1, max = 3650))]
    pub renew_before_days: i32,
    /// Mode `Operator`: raise this number to rotate the cluster's CA. The new CA is first
    /// trusted beside the old one (a rolling restart: etcd loads trusted CAs only at
    /// start), then signs new certificates, then the old CA is dropped (a second rolling
    /// restart); one member at a time, the leader last, quorum kept throughout. Condition
    /// `CertificatesReady` (reason `Rotating`) tells the phase. Refused (Warning, nothing
    /// changes) for a CA shared through `caFrom` or a cluster wired to kube-apiserver.
    /// Lowering it does nothing.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub ca_generation: i64,
}

impl Default for TlsSpec {
    fn default() -> Self {
        Self {
            mode: TlsMode::default(),
            secrets: None,
            cert_manager: None,
            ca_from: None,
            certificate_validity_days: default_cert_validity_days(),
            renew_before_days: default_renew_before_days(),
            ca_generation: 0,
        }
    }
}

fn default_cert_validity_days() -> i32 {
    365
}

fn default_renew_before_days() -> i32 {
    30
}

/// Who provides the certificates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TlsMode {
    /// etcd-pilot generates a CA per cluster and issues all certificates.
    #[default]
    Operator,
    /// The user provides the Secrets named in `tls.secrets`.
    Secrets,
    /// cert-manager issues the certificates.
    CertManager,
    /// No TLS. Anyone who reaches the pods reads and writes everything: tests only.
    Disabled,
}

/// User-provided `kubernetes.io/tls` Secrets (keys `tls.crt`, `tls.key`, `ca.crt`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSecrets {
    /// Secret with the certificate members present to each other. Must be valid for
    /// client and server auth and name every member's peer DNS name, fully qualified too
    /// (`*.<cluster>-peers.<namespace>.svc` and `*.<cluster>-peers.<namespace>.svc.cluster.local`):
    /// etcd checks a peer's certificate against the reverse DNS name of its IP.
    pub peer: String,
    /// Secret with the certificate members serve to clients. Must name every member
    /// (`*.<cluster>-peers.<namespace>.svc`, which etcd-pilot connects to) and the names
    /// your clients use (e.g. `<cluster>-client.<namespace>.svc`).
    pub server: String,
    /// Secret with the client certificate etcd-pilot (and you) use to talk to etcd.
    pub client: String,
}

/// cert-manager settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertManagerTls {
    /// The Issuer or ClusterIssuer that signs the certificates.
    pub issuer_ref: IssuerRef,
}

/// A cert-manager issuer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// Name of the issuer.
    pub name: String,
    /// `Issuer` (the default) or `ClusterIssuer`.
    #[serde(default = "default_issuer_kind")]
    pub kind: String,
    /// API group of the issuer.
    #[serde(default = "default_issuer_group")]
    pub group: String,
}

fn default_issuer_kind() -> String {
    "Issuer".to_string()
}

fn default_issuer_group() -> String {
    "cert-manager.io".to_string()
}

/// Another EtcdCluster whose CA this one uses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaFrom {
    /// The EtcdCluster, in this namespace, whose CA signs this cluster's certificates.
    #[schemars(length(min = 1))]
    pub cluster: String,
}
