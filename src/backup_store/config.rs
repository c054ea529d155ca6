//! How a store is reached (endpoint, region, credentials) and what can go wrong with it.

use k8s_openapi::api::core::v1::Secret;

use super::*;
use crate::api::{S3CredentialsSecret, S3Target};

/// What can go wrong with the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("S3 refused the credentials for {op} on bucket {bucket:?} ({code}): check the access key and secret")]
    AccessDenied { op: &'static str, bucket: String, code: String },
    #[error("bucket {bucket:?} does not exist")]
    NoSuchBucket { bucket: String },
    #[error("object {key:?} does not exist in bucket {bucket:?}")]
    NoSuchKey { bucket: String, key: String },
    #[error("S3 {op} of {key:?} in bucket {bucket:?} failed: {detail}")]
    Request { op: &'static str, bucket: String, key: String, detail: String },
    #[error("object {key:?} is corrupt: its SHA-256 is {actual}, but {expected} was recorded when it was written")]
    ChecksumMismatch { key: String, expected: String, actual: String },
    #[error("object {key:?} has no recorded SHA-256: it is not a finished etcd-pilot backup")]
    MissingChecksum { key: String },
    #[error("object {key:?} ended after {got} bytes, {expected} expected")]
    Truncated { key: String, expected: u64, got: u64 },
    #[error("reading the snapshot to upload failed: {0}")]
    Source(#[source] BoxError),
    #[error("part size {0} bytes is below S3's minimum of 5 MiB")]
    PartTooSmall(usize),
    #[error("S3 credentials Secret {secret:?} lacks key {key:?}")]
    SecretKeyMissing { secret: String, key: String },
    #[error("object {key:?}: {detail}")]
    Encryption { key: String, detail: String },
    #[error("local file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
        move |source| StoreError::Io { path: path.display().to_string(), source }
    }
}

/// Where credentials come from.
#[derive(Clone)]
pub enum Credentials {
    /// Keys from a Kubernetes Secret.
    Static { access_key_id: String, secret_access_key: String, session_token: Option<String> },
    /// The standard AWS chain: environment, profile, web identity (IRSA), container and
    /// instance metadata.
    DefaultChain,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Static { access_key_id, .. } => write!(f, "Static({access_key_id}, ..)"),
            Credentials::DefaultChain => f.write_str("DefaultChain"),
        }
    }
}

impl Credentials {
    /// Reads static credentials from a Secret, by the keys the reference names.
    pub fn from_secret(secret: &Secret, r: &S3CredentialsSecret) -> Result<Credentials, StoreError> {
        let get = |key: &str| -> Option<String> {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|b| String::from_utf8_lossy(&b.0).trim().to_string())
                .or_else(|| secret.string_data.as_ref().and_then(|d| d.get(key)).map(|s| s.trim().to_string()))
        };
        let need = |key: &str| {
            get(key)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| StoreError::SecretKeyMissing { secret: r.name.clone(), key: key.to_string() })
        };
        Ok(Credentials::Static {
            access_key_id: need(&r.access_key_id_key)?,
            secret_access_key: need(&r.secret_access_key_key)?,
            session_token: match &r.session_token_key {
                Some(k) => Some(need(k)?),
                None => None,
            },
        })
    }
}

/// How to reach one bucket.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    pub bucket: String,
    pub prefix: Option<String>,
    pub endpoint: Option<String>,
    pub region: String,
    pub path_style: bool,
    /// Bytes per part of a multipart upload; smaller objects go in one PUT.
    pub part_size: usize,
    pub credentials: Credentials,
    /// S3 server-side encryption asked for every object written.
    pub sse: Option<crate::api::ServerSideEncryption>,
}

impl StoreConfig {
    /// An S3-compatible store at `endpoint` with static keys: path-style addressing,
    /// region `us-east-1`, 16 MiB parts. Override fields with struct update syntax.
    pub fn s3_compatible(endpoint: &str, bucket: &str, access_key_id: &str, secret_access_key: &str) -> StoreConfig {
        StoreConfig {
            bucket: bucket.to_string(),
            prefix: None,
            endpoint: Some(endpoint.to_string()),
            region: "us-east-1".to_string(),
            path_style: true,
            part_size: 16 * 1024 * 1024,
            credentials: Credentials::Static {
                access_key_id: access_key_id.to_string(),
                secret_access_key: secret_access_key.to_string(),
                session_token: None,
            },
            sse: None,
        }
    }

    pub fn from_target(target: &S3Target, credentials: Credentials) -> StoreConfig {
        StoreConfig {
            bucket: target.bucket.clone(),
            prefix: target.prefix.clone(),
            endpoint: target.endpoint.clone(),
            region: target.region.clone(),
            path_style: target.path_style(),
            part_size: usize::try_from(target.part_size_mib.max(5)).unwrap_or(16) * 1024 * 1024,
            credentials,
            sse: target.server_side_encryption.clone(),
        }
    }
}

/// The server-side encryption headers of a write: its kind and its KMS key.
pub(super) fn sse_headers(
    sse: &Option<crate::api::ServerSideEncryption>,
) -> (Option<aws_sdk_s3::types::ServerSideEncryption>, Option<String>) {
    use crate::api::SseType;
    use aws_sdk_s3::types::ServerSideEncryption as Sse;
    match sse {
        None => (None, None),
        Some(s) => match s.kind {
            SseType::Aes256 => (Some(Sse::Aes256), None),
            SseType::AwsKms => (Some(Sse::AwsKms), s.kms_key_id.clone()),
        },
    }
}
