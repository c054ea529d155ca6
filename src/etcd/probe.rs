//! A TLS probe of one member port: `GET /version` (served on etcd's client and peer
//! ports alike) with given trusted CAs and a given client certificate. It succeeds only
//! when the member serves a certificate those CAs signed and accepts the client's.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Why a probe failed, in words for a status message.
#[derive(Debug, thiserror::Error)]
#[error("{url}: {why}")]
pub struct ProbeError {
    url: String,
    why: String,
}

/// Probes `url` (`https://host:port`). `roots_pem` are the CAs the member's certificate
/// must chain to; `cert_pem`/`key_pem` the client certificate presented.
pub async fn tls_version(
    url: &str,
    roots_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    timeout: Duration,
) -> Result<(), ProbeError> {
    let fail = |why: String| ProbeError { url: url.to_string(), why };
    let host_port = url.trim_start_matches("https://").trim_end_matches('/');
    let host = host_port.rsplit_once(':').map(|(h, _)| h).unwrap_or(host_port).to_string();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(roots_pem.as_bytes()) {
        let c = c.map_err(|e| fail(format!("trusted CAs: {e}")))?;
        roots.add(c).map_err(|e| fail(format!("trusted CA: {e}")))?;
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| fail(format!("client certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| fail(format!("client key: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| fail(format!("client certificate: {e}")))?;
    let name = ServerName::try_from(host.clone()).map_err(|e| fail(format!("server name {host}: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let probe = async {
        let tcp = tokio::net::TcpStream::connect(host_port).await.map_err(|e| fail(format!("connect: {e}")))?;
        let mut tls = connector.connect(name, tcp).await.map_err(|e| fail(format!("TLS: {e}")))?;
        let request = format!("GET /version HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        tls.write_all(request.as_bytes()).await.map_err(|e| fail(format!("TLS: {e}")))?;
        let mut head = vec![0u8; 12];
        // The server checks the client certificate after the client's handshake ends:
        // a refusal shows up as an alert on the first read.
        tls.read_exact(&mut head).await.map_err(|e| fail(format!("TLS: {e}")))?;
        match &head[..] {
            b"HTTP/1.1 200" => Ok(()),
            other => Err(fail(format!("answered {}", String::from_utf8_lossy(other)))),
        }
    };
    tokio::time::timeout(timeout, probe).await.map_err(|_| fail(format!("no answer within {timeout:?}")))?
}
