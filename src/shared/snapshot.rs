//! A snapshot of one member streamed into a backup store: what a backup takes and what
//! an in-place restore takes first of the data it is about to replace.

use std::collections::HashMap;

use futures::StreamExt;

use crate::backup_store::{BackupStore, Uploaded};
use crate::etcd::{AdminConfig, EtcdAdmin, bbolt};
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
    /// Keys at `revision`, counted on the member (None: it compacted past it already).
    pub key_count: Option<i64>,
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
    // The revision is read from the snapshot once it is stored (below), not asked of the
    // member beside it: writes go on while a snapshot is taken.
    let mut meta = labels;
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
    let mut pages = ObjectPages { store, key };
    let revision = match bbolt::snapshot_revision(&mut pages).await {
        Ok(r) => r,
        Err(e) => {
            // A backup whose revision is unknown is no backup: nothing is left behind.
            let _ = store.delete(key).await;
            return Err(Failure {
                permanent: false,
                message: format!("reading the revision of s3://{}/{key} from the snapshot: {e}", store.bucket()),
            });
        }
    };
    // What the snapshot holds, for the drills that check it: counted at its revision
    // on the member it came from (a revision compacted meanwhile is left uncounted).
    let key_count = match admin.count_at(&member.endpoint, revision).await {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(member = %member.name, revision, error = %e, "counting the snapshot's keys failed");
            None
        }
    };
    Ok(Taken { uploaded, revision, version: snap.version, key_count })
}

/// A snapshot in a store, read a few pages at a time ([`bbolt::snapshot_revision`]).
pub struct ObjectPages<'a> {
    pub store: &'a BackupStore,
    pub key: &'a str,
}

impl bbolt::Pages for ObjectPages<'_> {
    type Error = crate::backup_store::StoreError;
    fn read(
        &mut self,
        offset: u64,
        len: usize,
    ) -> impl std::future::Future<Output = Result<Vec<u8>, Self::Error>> + Send {
        self.store.read_range(self.key, offset, len)
    }
}

/// The stamp in an object key: UTC, sortable.
pub fn stamp(t: jiff::Timestamp) -> String {
    t.strftime("%Y%m%dT%H%M%SZ").to_string()
}
