//! `EtcdBackup`: one snapshot of a cluster, streamed to S3.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Phase, S3Target};

/// One snapshot of a named cluster, taken from a healthy voting member and streamed to S3.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "etcdpilot.io",
    version = "v1alpha1",
    kind = "EtcdBackup",
    namespaced,
    status = "EtcdBackupStatus",
    shortname = "etcdbackup",
    category = "etcdpilot",
    derive = "PartialEq",
    doc = "One snapshot of an EtcdCluster, streamed to S3 or an S3-compatible store.",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.clusterName"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Size", type_ = "integer", json_path = ".status.sizeBytes"),
    printcolumn(name = "Revision", type_ = "integer", json_path = ".status.etcdRevision"),
    printcolumn(name = "Error", type_ = "string", json_path = ".status.error", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct EtcdBackupSpec {
    /// Name of the EtcdCluster to back up, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub cluster_name: String,
    /// Where to write the snapshot. Unset means the cluster's `spec.backup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<S3Target>,
    /// What deleting this EtcdBackup does to its object: `Delete` (the default) removes
    /// it from the bucket, `Retain` leaves it there.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Further targets, each given a copy of the object once it is written: the very
    /// bytes stored (sealed by the first target's key when it encrypts), checked there
    /// against their SHA-256. Losing one store then loses no backup; a restore names a
    /// copy with `source.copy`. The copies go with the EtcdBackup under `deletionPolicy`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copy_to: Vec<S3Target>,
}

/// What becomes of a backup's object when the EtcdBackup is deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum DeletionPolicy {
    /// The object is deleted with the EtcdBackup.
    #[default]
    Delete,
    /// The object stays in the bucket.
    Retain,
}

/// What happened to a backup.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdBackupStatus {
    /// `Pending`, `Running`, `Succeeded` or `Failed`.
    #[serde(default)]
    pub phase: Phase,
    /// Bucket the snapshot was written to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<String>,
    /// Object key of the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_key: Option<String>,
    /// Size of the snapshot in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<i64>,
    /// SHA-256 of the whole object, hex; also stored beside it as `<objectKey>.sha256`
    /// (`sha256sum`'s format) and checked on every download.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// etcd revision the snapshot holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_revision: Option<i64>,
    /// Keys the snapshot holds (counted at its revision on the member it came from, as
    /// it was taken): what a restore drill checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_count: Option<i64>,
    /// The copies of `spec.copyTo`, in its order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copies: Vec<BackupCopy>,
    /// etcd version of the member the snapshot came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_version: Option<String>,
    /// Member the snapshot was taken from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// When the snapshot started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the object was complete and verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Attempts made (a failed attempt is retried with backoff, up to 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
    /// Why the backup failed, or why it waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One copy of a backup's object in a further target.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupCopy {
    /// The bucket of the copy (`spec.copyTo` of the same index).
    pub bucket: String,
    /// `Pending` until copied, `Succeeded` once the copy's SHA-256 equals the
    /// original's, `Failed` after the last attempt.
    #[serde(default)]
    pub phase: Phase,
    /// Object key of the copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_key: Option<String>,
    /// SHA-256 of the copy as written: the original's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Attempts made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
    /// When the copy was written and checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Why the last attempt failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
