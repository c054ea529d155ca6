use std::collections::HashMap;

use super::*;
use crate::etcd::{EndpointStatus, Member};

fn names() -> Names {
    Names { cluster: "main".into(), namespace: "prod".into(), tls: true }
}

fn member(n: &Names, id: u64, name: &str, learner: bool) -> Member {
    Member {
        id,
        name: name.into(),
        peer_urls: vec![n.peer_url(name)],
        client_urls: vec![n.client_url(name)],
        is_learner: learner,
    }
}

fn status(id: u64, leader: u64, version: &str) -> EndpointStatus {
    EndpointStatus {
        endpoint: String::new(),
        member_id: id,
        cluster_id: 0xabc,
        version: version.into(),
        db_size: 100,
        db_size_in_use: 60,
        leader,
        raft_index: 1,
        raft_term: 1,
        raft_applied_index: 1,
        is_learner: false,
        errors: Vec::new(),
        revision: 0,
    }
}

fn view3() -> EtcdView {
    let n = names();
    EtcdView {
        members: vec![member(&n, 1, "main-0", false), member(&n, 2, "main-1", false), member(&n, 3, "main-2", false)],
        statuses: HashMap::from([(1, status(1, 1, "3.5.1")), (2, status(2, 1, "3.4.23")), (3, status(3, 1, "3.5.1"))]),
        unconfirmed: false,
    }
}

fn input<'a>(
    view: Option<&'a EtcdView>,
    step: &'a Step,
    problems: &'a [String],
    prev: Option<&'a EtcdClusterStatus>,
) -> Input<'a> {
    static NAMES: std::sync::OnceLock<Names> = std::sync::OnceLock::new();
    static READY: CertState = CertState::Ready { generation: 0 };
    Input {
        names: NAMES.get_or_init(names),
        size: 3,
        generation: Some(4),
        pods: &[],
        etcd: view,
        step,
        paused: false,
        problems,
        certificates: &READY,
        previous: prev,
        now: Time(jiff::Timestamp::from_second(1_000).unwrap()),
        quota: 1000,
        warn_at_percent: 80,
        compaction_conflict: None,
        outcome: &Outcome::None,
        storage: (true, "AtSize", "every member volume has spec.storage.size (4Gi)".into()),
        placement: None,
        spec_version: "3.4.23",
        failure: None,
    }
}

fn cond<'a>(s: &'a EtcdClusterStatus, t: &str) -> &'a Condition {
    s.conditions.iter().find(|c| c.type_ == t).unwrap()
}

#[test]
fn a_removed_members_pod_stuck_terminating_says_so() {
    let pod = |name: &str, deleting: bool| -> Pod {
        let mut meta = serde_json::json!({"name": name, "namespace": "ns"});
        if deleting {
            meta["deletionTimestamp"] = "2026-11-23T00:00:00Z".into();
        }
        serde_json::from_value(serde_json::json!({"metadata": meta})).unwrap()
    };
    let v = view3();
    let rows = members(&names(), &[pod("main-3", true), pod("main-4", false)], Some(&v));
    let row = |n: &str| rows.iter().find(|m| m.name == n).unwrap();
    assert_eq!(rows.len(), 5);
    assert!(row("main-3").id.is_empty() && !row("main-3").healthy);
    assert_eq!(
        row("main-3").errors,
        vec!["removed from etcd; its pod is terminating (its node may be unreachable)".to_string()]
    );
    assert_eq!(row("main-4").errors, vec!["not a member of etcd".to_string()]);
}

#[test]
fn healthy_cluster() {
    let v = view3();
    let s = build(&input(Some(&v), &Step::Idle, &[], None));
    assert_eq!(s.ready_members, 3);
    assert_eq!(s.leader.as_deref(), Some("main-0"));
    assert_eq!(s.version.as_deref(), Some("3.4.23"), "the lowest version running");
    assert_eq!(s.cluster_id.as_deref(), Some("abc"));
    assert_eq!(s.client_endpoints[0], "https://main-client.prod.svc:2379");
    assert_eq!(s.client_endpoints.len(), 4);
    assert_eq!(s.members[1].id, "2");
    assert_eq!(s.members[1].db_size_in_use, Some(60));
    assert_eq!(cond(&s, AVAILABLE).status, "True");
    assert_eq!(cond(&s, PROGRESSING).status, "False");
    assert_eq!(cond(&s, DEGRADED).status, "False");
    assert_eq!(cond(&s, SPEC_VALID).status, "True");
    assert_eq!(cond(&s, AVAILABLE).observed_generation, Some(4));
}

#[test]
fn a_dead_member_degrades_without_losing_availability() {
    let mut v = view3();
    v.statuses.remove(&3);
    let s = build(&input(Some(&v), &Step::Wait("x".into()), &[], None));
    assert_eq!(s.ready_members, 2);
    assert_eq!(cond(&s, AVAILABLE).status, "True");
    assert_eq!(cond(&s, DEGRADED).reason, "MembersUnhealthy");
    assert_eq!(cond(&s, PROGRESSING).status, "True");
    assert_eq!(s.members[2].errors, ["does not answer"]);
    v.statuses.remove(&2);
    let s = build(&input(Some(&v), &Step::Idle, &[], None));
    assert_eq!(cond(&s, AVAILABLE).reason, "NoQuorum");
}

