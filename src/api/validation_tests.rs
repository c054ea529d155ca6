use super::*;
use crate::api::cluster::{CertManagerTls, Topology};
use crate::api::common::CRON_PATTERN;
use crate::api::common::{LocalObjectRef, S3Target};
use crate::api::restore::{PointInTime, RestoreSource, S3Object};
use crate::api::schedule::Retention;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

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
    // EtcdBackupSchedule.spec.schedule and spec.verify.schedule; the defrag and
    // compaction schedules of an EtcdCluster and of an EtcdRestore's newCluster.
    assert_eq!(crds.matches(&escaped).count(), 6);
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
    let p = validate_cluster(&cluster("version: 3.5.30\nstorage: {size: 1Gi}\netcd: {quotaBackendBytes: 8589934592}"));
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
        assert_eq!(check_version_change(from, to).is_ok(), ok, "{from} -> {to}: {:?}", check_version_change(from, to));
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
        continuous: None,
        verify: Some(crate::api::schedule::Verify { schedule: "@weekly".into() }),
        copy_to: Vec::new(),
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
    s.verify = Some(crate::api::schedule::Verify { schedule: "0 25 * * *".into() });
    assert!(fields(&validate_schedule(&s)).contains(&"spec.verify.schedule"));
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
        point_in_time: None,
    };
    assert!(validate_restore(&r(backup.clone(), RestoreMode::NewCluster, new_cluster.clone())).is_empty());
    assert!(validate_restore(&r(s3.clone(), RestoreMode::InPlace, None)).is_empty());
    assert!(validate_restore(&r(survivor.clone(), RestoreMode::InPlace, None)).is_empty());
    assert_eq!(
        fields(&validate_restore(&r(survivor, RestoreMode::NewCluster, new_cluster.clone()))),
        ["spec.source.member"]
    );
    let copy_alone = RestoreSource { s3: s3.s3.clone(), copy: Some("other".into()), ..RestoreSource::default() };
    assert_eq!(fields(&validate_restore(&r(copy_alone, RestoreMode::InPlace, None))), ["spec.source.copy"]);
    let both = RestoreSource { backup: backup.backup.clone(), s3: s3.s3.clone(), ..RestoreSource::default() };
    assert_eq!(fields(&validate_restore(&r(both, RestoreMode::InPlace, None))), ["spec.source"]);
    assert_eq!(fields(&validate_restore(&r(RestoreSource::default(), RestoreMode::InPlace, None))), ["spec.source"]);
    assert_eq!(fields(&validate_restore(&r(backup.clone(), RestoreMode::NewCluster, None))), ["spec.newCluster"]);
    assert_eq!(fields(&validate_restore(&r(backup.clone(), RestoreMode::InPlace, new_cluster))), ["spec.newCluster"]);
    let bad_size = Some(EtcdClusterSpec { size: 4, ..cluster("version: 3.5.17") });
    assert_eq!(fields(&validate_restore(&r(backup.clone(), RestoreMode::NewCluster, bad_size))), ["spec.size"]);
    // A point in time: only through a schedule, and exactly one of revision or time.
    let schedule =
        RestoreSource { schedule: Some(LocalObjectRef { name: "every-6h".into() }), ..RestoreSource::default() };
    let at = |revision: Option<i64>, time: Option<&str>| {
        Some(PointInTime { revision, time: time.map(|t| Time(t.parse().unwrap())) })
    };
    let pit = |source: RestoreSource, point| EtcdRestoreSpec {
        point_in_time: point,
        ..r(source, RestoreMode::NewCluster, Some(cluster("version: 3.5.17")))
    };
    assert!(validate_restore(&pit(schedule.clone(), None)).is_empty(), "the latest point");
    assert!(validate_restore(&pit(schedule.clone(), at(Some(123), None))).is_empty());
    assert!(validate_restore(&pit(schedule.clone(), at(None, Some("2026-12-07T10:15:00Z")))).is_empty());
    assert_eq!(
        fields(&validate_restore(&pit(schedule.clone(), at(Some(1), Some("2026-12-07T10:15:00Z"))))),
        ["spec.pointInTime"]
    );
    assert_eq!(fields(&validate_restore(&pit(schedule, at(None, None)))), ["spec.pointInTime"]);
    assert_eq!(
        fields(&validate_restore(&pit(backup, at(Some(5), None)))),
        ["spec.pointInTime"],
        "a backup is one point"
    );
}
