//! What etcd-pilot observes of a cluster and records in its status.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::*;

/// What etcd-pilot observed of a cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdClusterStatus {
    /// `Available` (quorum and a leader), `Progressing` (a change under way), `Degraded`
    /// (a member unhealthy or missing), `Alarm` (NOSPACE or CORRUPT raised), `SpecValid`,
    /// and others with reasons. A map by type: each controller applies only its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Every member etcd knows of, and pods of members it does not know of yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,
    /// Healthy voting members.
    #[serde(default)]
    pub ready_members: i32,
    /// Name of the leading member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Lowest etcd version running on any member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// etcd's cluster id, in hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// Client URLs: the client Service first, then each voting member.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_endpoints: Vec<String>,
    /// Highest member ordinal ever used. New members take the next one, so a member
    /// name (and DNS name) is never given twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub highest_ordinal: Option<i64>,
    /// The highest etcd revision etcd-pilot has seen the cluster serve (recorded when
    /// the status changes, and at least every 10000 revisions). A restore starts the
    /// restored data above it, so clients never see a revision twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// The newest successful backup (written by the backup controller alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<BackupRef>,
    /// Compactions and NOSPACE recoveries etcd-pilot did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<MaintenanceStatus>,
    /// kube-apiserver's wiring, as published (written by the wiring controller alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server: Option<ApiServerStatus>,
}

/// What etcd-pilot published for kube-apiserver.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiServerStatus {
    /// The Secret with `ca.crt`, `tls.crt`, `tls.key`, `etcd-servers` and
    /// `etcd-servers-overrides`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secret_name: String,
    /// The value of `--etcd-servers`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub etcd_servers: String,
    /// The value of `--etcd-servers-overrides` (empty: none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub etcd_servers_overrides: String,
    /// When the published values or certificate last changed: kube-apiserver reads them
    /// only at start, so restart it after this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_changed: Option<Time>,
    /// When kube-apiserver's client certificate expires (it is renewed before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_not_after: Option<Time>,
}

/// Compaction and NOSPACE recovery, as done by etcd-pilot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceStatus {
    /// The last compaction etcd-pilot did (scheduled, or to recover from NOSPACE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_compaction: Option<CompactionRecord>,
    /// A NOSPACE recovery under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_space: Option<NoSpaceRecovery>,
    /// The last NOSPACE recovery that finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_no_space_recovery: Option<NoSpaceRecovery>,
}

/// One compaction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompactionRecord {
    /// When it was done.
    pub time: Time,
    /// Revisions below this one are gone.
    pub revision: i64,
}

/// A recovery from NOSPACE: detected, compacted, every member defragmented, disarmed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NoSpaceRecovery {
    /// When etcd-pilot first saw the alarm.
    pub detected: Time,
    /// The largest member db file then.
    pub db_size_before: i64,
    /// When history was compacted for this recovery (members defragmented after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compacted: Option<Time>,
    /// The revision compacted to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compacted_revision: Option<i64>,
    /// All history was compacted (keeping `compaction.retainRevisions` freed too little).
    #[serde(default)]
    pub all_history: bool,
    /// When the alarm was disarmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<Time>,
    /// The largest member db file after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_size_after: Option<i64>,
}

/// A member's last defragmentation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DefragRecord {
    /// When it finished.
    pub time: Time,
    /// How long the member was blocked (it serves nothing while etcd rewrites its db).
    pub blocked_millis: i64,
    /// Size of the db file before.
    pub db_size_before: i64,
    /// Size of the db file after.
    pub db_size_after: i64,
}

/// One member as etcd-pilot saw it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// Member (and pod) name.
    pub name: String,
    /// etcd member id, in hex. Unset for a pod etcd does not know of.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// Peer URLs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peer_urls: Vec<String>,
    /// Client URLs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_urls: Vec<String>,
    /// A learner: receives the log but does not vote.
    #[serde(default)]
    pub learner: bool,
    /// Leads the raft group.
    #[serde(default)]
    pub leader: bool,
    /// Answered its status and has no errors.
    #[serde(default)]
    pub healthy: bool,
    /// Size of the db file in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_size: Option<i64>,
    /// Bytes of the db file in use; the rest is reclaimed by defragmentation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_size_in_use: Option<i64>,
    /// Share (percent) of the db file that is free space, reclaimed by defragmentation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fragmentation_percent: Option<i32>,
    /// Size of the db file as a share (percent) of the backend quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_used_percent: Option<i32>,
    /// The member's last defragmentation by etcd-pilot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_defragmentation: Option<DefragRecord>,
    /// Defragmentations of this member that failed in a row (retried with backoff).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub defrag_failures: i32,
    /// When the last of those failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_defrag_failure: Option<Time>,
    /// etcd raised a CORRUPT alarm for this member: never a backup source, never
    /// disarmed by etcd-pilot.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub corrupt: bool,
    /// etcd version the member runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Errors the member reported, or why it could not be reached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// A backup, by name and object.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRef {
    /// Name of the EtcdBackup.
    pub name: String,
    /// Object key in the bucket.
    pub object_key: String,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
}
