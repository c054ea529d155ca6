//! Certificates for etcd: a CA per cluster and the leaf certificates it signs.
//!
//! ECDSA P-256 keys: small, fast to generate, and accepted by etcd and every client.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::OffsetDateTime;

/// Certificate generation failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot {what}: {source}")]
pub struct PkiError {
    what: &'static str,
    #[source]
    source: rcgen::Error,
}

fn ctx(what: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |source| PkiError { what, source }
}

/// A certificate and its key, PEM-encoded.
#[derive(Clone)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for CertPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertPair { .. }")
    }
}

/// What a leaf certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// Serves TLS (etcd's client port).
    Server,
    /// Authenticates to etcd.
    Client,
    /// Both, as members need on the peer port.
    Peer,
}

/// Generates a self-signed CA valid for `validity`.
pub fn generate_ca(common_name: &str, validity: Duration) -> Result<CertPair, PkiError> {
    let key = KeyPair::generate().map_err(ctx("generate a CA key"))?;
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(common_name);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    set_validity(&mut params, validity);
    let cert = params.self_signed(&key).map_err(ctx("self-sign the CA"))?;
    Ok(CertPair { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

/// Issues a leaf certificate signed by `ca` for these DNS names and IP addresses.
pub fn issue(
    ca: &CertPair,
    common_name: &str,
    sans: &[String],
    usage: Usage,
    validity: Duration,
) -> Result<CertPair, PkiError> {
    issue_with_org(ca, common_name, None, sans, usage, validity)
}

/// Like [`issue`], with an organization (Kubernetes reads it as the user's group).
pub fn issue_with_org(
    ca: &CertPair,
    common_name: &str,
    organization: Option<&str>,
    sans: &[String],
    usage: Usage,
    validity: Duration,
) -> Result<CertPair, PkiError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem).map_err(ctx("read the CA key"))?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).map_err(ctx("read the CA certificate"))?;
    let key = KeyPair::generate().map_err(ctx("generate a key"))?;
    let mut params = CertificateParams::new(sans.to_vec()).map_err(ctx("use the subject alternative names"))?;
    params.distinguished_name = dn(common_name);
    if let Some(o) = organization {
        params.distinguished_name.push(DnType::OrganizationName, o);
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = match usage {
        Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
        Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        Usage::Peer => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
    };
    set_validity(&mut params, validity);
    let cert = params.signed_by(&key, &issuer).map_err(ctx("sign the certificate"))?;
    Ok(CertPair { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

fn dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn set_validity(params: &mut CertificateParams, validity: Duration) {
    // Back-date a little so that clocks a few minutes apart agree the cert is valid.
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + validity;
}

/// A fresh ECDSA P-256 key pair: (private key PEM, public key PEM).
pub fn generate_key_pair() -> Result<(String, String), PkiError> {
    let key = KeyPair::generate().map_err(ctx("generate a key"))?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}