#[test]
fn no_answer_keeps_what_was_known() {
    let prev = build(&input(Some(&view3()), &Step::Idle, &[], None));
    let s = build(&input(None, &Step::Wait("w".into()), &[], Some(&prev)));
    assert_eq!(cond(&s, AVAILABLE).reason, "NoAnswer");
    assert_eq!(s.cluster_id.as_deref(), Some("abc"), "the cluster id says it was bootstrapped");
    assert_eq!(s.version.as_deref(), Some("3.4.23"));
}

#[test]
fn invalid_spec_and_blocked_steps_say_why() {
    let v = view3();
    let problems = vec!["spec.version: cannot jump".to_string()];
    let s = build(&input(Some(&v), &Step::Idle, &problems, None));
    assert_eq!(cond(&s, SPEC_VALID).status, "False");
    assert_eq!(cond(&s, SPEC_VALID).message, "spec.version: cannot jump");
    assert_eq!(cond(&s, PROGRESSING).reason, "SpecInvalid");
    let s = build(&input(Some(&v), &Step::Blocked("short of quorum".into()), &[], None));
    assert_eq!(cond(&s, DEGRADED).reason, "Blocked");
    assert_eq!(cond(&s, DEGRADED).message, "short of quorum");
}

#[test]
fn an_alarm_is_a_condition_and_leaves_members_healthy() {
    let mut v = view3();
    for s in v.statuses.values_mut() {
        s.errors.push("memberID:2 alarm:NOSPACE ".into());
    }
    let s = build(&input(Some(&v), &Step::Idle, &[], None));
    assert_eq!(s.ready_members, 3, "NOSPACE does not make members unhealthy");
    assert!(s.members.iter().all(|m| m.healthy && m.errors.is_empty()), "{:?}", s.members);
    assert_eq!((cond(&s, ALARM).status.as_str(), cond(&s, ALARM).reason.as_str()), ("True", "NOSPACE"));
    assert_eq!(cond(&s, AVAILABLE).status, "True");
    let clear = build(&input(Some(&view3()), &Step::Idle, &[], None));
    assert_eq!(cond(&clear, ALARM).status, "False");
}

#[test]
fn the_backup_controllers_field_is_left_to_it() {
    let mut prev = build(&input(Some(&view3()), &Step::Idle, &[], None));
    prev.last_backup = Some(Default::default());
    let s = build(&input(Some(&view3()), &Step::Idle, &[], Some(&prev)));
    assert_eq!(s.last_backup, None, "not in what this controller applies");
}

#[test]
fn transition_time_moves_only_with_the_status() {
    let v = view3();
    let first = build(&input(Some(&v), &Step::Idle, &[], None));
    let mut later = input(Some(&v), &Step::Idle, &[], Some(&first));
    later.now = Time(jiff::Timestamp::from_second(2_000).unwrap());
    let second = build(&later);
    assert_eq!(cond(&second, AVAILABLE).last_transition_time, cond(&first, AVAILABLE).last_transition_time);
    let step = Step::AddLearner { name: "main-3".into() };
    later.step = &step;
    let third = build(&later);
    assert_eq!(cond(&third, PROGRESSING).last_transition_time.0.as_second(), 2_000);
    assert_eq!(cond(&third, PROGRESSING).message, "adding main-3 as a learner");
}

#[test]
fn quota_high_maintenance_failing_and_two_compactors_are_conditions() {
    // view3: db files of 100 bytes, 60 in use; quota 1000 in `input`.
    let v = view3();
    let s = build(&input(Some(&v), &Step::Idle, &[], None));
    assert_eq!(cond(&s, QUOTA_HIGH).status, "False");
    assert_eq!(s.members[0].quota_used_percent, Some(10));
    assert_eq!(s.members[0].fragmentation_percent, Some(40));
    let mut near = input(Some(&v), &Step::Idle, &[], None);
    near.quota = 120;
    let s = build(&near);
    assert_eq!(
        (cond(&s, QUOTA_HIGH).status.as_str(), cond(&s, QUOTA_HIGH).reason.as_str()),
        ("True", "AboveWarnLevel")
    );
    assert!(cond(&s, QUOTA_HIGH).message.contains("main-0 83%"), "{}", cond(&s, QUOTA_HIGH).message);
    // Three failures in a row, carried from the previous status.
    let mut prev = build(&input(Some(&v), &Step::Idle, &[], None));
    prev.members[1].defrag_failures = 2;
    let failed = Outcome::DefragFailed { name: "main-1".into(), at: jiff::Timestamp::from_second(999).unwrap() };
    let mut i = input(Some(&v), &Step::Idle, &[], Some(&prev));
    i.outcome = &failed;
    let s = build(&i);
    assert_eq!(s.members[1].defrag_failures, 3);
    assert_eq!(cond(&s, MAINTENANCE_FAILING).status, "True");
    assert!(cond(&s, MAINTENANCE_FAILING).message.contains("main-1 (3 in a row)"));
    let mut i = input(Some(&v), &Step::Idle, &[], None);
    i.compaction_conflict = Some("both compact".into());
    assert_eq!(cond(&build(&i), COMPACTION_CONFLICT).reason, "TwoCompactors");
}

#[test]
fn a_corrupt_alarm_marks_its_member() {
    let mut v = view3();
    for s in v.statuses.values_mut() {
        s.errors.push("memberID:2 alarm:CORRUPT ".into());
    }
    let s = build(&input(Some(&v), &Step::Idle, &[], None));
    let corrupt: Vec<&str> = s.members.iter().filter(|m| m.corrupt).map(|m| m.name.as_str()).collect();
    assert_eq!(corrupt, ["main-1"]);
    assert_eq!(cond(&s, ALARM).reason, "CORRUPT");
}
