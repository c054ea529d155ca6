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
