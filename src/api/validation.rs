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

/// Room a member's volume needs besides etcd's backend quota, fixed part: the
/// write-ahead log (etcd keeps 5 segments of 64 MiB and preallocates the next), raft
/// snapshot files, and the db file a member that fell behind is sent whole.
pub const VOLUME_HEADROOM_BYTES: i64 = 512 * 1024 * 1024;
/// ... and a share of the quota: the db file grows past the quota on the transactions
/// that reach it, and a defragmentation writes a second copy of the data in use.
pub const VOLUME_HEADROOM_PERCENT: i64 = 25;

/// The smallest volume (or Memory size limit) for a backend quota: quota + 25 % + 512 MiB
/// (2 GiB, the default quota: 3 GiB; the default volume is 4 GiB).
pub fn min_volume_bytes(quota: i64) -> i64 {
    quota.saturating_add(quota / 100 * VOLUME_HEADROOM_PERCENT).saturating_add(VOLUME_HEADROOM_BYTES)
}

/// A quantity such as `4Gi` in bytes.
pub fn quantity_bytes(q: &str) -> Option<i64> {
    kube_quantity::ParsedQuantity::try_from(q).ok()?.to_bytes_i64()
}

fn mib(b: i64) -> String {
    if b % (1 << 30) == 0 { format!("{}Gi", b >> 30) } else { format!("{}Mi", (b + (1 << 20) - 1) >> 20) }
}

