//! Checks a schema cannot express. Pure functions: the reconcilers call them and turn a
//! problem into a status condition and a Warning Event, and change nothing.

use std::fmt;

use super::cluster::{EtcdClusterSpec, TlsMode};
use super::restore::{EtcdRestoreSpec, RestoreMode};
use super::schedule::EtcdBackupScheduleSpec;

/// Sizes etcd-pilot runs: odd, so every member adds fault tolerance.
pub const ALLOWED_SIZES: [i32; 4] = [1, 3, 5, 7];

/// One thing wrong with a spec, with the field it is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// JSON path of the field, e.g. `spec.version`.
    pub field: &'static str,
    /// What is wrong, for a condition message or an Event.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

fn problem(field: &'static str, message: impl Into<String>) -> Problem {
    Problem { field, message: message.into() }
}

/// Parses an etcd version `MAJOR.MINOR.PATCH` (a leading `v` is accepted).
pub fn parse_version(v: &str) -> Result<semver::Version, String> {
    semver::Version::parse(v.trim_start_matches('v'))
        .map_err(|e| format!("{v:?} is not a MAJOR.MINOR.PATCH version: {e}"))
}

/// Parses a 5-field cron expression or a nickname such as `@daily`.
pub fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| format!("{expr:?} is not a valid cron expression: {e}"))
}

/// Parses a retention age such as `36h`, `7d` or `4w`.
pub fn parse_age(age: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("{age:?} is not a duration like 90m, 36h, 7d or 4w");
    let (num, unit) = age.split_at(age.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(bad()),
    };
    n.checked_mul(secs).map(std::time::Duration::from_secs).ok_or_else(bad)
}

/// Checks a cluster spec on its own.
pub fn validate_cluster(spec: &EtcdClusterSpec) -> Vec<Problem> {
    let mut out = Vec::new();
    if !ALLOWED_SIZES.contains(&spec.size) {
        out.push(problem("spec.size", format!("{} is not allowed: size must be 1, 3, 5 or 7", spec.size)));
    }
    if let Err(e) = parse_version(&spec.version) {
        out.push(problem("spec.version", e));
    }
    match spec.tls.mode {
        TlsMode::Secrets if spec.tls.secrets.is_none() => {
            out.push(problem("spec.tls.secrets", "mode Secrets needs tls.secrets (peer, server and client Secret names)"))
        }
        TlsMode::CertManager if spec.tls.cert_manager.is_none() => {
            out.push(problem("spec.tls.certManager", "mode CertManager needs tls.certManager.issuerRef"))
        }
        _ => {}
    }
    if spec.tls.renew_before_days >= spec.tls.certificate_validity_days {
        out.push(problem(
            "spec.tls.renewBeforeDays",
            format!(
                "{} days must be less than certificateValidityDays ({})",
                spec.tls.renew_before_days, spec.tls.certificate_validity_days
            ),
        ));
    }
    if spec.etcd.election_timeout_ms < 5 * spec.etcd.heartbeat_interval_ms {
        out.push(problem(
            "spec.etcd.electionTimeoutMs",
            format!(
                "{} ms must be at least 5 times heartbeatIntervalMs ({} ms)",
                spec.etcd.election_timeout_ms, spec.etcd.heartbeat_interval_ms
            ),
        ));
    }
    if let Some(s) = &spec.defrag.schedule
        && let Err(e) = parse_cron(s)
    {
        out.push(problem("spec.defrag.schedule", e));
    }
    if let Some(s) = &spec.compaction.schedule
        && let Err(e) = parse_cron(s)
    {
        out.push(problem("spec.compaction.schedule", e));
    }
    out
}

/// Checks a change of a live cluster's spec. `old` is the spec the cluster runs.
pub fn validate_cluster_change(old: &EtcdClusterSpec, new: &EtcdClusterSpec) -> Vec<Problem> {
    let mut out = Vec::new();
    if old.topology != new.topology {
        out.push(problem(
            "spec.topology",
            format!(
                "cannot change from {:?} to {:?} on a live cluster: restore a backup into a new cluster instead",
                old.topology, new.topology
            ),
        ));
    }
    if old.storage.medium != new.storage.medium {
        out.push(problem("spec.storage.medium", "cannot change on a live cluster"));
    }
    if let Err(e) = check_version_change(&old.version, &new.version) {
        out.push(problem("spec.version", e));
    }
    out
}

/// etcd upgrades one minor version at a time and does not downgrade a minor version
/// through a rolling restart: refuse both, allow any patch change.
pub fn check_version_change(from: &str, to: &str) -> Result<(), String> {
    let (a, b) = (parse_version(from)?, parse_version(to)?);
    if a.major != b.major {
        return Err(format!("cannot change the major version ({from} -> {to})"));
    }
    if b.minor > a.minor + 1 {
        return Err(format!(
            "{from} -> {to} skips a minor version: etcd upgrades one minor at a time (go to {}.{}.x first)",
            a.major,
            a.minor + 1
        ));
    }
    if b.minor < a.minor {
        return Err(format!(
            "{from} -> {to} is a minor downgrade, which a rolling restart cannot do safely: restore a backup into a new cluster instead"
        ));
    }
    Ok(())
}

/// Checks a backup schedule.
pub fn validate_schedule(spec: &EtcdBackupScheduleSpec) -> Vec<Problem> {
    let mut out = Vec::new();
    if let Err(e) = parse_cron(&spec.schedule) {
        out.push(problem("spec.schedule", e));
    }
    if let Some(tz) = &spec.time_zone
        && jiff::tz::TimeZone::get(tz).is_err()
    {
        out.push(problem("spec.timeZone", format!("{tz:?} is not a known IANA time zone")));
    }
    if let Some(age) = &spec.retention.max_age
        && let Err(e) = parse_age(age)
    {
        out.push(problem("spec.retention.maxAge", e));
    }
    out
}

/// Checks a restore.
pub fn validate_restore(spec: &EtcdRestoreSpec) -> Vec<Problem> {
    let mut out = Vec::new();
    match (&spec.source.backup, &spec.source.s3) {
        (Some(_), Some(_)) => out.push(problem("spec.source", "set exactly one of backup or s3, not both")),
        (None, None) => out.push(problem("spec.source", "set exactly one of backup or s3")),
        _ => {}
    }
    match (spec.mode, &spec.new_cluster) {
        (RestoreMode::NewCluster, None) => {
            out.push(problem("spec.newCluster", "mode NewCluster needs the spec of the cluster to create"))
        }
        (RestoreMode::NewCluster, Some(c)) => out.extend(validate_cluster(c)),
        (RestoreMode::InPlace, Some(_)) => {
            out.push(problem("spec.newCluster", "mode InPlace restores into the existing cluster; remove newCluster"))
        }
        (RestoreMode::InPlace, None) => {}
    }
    out
}
