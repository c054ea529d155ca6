//! The IO of a backup: the snapshot streamed from one member into the store, the cluster's
//! `status.lastBackup`, the object deleted with the backup.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};

use crate::api::cluster::BackupRef;
use crate::api::{EtcdBackup, EtcdCluster, Phase};
use crate::metrics::Metrics;
use crate::runtime::kube_ops;

/// Field manager of what the backup controller writes (its own status, and the
/// cluster's `status.lastBackup`).
pub const FIELD_MANAGER: &str = "etcd-pilot-backup";

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
