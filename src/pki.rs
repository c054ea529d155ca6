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
