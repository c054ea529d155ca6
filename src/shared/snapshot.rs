//! A snapshot of one member streamed into a backup store: what a backup takes and what
//! an in-place restore takes first of the data it is about to replace.

use std::collections::HashMap;

use futures::StreamExt;

use crate::backup_store::{BackupStore, Uploaded};
use crate::etcd::{AdminConfig, EtcdAdmin};
use crate::metrics::Metrics;
use crate::runtime::s3::OpenError;

/// A member a snapshot could come from, as the cluster's status describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    pub endpoint: String,
    pub leader: bool,
}

/// A finished snapshot, verified twice (etcd's appended hash as it flowed, the object's
/// own SHA-256 as it was written).
pub struct Taken {
    pub uploaded: Uploaded,
    pub revision: i64,
    pub version: String,
}

/// Why an attempt at a store failed (a snapshot into it, an object read from it), and
/// whether trying again can help.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub message: String,
    pub permanent: bool,
}

impl Failure {
    /// A failure worth trying again.
    pub fn transient(message: impl Into<String>) -> Self {
        Failure { message: message.into(), permanent: false }
    }
}

impl From<OpenError> for Failure {
    fn from(e: OpenError) -> Self {
        match e {
            OpenError::Invalid(message) => Failure { message, permanent: true },
            OpenError::Transient(message) => Failure { message, permanent: false },
        }
    }
}

/// Streams a snapshot of `member` into `store` under `key`. Memory is about one upload
/// part; nothing is left in the bucket when any byte is missing or wrong.
pub async fn snapshot_to_store(
    member: &Candidate,
    config: AdminConfig,
    store: &BackupStore,
    key: &str,
    labels: HashMap<String, String>,
    metrics: &Metrics,
    metric_labels: &crate::metrics::ClusterLabels,
) -> Result<Taken, Failure> {
    let admin = EtcdAdmin::new(vec![member.endpoint.clone()], config);
    let snap = admin
        .snapshot(&member.endpoint)
        .await
        .map_err(|e| Failure { message: format!("starting the snapshot of {}: {e}", member.name), permanent: false })?;
    let mut meta = labels;
    meta.insert("etcd-revision".into(), snap.revision.to_string());
    meta.insert("etcd-version".into(), snap.version.clone());
    meta.insert("member".into(), member.name.clone());
    let counter = metrics.backup_uploaded_bytes.get_or_create(metric_labels).clone();
    let stream = snap.stream.map(move |chunk| {
        if let Ok(c) = &chunk {
            counter.inc_by(c.len() as u64);
        }
        chunk
    });
    let uploaded = store.upload(key, Box::pin(stream), meta).await.map_err(|e| Failure {
        permanent: crate::runtime::s3::permanent(&e),
        message: format!("snapshot of {} to s3://{}/{key}: {e}", member.name, store.bucket()),
    })?;
    Ok(Taken { uploaded, revision: snap.revision, version: snap.version })
}

/// The stamp in an object key: UTC, sortable.
pub fn stamp(t: jiff::Timestamp) -> String {
    t.strftime("%Y%m%dT%H%M%SZ").to_string()
}
