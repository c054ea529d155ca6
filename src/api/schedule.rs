//! `EtcdBackupSchedule`: EtcdBackups on a cron schedule, with retention.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Phase, S3Target};

/// Backups of a cluster on a cron schedule; old ones are pruned by the retention rules.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "etcdpilot.io",
    version = "v1alpha1",
    kind = "EtcdBackupSchedule",
    namespaced,
    status = "EtcdBackupScheduleStatus",
    shortname = "etcdbackupschedule",
    category = "etcdpilot",
    derive = "PartialEq",
    doc = "EtcdBackups of an EtcdCluster on a cron schedule, with retention.",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.clusterName"),
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(name = "Last", type_ = "date", json_path = ".status.lastScheduleTime"),
    // A time ahead: `date` columns print ages, and kubectl shows a future one as
    // `<invalid>`; the timestamp itself reads plainly.
    printcolumn(name = "Next", type_ = "string", json_path = ".status.nextScheduleTime"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct EtcdBackupScheduleSpec {
    /// Name of the EtcdCluster to back up, in the same namespace.
    #[schemars(length(min = 1, max = 253))]
    pub cluster_name: String,
    /// Standard 5-field cron expression (minute hour day-of-month month day-of-week),
    /// e.g. `0 */6 * * *`, or a nickname such as `@daily`. Evaluated in `timeZone`.
    #[schemars(length(min = 1), regex(pattern = crate::api::common::CRON_PATTERN))]
    pub schedule: String,
    /// IANA time zone of the schedule. Defaults to UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Which backups to keep. A backup is deleted (object first, then the EtcdBackup)
    /// when any rule says so; the newest successful backup is always kept.
    #[serde(default)]
    pub retention: Retention,
    /// Where to write. Unset means the cluster's `spec.backup`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<S3Target>,
    /// Skip runs while true.
    #[serde(default)]
    pub suspend: bool,
    /// Continuous backup: every change between the full backups, streamed to `target`
    /// as segments of whole revisions, so that a restore can go back to any revision or
    /// time in the window (`EtcdRestore.spec.pointInTime`). The full backups are the
    /// bases: one is taken at once when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuous: Option<Continuous>,
    /// Restore drills: on this cron schedule, the newest successful backup is restored
    /// into a scratch single-member etcd and compared with what it claims (revision, key
    /// count, and `HashKV` at its revision against a live member while the cluster still
    /// holds that revision); `status.lastVerification` says how it went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<Verify>,
    /// Further targets every backup of this schedule is copied to (the backups'
    /// `spec.copyTo`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copy_to: Vec<S3Target>,
}

/// When restore drills run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verify {
    /// Standard 5-field cron expression or nickname, in the schedule's `timeZone`.
    #[schemars(length(min = 1), regex(pattern = crate::api::common::CRON_PATTERN))]
    pub schedule: String,
}

/// Continuous backup of a schedule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Continuous {
    /// Stream every change while true.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The longest a change waits before it is written to the store (seconds): what a
    /// total loss of the cluster can lose at most, while the store is reachable.
    /// Defaults to 5; a segment is written sooner once it holds 1 MiB.
    #[serde(default = "default_flush_seconds")]
    #[schemars(range(min = 1, max = 300))]
    pub flush_seconds: i32,
}

fn default_true() -> bool {
    true
}

fn default_flush_seconds() -> i32 {
    5
}

impl EtcdBackupScheduleSpec {
    /// Whether the schedule streams every change.
    pub fn streams(&self) -> bool {
        self.continuous.as_ref().is_some_and(|c| c.enabled) && !self.suspend
    }
}

/// Retention rules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Keep at most this many successful backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub keep_last: Option<i32>,
    /// Delete backups older than this, as a duration such as `36h`, `7d` or `4w`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(m|h|d|w)$"))]
    pub max_age: Option<String>,
}

impl Default for Retention {
    fn default() -> Self {
        Self { keep_last: Some(7), max_age: None }
    }
}

/// What the schedule has done.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdBackupScheduleStatus {
    /// When the last backup was started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// When the last successful backup finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,
    /// When the next backup starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    /// The newest backups this schedule made, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_backups: Vec<ScheduledBackup>,
    /// Why the schedule cannot run (e.g. an invalid cron expression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The last restore drill (written by the drill controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verification: Option<Verification>,
    /// When a restore drill last passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_verification_time: Option<Time>,
    /// When the next restore drill starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_verification_time: Option<Time>,
    /// The continuous backup, when on (written by the stream controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continuous: Option<ContinuousStatus>,
}

/// Where a schedule's continuous backup stands.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContinuousStatus {
    /// The last revision written to the store (durable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_revision: Option<i64>,
    /// When the last durable revision was received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_time: Option<Time>,
    /// How far the store is behind the cluster (seconds): 0 while every change received
    /// is written within `flushSeconds`; it grows while the stream cannot read or write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_seconds: Option<i64>,
    /// The oldest point a restore can reach (the oldest base).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_start: Option<WindowEdge>,
    /// The newest point a restore can reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_end: Option<WindowEdge>,
    /// Revisions no segment holds: the stream needed them after etcd had compacted them
    /// (e.g. while the operator was down); a new base was taken at `toRevision`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gaps: Vec<StreamGap>,
    /// The stream's copies (`copyTo`): the segments and index mirrored into each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub copies: Vec<StreamCopy>,
    /// What the stream is doing: `Starting`, `WaitingForBase`, `Streaming`, `Retrying`,
    /// `Gap`, `Blocked` or `Suspended`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Why, when it is not streaming.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One copy of a continuous backup.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamCopy {
    /// The copy's bucket.
    pub bucket: String,
    /// The last revision its index reaches (its segments checked against their SHA-256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_revision: Option<i64>,
    /// Why it could not be brought up to date, if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A revision and the time it was received.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WindowEdge {
    /// An etcd revision of the cluster.
    pub revision: i64,
    /// When the stream received it (for a base: when the backup finished).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
}

/// Revisions the continuous backup does not hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamGap {
    /// The first revision missing.
    pub from_revision: i64,
    /// The revision of the base taken after it (the stream goes on from the next one).
    pub to_revision: i64,
    /// When the last revision before the gap was received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_time: Option<Time>,
    /// When the base after it was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_time: Option<Time>,
}

/// One backup made by a schedule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledBackup {
    /// Name of the EtcdBackup.
    pub name: String,
    /// Its phase when last seen.
    #[serde(default)]
    pub phase: Phase,
    /// Object key, once written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_key: Option<String>,
    /// When it was started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
}

/// How a restore drill went.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    /// When the drill finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// The EtcdBackup restored.
    pub backup: String,
    /// `Passed` or `Failed`.
    pub result: VerificationResult,
    /// What was compared, or what did not hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// From the scratch member's creation to the verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<i64>,
}

/// The verdict of a restore drill.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum VerificationResult {
    /// The backup restored and matched everything it claims.
    #[default]
    Passed,
    /// It did not restore, or did not match.
    Failed,
}
