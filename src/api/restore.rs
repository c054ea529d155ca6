//! `EtcdRestore`: a snapshot back into a cluster, new or existing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::cluster::EtcdClusterSpec;
use super::common::{LocalObjectRef, Phase, S3Target};

/// Restores a snapshot into a new cluster, or in place into an existing one.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "etcdpilot.io",
    version = "v1alpha1",
    kind = "EtcdRestore",
    namespaced,
    status = "EtcdRestoreStatus",
    shortname = "etcdrestore",
    category = "etcdpilot",
    derive = "PartialEq",
    doc = "Restores an etcd snapshot into a new EtcdCluster, or in place into an existing one.",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.clusterName"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Message", type_ = "string", json_path = ".status.message", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct EtcdRestoreSpec {
    /// The snapshot to restore.
    pub source: RestoreSource,
    /// With `source.schedule`: the point to go back to, a revision or a time (the last
    /// revision received at or before it). Unset means the latest point the schedule's
    /// continuous backup holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point_in_time: Option<PointInTime>,
    /// `NewCluster`: create the EtcdCluster `clusterName` from `newCluster` and seed it
    /// with the snapshot. `InPlace`: replace the data of the existing EtcdCluster
    /// `clusterName` (every member is recreated from the snapshot; writes after the
    /// snapshot are lost).
    #[serde(default)]
    pub mode: RestoreMode,
    /// The cluster to create or restore into, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub cluster_name: String,
    /// Spec of the new cluster, for mode `NewCluster`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_cluster: Option<EtcdClusterSpec>,
    /// For mode `InPlace`: also restore a cluster that still has quorum. Without it an
    /// in-place restore only proceeds on a cluster that has lost quorum, so that a
    /// mistaken restore cannot throw away a working cluster's data.
    #[serde(default)]
    pub force: bool,
}

/// A point of a schedule's continuous backup: exactly one of `revision` or `time`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PointInTime {
    /// An etcd revision of the source cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub revision: Option<i64>,
    /// A time (RFC 3339, e.g. `2026-12-07T10:15:00Z`): the last revision received at or
    /// before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
}

/// Exactly one of `backup`, `s3`, `schedule` or `member`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSource {
    /// A Succeeded EtcdBackup in the same namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<LocalObjectRef>,
    /// An object in S3, e.g. from another cluster or another Kubernetes cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Object>,
    /// With `backup` or `schedule`: restore from the copy in this bucket (one of their
    /// `spec.copyTo`) instead of the original, e.g. when the first store is lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<String>,
    /// An EtcdBackupSchedule in the same namespace with `continuous` on: its newest base
    /// at or before `pointInTime`, and its segments replayed up to that point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<LocalObjectRef>,
    /// For mode `InPlace` after quorum loss: a surviving member of the cluster itself
    /// (e.g. `main-0`), usually newer than the last backup. Its data is snapshotted to
    /// the cluster's `spec.backup` target first, then restored like a backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
}

/// An object in a bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Object {
    /// Bucket and access.
    pub target: S3Target,
    /// Object key.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// Where a restore goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RestoreMode {
    /// Into a new cluster.
    #[default]
    NewCluster,
    /// Into an existing cluster, replacing its data.
    InPlace,
}

/// What a restore has done.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdRestoreStatus {
    /// `Pending`, `Running`, `Succeeded` or `Failed`.
    #[serde(default)]
    pub phase: Phase,
    /// Steps taken so far, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<RestoreStep>,
    /// The snapshot restored, as `s3://<bucket>/<key>` (for a `member` source, the
    /// snapshot taken of it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_object: Option<String>,
    /// SHA-256 of the snapshot object, as verified before anything was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_sha256: Option<String>,
    /// etcd revision the snapshot holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_revision: Option<i64>,
    /// etcd revision the restored cluster starts from: above every revision the source
    /// cluster was seen to serve (its `status.revision`), plus a margin; every revision
    /// below it is marked compacted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_revision: Option<i64>,
    /// A restore to a point: the base backup, the segments replayed after it, and the
    /// revision and time reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point_in_time: Option<PointReached>,
    /// When the restore started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When the restored cluster was Available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Why the restore failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a restore to a point reads and reaches.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PointReached {
    /// The base: the full backup's object key.
    pub base_object: String,
    /// The base's revision (read from the snapshot itself).
    pub base_revision: i64,
    /// The segments replayed after it, in order (object keys).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<String>,
    /// The revision the restored data holds (the source's state at that revision).
    pub revision: i64,
    /// When that revision was received by the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
}

/// One step of a restore.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreStep {
    /// The step: `SurvivorSnapshotted`, `SourceVerified`, `MembersStopped`,
    /// `DataReplaced`, `ClusterCreated` or `ClusterAvailable`.
    pub name: String,
    /// How it went.
    #[serde(default)]
    pub phase: Phase,
    /// Detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When it last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
}
