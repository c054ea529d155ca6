//! The IO of a backup: the snapshot streamed from one member into the store, the cluster's
//! `status.lastBackup`, the object deleted with the backup.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use super::plan::Candidate;
use crate::api::cluster::BackupRef;
use crate::api::{EtcdBackup, EtcdCluster, Phase};
use crate::backup_store::{BackupStore, Uploaded};
use crate::etcd::{AdminConfig, EtcdAdmin};
use crate::metrics::Metrics;
use crate::runtime::kube_ops;

/// Field manager of what the backup controller writes (its own status, and the
/// cluster's `status.lastBackup`).
pub const FIELD_MANAGER: &str = "etcd-pilot-backup";

/// A finished snapshot, verified twice (etcd's appended hash as it flowed, the object's
/// own SHA-256 as it was written).
pub struct Taken {
    pub uploaded: Uploaded,
    pub revision: i64,
    pub version: String,
}

/// Why an attempt failed, and whether trying again can help.
pub struct Failure {
    pub message: String,
    pub permanent: bool,
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

/// Points the cluster's `status.lastBackup` at its newest successful backup (or at
/// none), under this controller's field manager.
pub async fn sync_last_backup(client: &Client, ns: &str, cluster: &str, metrics: &Metrics) -> Result<(), kube::Error> {
    let backups: Api<EtcdBackup> = Api::namespaced(client.clone(), ns);
    let clusters: Api<EtcdCluster> = Api::namespaced(client.clone(), ns);
    let Some(ec) = clusters.get_opt(cluster).await? else { return Ok(()) };
    let newest = backups
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|b| b.spec.cluster_name == cluster && b.metadata.deletion_timestamp.is_none())
        .filter_map(|b| {
            let s = b.status.clone()?;
            (s.phase == Phase::Succeeded).then_some((s.completion_time.clone()?, b.name_any(), s))
        })
        .max_by(|a, b| (a.0.0, &a.1).cmp(&(b.0.0, &b.1)));
    let want = newest.as_ref().map(|(t, name, s)| BackupRef {
        name: name.clone(),
        object_key: s.object_key.clone().unwrap_or_default(),
        completion_time: Some(t.clone()),
    });
    let labels = crate::metrics::ClusterLabels { namespace: ns.into(), cluster: cluster.into() };
    if let Some((t, _, s)) = &newest {
        metrics.last_backup_timestamp.get_or_create(&labels).set(t.0.as_second());
        metrics.last_backup_size.get_or_create(&labels).set(s.size_bytes.unwrap_or_default());
    }
    if ec.status.as_ref().and_then(|s| s.last_backup.clone()) == want {
        return Ok(());
    }
    let status = match want {
        Some(r) => serde_json::json!({"lastBackup": r}),
        // Applying no field under this manager removes the one it owned.
        None => serde_json::json!({}),
    };
    kube_ops::apply_status(&clusters, FIELD_MANAGER, cluster, status).await
}

/// The stamp in an object key: UTC, sortable.
pub fn stamp(t: jiff::Timestamp) -> String {
    t.strftime("%Y%m%dT%H%M%SZ").to_string()
}

/// Backoff before attempt `n + 1` after `n` failed ones: 10 s, 20 s, 40 s ...
pub fn backoff(attempts: u32) -> Duration {
    Duration::from_secs(10u64.saturating_mul(1 << attempts.saturating_sub(1).min(6)))
}

pub fn now() -> Time {
    Time(jiff::Timestamp::now())
}

/// Seconds since `t` (0 for a time in the future).
pub fn secs_since(t: &Time) -> u64 {
    u64::try_from(jiff::Timestamp::now().as_second() - t.0.as_second()).unwrap_or(0)
}
