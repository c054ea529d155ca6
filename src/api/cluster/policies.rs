//! What users tune of etcd and of its upkeep: etcd's flags, defragmentation, compaction,
//! the quota, kube-apiserver's wiring.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// etcd server settings that users tune.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdTuning {
    /// Backend quota in bytes (`--quota-backend-bytes`). Past it etcd raises the NOSPACE
    /// alarm and refuses writes. Default 2 GiB; etcd suggests at most 8 GiB.
    #[serde(default = "default_quota")]
    #[schemars(range(min = 16777216, max = 68719476736i64))]
    pub quota_backend_bytes: i64,
    /// Committed transactions between raft snapshots (`--snapshot-count`).
    #[serde(default = "default_snapshot_count")]
    #[schemars(range(min = 1000))]
    pub snapshot_count: i64,
    /// etcd's own auto-compaction mode: `Periodic` or `Revision` (`--auto-compaction-mode`).
    #[serde(default)]
    pub auto_compaction_mode: AutoCompactionMode,
    /// etcd's own auto-compaction retention (`--auto-compaction-retention`): a duration
    /// such as `1h` for `Periodic`, a revision count for `Revision`; `0` turns it off.
    #[serde(default = "default_auto_compaction_retention")]
    pub auto_compaction_retention: String,
    /// Heartbeat interval in milliseconds (`--heartbeat-interval`).
    #[serde(default = "default_heartbeat_ms")]
    #[schemars(range(min = 10, max = 10000))]
    pub heartbeat_interval_ms: i32,
    /// Election timeout in milliseconds (`--election-timeout`); at least 5x the heartbeat.
    #[serde(default = "default_election_ms")]
    #[schemars(range(min = 50, max = 50000))]
    pub election_timeout_ms: i32,
}

impl Default for EtcdTuning {
    fn default() -> Self {
        Self {
            quota_backend_bytes: default_quota(),
            snapshot_count: default_snapshot_count(),
            auto_compaction_mode: AutoCompactionMode::default(),
            auto_compaction_retention: default_auto_compaction_retention(),
            heartbeat_interval_ms: default_heartbeat_ms(),
            election_timeout_ms: default_election_ms(),
        }
    }
}

fn default_quota() -> i64 {
    2 * 1024 * 1024 * 1024
}

fn default_snapshot_count() -> i64 {
    10_000
}

fn default_auto_compaction_retention() -> String {
    "0".to_string()
}

fn default_heartbeat_ms() -> i32 {
    100
}

fn default_election_ms() -> i32 {
    1000
}

/// etcd's auto-compaction modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AutoCompactionMode {
    /// Keep a window of time.
    #[default]
    Periodic,
    /// Keep a number of revisions.
    Revision,
}

/// When members are defragmented. Defragmentation blocks a member while it runs, so
/// members go one at a time, followers first, the leader last, and only while the
/// cluster is healthy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DefragPolicy {
    /// Defragment at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Defragment a member when this share (percent) of its db file is free space:
    /// `(dbSize - dbSizeInUse) / dbSize`.
    #[serde(default = "default_frag_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub fragmentation_threshold_percent: i32,
    /// Members whose db file is smaller than this are left alone.
    #[serde(default = "default_defrag_min_db")]
    #[schemars(range(min = 0))]
    pub min_db_size_bytes: i64,
    /// Also defragment on this cron schedule (5 fields, UTC), whatever the fragmentation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::api::common::CRON_PATTERN))]
    pub schedule: Option<String>,
}

impl Default for DefragPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            fragmentation_threshold_percent: default_frag_threshold(),
            min_db_size_bytes: default_defrag_min_db(),
            schedule: None,
        }
    }
}

fn yes() -> bool {
    true
}

fn default_frag_threshold() -> i32 {
    50
}

fn default_defrag_min_db() -> i64 {
    64 * 1024 * 1024
}

/// Compaction of old revisions by etcd-pilot (in addition to, or instead of, etcd's own
/// auto-compaction). kube-apiserver compacts its own etcd every 5 minutes; use this for
/// clusters no apiserver compacts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompactionPolicy {
    /// Cron schedule (5 fields, UTC) of compactions. Unset: etcd-pilot does not compact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::api::common::CRON_PATTERN))]
    pub schedule: Option<String>,
    /// Revisions kept behind the current one at each compaction.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub retain_revisions: i64,
}

/// What etcd-pilot does about the backend quota (`spec.etcd.quotaBackendBytes`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaPolicy {
    /// Condition `QuotaHigh` and a Warning Event when a member's db file reaches this
    /// share (percent) of the quota, before etcd refuses writes.
    #[serde(default = "default_warn_at_percent")]
    #[schemars(range(min = 1, max = 100))]
    pub warn_at_percent: i32,
    /// When etcd raises NOSPACE: compact (keeping `compaction.retainRevisions`, or all
    /// history if that frees too little), defragment every member (the leader last),
    /// then disarm the alarm. Off: the alarm stays until someone acts.
    #[serde(default = "yes")]
    pub remediate_no_space: bool,
}

impl Default for QuotaPolicy {
    fn default() -> Self {
        Self { warn_at_percent: default_warn_at_percent(), remediate_no_space: true }
    }
}

fn default_warn_at_percent() -> i32 {
    80
}

/// kube-apiserver's wiring to this cluster (its main etcd), and which resources other
/// EtcdClusters of this namespace serve instead (`--etcd-servers-overrides`). etcd-pilot
/// publishes the flags' values and a client certificate for kube-apiserver in a Secret
/// (`status.apiServer.secretName`). `{}`: no overrides.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiServerWiring {
    /// Resources another EtcdCluster serves, each one `--etcd-servers-overrides` entry
    /// `group/resource#url`. That cluster must share this cluster's CA
    /// (`spec.tls.caFrom.cluster` naming this one): kube-apiserver has one set of etcd TLS
    /// flags for all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<ApiServerOverride>,
}

/// One resource served by another EtcdCluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiServerOverride {
    /// API group; empty or unset for the core group (e.g. `events`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Plural resource name (e.g. `events`, `leases`).
    #[schemars(length(min = 1))]
    pub resource: String,
    /// The EtcdCluster, in this namespace, that serves it.
    #[schemars(length(min = 1))]
    pub cluster: String,
}
