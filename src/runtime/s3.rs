//! Opening the S3 store a backup, schedule or restore names: the target resolved, its
//! credentials read from the Secret, the bucket checked. Shared by every controller that
//! touches backups.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::Client;

use crate::api::S3Target;
use crate::backup_store::crypt::NamedKey;
use crate::backup_store::{BackupStore, Credentials, StoreConfig, StoreError};

/// Why a store could not be opened.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The user must fix something (a Secret, a key, the bucket, the credentials).
    #[error("{0}")]
    Invalid(String),
    /// Worth trying again (the store or the API server did not answer).
    #[error("{0}")]
    Transient(String),
}

/// True when retrying cannot help: the user must fix the input.
pub fn permanent(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::AccessDenied { .. }
            | StoreError::NoSuchBucket { .. }
            | StoreError::NoSuchKey { .. }
            | StoreError::SecretKeyMissing { .. }
            | StoreError::PartTooSmall(_)
            | StoreError::ChecksumMismatch { .. }
            | StoreError::MissingChecksum { .. }
            | StoreError::Encryption { .. }
    )
}

/// Reads the credentials `target` names (from a Secret in `namespace`).
pub async fn credentials(client: &Client, namespace: &str, target: &S3Target) -> Result<Credentials, OpenError> {
    let Some(r) = &target.credentials_secret else { return Ok(Credentials::DefaultChain) };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret = secrets
        .get_opt(&r.name)
        .await
        .map_err(|e| OpenError::Transient(format!("reading Secret {}: {e}", r.name)))?
        .ok_or_else(|| {
            OpenError::Invalid(format!("S3 credentials Secret {:?} does not exist in namespace {namespace}", r.name))
        })?;
    Credentials::from_secret(&secret, r).map_err(|e| OpenError::Invalid(e.to_string()))
}

/// Opens the store and checks that the bucket exists and the credentials are good; with
/// the target's encryption keys read from their Secrets.
pub async fn open(client: &Client, namespace: &str, target: &S3Target) -> Result<BackupStore, OpenError> {
    if let Some(problem) = target.server_side_encryption.as_ref().and_then(|s| s.problem()) {
        return Err(OpenError::Invalid(problem));
    }
    let creds = credentials(client, namespace, target).await?;
    let keys = keys(client, namespace, target).await?;
    let store = BackupStore::new(StoreConfig::from_target(target, creds)).await.map_err(classify)?.with_keys(keys);
    store.check().await.map_err(classify)?;
    Ok(store)
}

/// The target's encryption keys, in order (the first seals), from their Secrets.
pub async fn keys(client: &Client, namespace: &str, target: &S3Target) -> Result<Vec<NamedKey>, OpenError> {
    let Some(encryption) = &target.encryption else { return Ok(Vec::new()) };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut out = Vec::new();
    for k in &encryption.keys {
        let secret = secrets
            .get_opt(&k.secret_name)
            .await
            .map_err(|e| OpenError::Transient(format!("reading Secret {}: {e}", k.secret_name)))?
            .ok_or_else(|| {
                OpenError::Invalid(format!(
                    "encryption key {}: Secret {:?} does not exist in namespace {namespace}",
                    k.id(),
                    k.secret_name
                ))
            })?;
        let bytes = secret.data.as_ref().and_then(|d| d.get(&k.key)).map(|b| b.0.clone()).ok_or_else(|| {
            OpenError::Invalid(format!(
                "encryption key {}: Secret {:?} has no entry {:?}",
                k.id(),
                k.secret_name,
                k.key
            ))
        })?;
        out.push(NamedKey::from_secret(&k.id(), &bytes).map_err(|e| OpenError::Invalid(format!("encryption {e}")))?);
    }
    Ok(out)
}

/// A store error as an [`OpenError`].
pub fn classify(e: StoreError) -> OpenError {
    if permanent(&e) { OpenError::Invalid(e.to_string()) } else { OpenError::Transient(e.to_string()) }
}
