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

/// What the schema lets through as a cron expression, at admission: five fields of cron
/// characters, or a nickname. The API server refuses anything else (`every hour`) with
/// this pattern in its message; [`parse_cron`] then judges the fields themselves (a
/// condition, as before).
pub const CRON_PATTERN: &str =
    r"^\s*((?i:@(yearly|annually|monthly|weekly|daily|hourly))|[0-9A-Za-z*?,/#-]+(\s+[0-9A-Za-z*?,/#-]+){4})\s*$";

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
    out
}

/// Checks a restore.
pub fn validate_restore(spec: &EtcdRestoreSpec) -> Vec<Problem> {
    let mut out = Vec::new();
    let sources = [spec.source.backup.is_some(), spec.source.s3.is_some(), spec.source.member.is_some()];
    match sources.iter().filter(|s| **s).count() {
        0 => out.push(problem("spec.source", "set exactly one of backup, s3 or member")),
        1 => {}
        _ => out.push(problem("spec.source", "set exactly one of backup, s3 or member, not more")),
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
mod tests {
    use super::*;
    use crate::api::cluster::{CertManagerTls, Topology};
    use crate::api::common::{LocalObjectRef, S3Target};
    use crate::api::restore::{RestoreSource, S3Object};
    use crate::api::schedule::Retention;

    fn cluster(yaml: &str) -> EtcdClusterSpec {
        serde_norway::from_str(yaml).expect("spec")
    }

    fn fields(problems: &[Problem]) -> Vec<&'static str> {
        problems.iter().map(|p| p.field).collect()
    }

    #[test]
    fn a_minimal_spec_gets_its_defaults_and_is_valid() {
        let spec = cluster("version: 3.5.17");
        assert_eq!(spec.size, 3);
        assert_eq!(spec.topology, Topology::External);
        assert_eq!(spec.tls.mode, TlsMode::Operator);
        assert_eq!(spec.etcd.quota_backend_bytes, 2 * 1024 * 1024 * 1024);
        assert!(validate_cluster(&spec).is_empty());
    }

    #[test]
    fn the_schemas_cron_pattern_lets_through_what_cron_may_parse() {
        let re = regex::Regex::new(CRON_PATTERN).expect("pattern");
        // (expression, the schema lets it through, croner parses it)
        for (expr, schema, parses) in [
            ("0 */6 * * *", true, true),
            ("@daily", true, true),
            ("@Hourly", true, true),
            ("30 2 * * MON-FRI", true, true),
            ("0 0 1,15 * *", true, true),
            ("every hour", false, false),
            ("* * * *", false, false),
            ("0 0 * * * *", false, false),
            ("", false, false),
            ("@reboot", false, false),
            ("61 * * * *", true, false), // the fields themselves: a condition
        ] {
            assert_eq!(re.is_match(expr), schema, "{expr:?} at admission");
            assert_eq!(parse_cron(expr).is_ok(), parses, "{expr:?} parsed");
            assert!(schema || !parses, "{expr:?}: the schema never refuses what cron parses");
        }
        // Every schedule field of the CRDs carries the pattern.
        let crds = serde_json::to_string(&crate::crdgen::all()).expect("crds");
        let escaped = serde_json::to_string(CRON_PATTERN).expect("pattern");
        // EtcdBackupSchedule.spec.schedule; the defrag and compaction schedules of an
        // EtcdCluster and of an EtcdRestore's newCluster.
        assert_eq!(crds.matches(&escaped).count(), 5);
    }

    #[test]
    fn a_volume_must_hold_the_quota_with_headroom() {
        // (storage, quota, refused)
        let rows: [(&str, &str, bool); 10] = [
            ("", "", false),                                                         // defaults: 4Gi for 2 GiB
            ("storage: {size: 3Gi}", "", false),                                     // 2 GiB + 512 MiB + 512 MiB
            ("storage: {size: 3071Mi}", "", true),                                   // a MiB short
            ("storage: {size: 1Gi}", "etcd: {quotaBackendBytes: 8589934592}", true), // the issue's case
            ("storage: {size: 1Mi}", "", true),                                      // the issue's other case
            ("storage: {size: 10752Mi}", "etcd: {quotaBackendBytes: 8589934592}", false),
            ("storage: {size: 10Gi}", "etcd: {quotaBackendBytes: 8589934592}", true),
            ("storage: {size: 1Gi}", "etcd: {quotaBackendBytes: 268435456}", false), // 256 MiB quota: 832 MiB
            ("storage: {medium: Memory, size: 1Gi}", "", true),                      // a Memory size limit too
            ("storage: {size: lots}", "", true),
        ];
        for (storage, etcd, refused) in rows {
            let spec = cluster(&format!("version: 3.5.30\n{storage}\n{etcd}"));
            let p = validate_cluster(&spec);
            assert_eq!(fields(&p) == ["spec.storage.size"], refused, "{storage} {etcd}: {p:?}");
        }
        let p =
            validate_cluster(&cluster("version: 3.5.30\nstorage: {size: 1Gi}\netcd: {quotaBackendBytes: 8589934592}"));
        assert_eq!(
            p[0].message,
            "1Gi is too small for the backend quota etcd.quotaBackendBytes 8589934592 (8Gi): a member's volume needs the quota plus 25% plus 512Mi (write-ahead log, snapshots, defragmentation), at least 10752Mi; raise storage.size or lower the quota"
        );
    }

    #[test]
    fn sizes_other_than_1_3_5_7_are_refused() {
        for size in [-1, 0, 2, 4, 6, 8, 9] {
            let spec = EtcdClusterSpec { size, ..cluster("version: 3.5.17") };
            let p = validate_cluster(&spec);
            assert_eq!(fields(&p), ["spec.size"], "size {size}");
            assert!(p[0].message.contains("1, 3, 5 or 7"));
        }
        for size in ALLOWED_SIZES {
            assert!(validate_cluster(&EtcdClusterSpec { size, ..cluster("version: 3.5.17") }).is_empty());
        }
    }

    #[test]
    fn inconsistent_settings_are_named() {
        let spec = cluster(
            r#"
version: "3.5"
tls: {mode: Secrets, certificateValidityDays: 10, renewBeforeDays: 10}
etcd: {heartbeatIntervalMs: 300, electionTimeoutMs: 1000}
defrag: {schedule: "every night"}
compaction: {schedule: "*/5 * * * *"}
"#,
        );
        assert_eq!(
            fields(&validate_cluster(&spec)),
            [
                "spec.version",
                "spec.tls.secrets",
                "spec.tls.renewBeforeDays",
                "spec.etcd.electionTimeoutMs",
                "spec.defrag.schedule"
            ]
        );
        let cm = EtcdClusterSpec {
            tls: crate::api::cluster::TlsSpec { mode: TlsMode::CertManager, cert_manager: None, ..Default::default() },
            ..cluster("version: 3.5.17")
        };
        assert_eq!(fields(&validate_cluster(&cm)), ["spec.tls.certManager"]);
        let ok = EtcdClusterSpec {
            tls: crate::api::cluster::TlsSpec {
                mode: TlsMode::CertManager,
                cert_manager: Some(CertManagerTls::default()),
                ..Default::default()
            },
            ..cm
        };
        assert!(validate_cluster(&ok).is_empty());
    }

    #[test]
    fn version_changes_one_minor_up_at_most() {
        let table = [
            ("3.4.23", "3.4.23", true),
            ("3.4.23", "3.4.30", true),
            ("3.4.30", "3.4.23", true), // patch downgrade: same storage format
            ("3.4.23", "3.5.1", true),
            ("v3.4.23", "3.5.17", true),
            ("3.4.23", "3.6.0", false),  // skips 3.5
            ("3.5.17", "3.4.23", false), // minor downgrade
            ("3.5.17", "4.0.0", false),
            ("3.5", "3.5.1", false),
            // etcd's own 3.6 upgrade rules (its upgrade guide and the 3.5.26 release note).
            ("3.5.26", "3.6.0", true),
            ("3.5.30", "3.6.5", true),
            ("3.5.25", "3.6.0", false), // take the patch release first
            ("3.5.16", "3.6.0", false),
            ("3.5.16", "3.5.30", true), // which is allowed
            ("3.6.0", "3.5.30", false), // no downgrade by a rolling restart
            ("3.6.0", "3.6.4", true),
            ("3.6.4", "3.7.0", true),
        ];
        for (from, to, ok) in table {
            assert_eq!(
                check_version_change(from, to).is_ok(),
                ok,
                "{from} -> {to}: {:?}",
                check_version_change(from, to)
            );
        }
        let msg = check_version_change("3.4.23", "3.6.0").unwrap_err();
        assert!(msg.contains("one minor at a time") && msg.contains("3.5.x"), "{msg}");
    }

    #[test]
    fn the_way_to_3_6_goes_through_3_5_26() {
        assert_eq!(
            check_version_change("3.5.16", "3.6.0").unwrap_err(),
            "3.5.16 -> 3.6.0: etcd upgrades to 3.6 only from 3.5.26 or later (earlier 3.5 releases did not persist learner promotion, etcd issue 19557): take the patch release first (spec.version: 3.5.30), then 3.6"
        );
        assert!(check_version_change("3.6.0", "3.5.30").unwrap_err().contains("minor downgrade"));
    }

    #[test]
    fn end_of_life_and_old_patch_releases_are_named() {
        let table = [
            ("3.4.23", false, "EndOfLife"),
            ("3.3.27", false, "EndOfLife"),
            ("3.5.1", false, "UpgradeRecommended"),
            ("3.5.25", false, "UpgradeRecommended"),
            ("3.5.26", true, "Supported"),
            ("3.5.30", true, "Supported"),
            ("3.6.0", true, "Supported"),
            ("x", true, "Unknown"),
        ];
        for (v, ok, reason) in table {
            let (got_ok, got_reason, _) = version_support(v);
            assert_eq!((got_ok, got_reason), (ok, reason), "{v}");
        }
        assert_eq!(
            version_support("3.4.23").2,
            "etcd 3.4.23: etcd 3.4 reached its end of life in May 2026 and gets no fixes: upgrade to spec.version: 3.5.30 (one minor up, a rolling restart; see the user guide, Upgrade)"
        );
    }

    #[test]
    fn a_live_topology_change_and_a_two_minor_jump_are_refused() {
        let old = cluster("version: 3.4.23");
        let new = EtcdClusterSpec { topology: Topology::Stacked, version: "3.6.0".into(), ..old.clone() };
        assert_eq!(fields(&validate_cluster_change(&old, &new)), ["spec.topology", "spec.version"]);
        let scale = EtcdClusterSpec { size: 5, version: "3.5.1".into(), ..old.clone() };
        assert!(validate_cluster_change(&old, &scale).is_empty());
        let mut plain = old.clone();
        plain.tls.mode = TlsMode::Disabled;
        assert_eq!(fields(&validate_cluster_change(&old, &plain)), ["spec.tls.mode"]);
    }

    #[test]
    fn schedules_need_a_cron_a_zone_and_an_age_that_parse() {
        let mut s = EtcdBackupScheduleSpec {
            cluster_name: "main".into(),
            schedule: "0 */6 * * *".into(),
            time_zone: Some("Europe/Berlin".into()),
            retention: Retention { keep_last: Some(3), max_age: Some("7d".into()) },
            target: None,
            suspend: false,
        };
        assert!(validate_schedule(&s).is_empty(), "{:?}", validate_schedule(&s));
        s.schedule = "@daily".into();
        assert!(validate_schedule(&s).is_empty());
        s.schedule = "61 * * * *".into();
        s.time_zone = Some("Mars/Olympus".into());
        s.retention.max_age = Some("7 days".into());
        assert_eq!(fields(&validate_schedule(&s)), ["spec.schedule", "spec.timeZone", "spec.retention.maxAge"]);
        s.schedule = "0 0 * * * *".into();
        assert_eq!(fields(&validate_schedule(&s))[0], "spec.schedule", "6 fields (seconds) are not cron's 5");
    }

    #[test]
    fn ages() {
        assert_eq!(parse_age("90m").unwrap().as_secs(), 5400);
        assert_eq!(parse_age("36h").unwrap().as_secs(), 129_600);
        assert_eq!(parse_age("7d").unwrap().as_secs(), 604_800);
        assert_eq!(parse_age("2w").unwrap().as_secs(), 1_209_600);
        for bad in ["", "d", "7", "7y", "-1d", "99999999999999999999d"] {
            assert!(parse_age(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn restores_need_exactly_one_source_and_a_spec_only_for_new_clusters() {
        let backup = RestoreSource { backup: Some(LocalObjectRef { name: "b1".into() }), ..RestoreSource::default() };
        let s3 = RestoreSource {
            s3: Some(S3Object { target: S3Target { bucket: "bkt".into(), ..Default::default() }, key: "k.db".into() }),
            ..RestoreSource::default()
        };
        let survivor = RestoreSource { member: Some("main-0".into()), ..RestoreSource::default() };
        let new_cluster = Some(cluster("version: 3.5.17"));
        let r = |source: RestoreSource, mode, new_cluster: Option<EtcdClusterSpec>| EtcdRestoreSpec {
            source,
            mode,
            cluster_name: "main".into(),
            new_cluster,
            force: false,
        };
        assert!(validate_restore(&r(backup.clone(), RestoreMode::NewCluster, new_cluster.clone())).is_empty());
        assert!(validate_restore(&r(s3.clone(), RestoreMode::InPlace, None)).is_empty());
        assert!(validate_restore(&r(survivor.clone(), RestoreMode::InPlace, None)).is_empty());
        assert_eq!(
            fields(&validate_restore(&r(survivor, RestoreMode::NewCluster, new_cluster.clone()))),
            ["spec.source.member"]
        );
        let both = RestoreSource { backup: backup.backup.clone(), s3: s3.s3.clone(), member: None };
        assert_eq!(fields(&validate_restore(&r(both, RestoreMode::InPlace, None))), ["spec.source"]);
        assert_eq!(
            fields(&validate_restore(&r(RestoreSource::default(), RestoreMode::InPlace, None))),
            ["spec.source"]
        );
        assert_eq!(fields(&validate_restore(&r(backup.clone(), RestoreMode::NewCluster, None))), ["spec.newCluster"]);
        assert_eq!(
            fields(&validate_restore(&r(backup.clone(), RestoreMode::InPlace, new_cluster))),
            ["spec.newCluster"]
        );
        let bad_size = Some(EtcdClusterSpec { size: 4, ..cluster("version: 3.5.17") });
        assert_eq!(fields(&validate_restore(&r(backup, RestoreMode::NewCluster, bad_size))), ["spec.size"]);
    }
}