/// Checks a cluster spec on its own.
pub fn validate_cluster(spec: &EtcdClusterSpec) -> Vec<Problem> {
    let mut out = Vec::new();
    // A volume full before the quota is reached fails etcd's writes (or stops it) where
    // the quota would have raised NOSPACE, which etcd-pilot heals.
    let quota = spec.etcd.quota_backend_bytes;
    match quantity_bytes(&spec.storage.size.0) {
        None => out.push(problem("spec.storage.size", format!("{:?} is not a quantity such as 4Gi", spec.storage.size.0))),
        Some(size) if size < min_volume_bytes(quota) => out.push(problem(
            "spec.storage.size",
            format!(
                "{} is too small for the backend quota etcd.quotaBackendBytes {} ({}): a member's volume needs the quota plus {VOLUME_HEADROOM_PERCENT}% plus 512Mi (write-ahead log, snapshots, defragmentation), at least {}; raise storage.size or lower the quota",
                spec.storage.size.0,
                quota,
                mib(quota),
                mib(min_volume_bytes(quota))
            ),
        )),
        Some(_) => {}
    }
    if !ALLOWED_SIZES.contains(&spec.size) {
        out.push(problem("spec.size", format!("{} is not allowed: size must be 1, 3, 5 or 7", spec.size)));
    }
    if let Err(e) = parse_version(&spec.version) {
        out.push(problem("spec.version", e));
    }
    match spec.tls.mode {
        TlsMode::Secrets if spec.tls.secrets.is_none() => out
            .push(problem("spec.tls.secrets", "mode Secrets needs tls.secrets (peer, server and client Secret names)")),
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
    if spec.tls.ca_from.is_some() && spec.tls.mode != TlsMode::Operator {
        out.push(problem(
            "spec.tls.caFrom",
            "only mode Operator signs certificates with a CA, its own or another cluster's",
        ));
    }
    if let Some(w) = &spec.api_server {
        let mut seen = std::collections::BTreeSet::new();
        for o in &w.overrides {
            if !seen.insert((o.group.as_str(), o.resource.as_str())) {
                let gr = if o.group.is_empty() { o.resource.clone() } else { format!("{}/{}", o.group, o.resource) };
                out.push(problem("spec.apiServer.overrides", format!("{gr} is listed twice")));
            }
        }
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
    if old.tls.mode != new.tls.mode {
        out.push(problem(
            "spec.tls.mode",
            format!(
                "cannot change from {:?} to {:?} on a live cluster: members trust only the CA they started with",
                old.tls.mode, new.tls.mode
            ),
        ));
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
    // etcd's 3.6 upgrade guide: only from 3.5.26 on (earlier 3.5 did not persist a
    // learner's promotion, etcd issue 19557, and 3.6 then finds "too many learner members").
    if (a.major, a.minor, b.minor) == (3, 5, 6) && a.patch < MIN_35_FOR_36 {
        return Err(format!(
            "{from} -> {to}: etcd upgrades to 3.6 only from 3.5.{MIN_35_FOR_36} or later (earlier 3.5 releases did not persist learner promotion, etcd issue 19557): take the patch release first (spec.version: {CURRENT_VERSION}), then 3.6"
        ));
    }
    Ok(())
}

/// The etcd version examples, the demo and the docs start; what a 3.4 or an old 3.5
/// cluster is told to move to.
pub const CURRENT_VERSION: &str = "3.5.30";
/// The oldest 3.5 patch release etcd's maintainers allow an upgrade to 3.6 from.
pub const MIN_35_FOR_36: u64 = 26;

/// Whether a running etcd version is one users should stay on: `(supported, reason,
/// message)`. 3.4 is past its end of life (May 2026); 3.5 before 3.5.26 cannot be upgraded
/// to 3.6 and lacks the fix for etcd issue 19557. Nothing is changed for the user.
pub fn version_support(version: &str) -> (bool, &'static str, String) {
    let Ok(v) = parse_version(version) else {
        return (true, "Unknown", format!("etcd {version} is not a version etcd-pilot can judge"));
    };
    match (v.major, v.minor) {
        (3, 0..=4) => (
            false,
            "EndOfLife",
            format!(
                "etcd {version}: etcd {}.{} reached its end of life in May 2026 and gets no fixes: upgrade to spec.version: {CURRENT_VERSION} (one minor up, a rolling restart; see the user guide, Upgrade)",
                v.major, v.minor
            ),
        ),
        (3, 5) if v.patch < MIN_35_FOR_36 => (
            false,
            "UpgradeRecommended",
            format!(
                "etcd {version}: 3.5 before 3.5.{MIN_35_FOR_36} did not persist learner promotion (etcd issue 19557) and cannot be upgraded to 3.6: take spec.version: {CURRENT_VERSION} (a rolling restart; see the user guide, Upgrade)"
            ),
        ),
        _ => (true, "Supported", format!("etcd {version} is a supported release")),
    }
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
    if let Some(v) = &spec.verify
        && let Err(e) = parse_cron(&v.schedule)
    {
        out.push(problem("spec.verify.schedule", e));
    }
    out
}

/// Checks a restore.
pub fn validate_restore(spec: &EtcdRestoreSpec) -> Vec<Problem> {
    let mut out = Vec::new();
    let sources = [
        spec.source.backup.is_some(),
        spec.source.s3.is_some(),
        spec.source.schedule.is_some(),
        spec.source.member.is_some(),
    ];
    match sources.iter().filter(|s| **s).count() {
        0 => out.push(problem("spec.source", "set exactly one of backup, s3, schedule or member")),
        1 => {}
        _ => out.push(problem("spec.source", "set exactly one of backup, s3, schedule or member, not more")),
    }
    if spec.source.copy.is_some() && spec.source.backup.is_none() && spec.source.schedule.is_none() {
        out.push(problem(
            "spec.source.copy",
            "a copy is an EtcdBackup's or a schedule's: set source.backup or source.schedule",
        ));
    }
    if let Some(p) = &spec.point_in_time {
        if spec.source.schedule.is_none() {
            out.push(problem(
                "spec.pointInTime",
                "a point in time is reached through a schedule's continuous backup: set source.schedule",
            ));
        }
        if p.revision.is_some() == p.time.is_some() {
            out.push(problem("spec.pointInTime", "set exactly one of revision or time"));
        }
    }
    if spec.source.member.is_some() && spec.mode != RestoreMode::InPlace {
        out.push(problem("spec.source.member", "a surviving member is a source for mode InPlace only"));
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

#[cfg(test)]
#[path = "validation_tests.rs"]
mod tests;
