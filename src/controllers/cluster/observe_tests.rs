use super::*;
use serde_json::json;

fn names() -> Names {
    Names { cluster: "main".into(), namespace: "prod".into(), tls: true }
}

fn pod(v: serde_json::Value) -> Pod {
    serde_json::from_value(v).unwrap()
}

fn status(id: u64, leader: u64, learner: bool) -> EndpointStatus {
    EndpointStatus {
        endpoint: String::new(),
        member_id: id,
        cluster_id: 7,
        version: "3.4.23".into(),
        db_size: 1,
        db_size_in_use: 1,
        leader,
        raft_index: 1,
        raft_term: 1,
        raft_applied_index: 1,
        is_learner: learner,
        errors: Vec::new(),
        revision: 0,
    }
}

#[test]
fn pods_members_and_volumes_are_mapped() {
    let n = names();
    let pods = vec![
        pod(json!({"metadata": {"name": "main-0", "annotations": {VERSION_ANNOTATION: "3.4.23"}},
                   "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})),
        pod(json!({"metadata": {"name": "main-1", "deletionTimestamp": "2026-11-22T10:00:00Z"},
                   "status": {"phase": "Running"}})),
        pod(json!({"metadata": {"name": "main-2"},
                   "status": {"phase": "Running", "containerStatuses": [{"name": "etcd", "ready": false, "restartCount": 5,
                     "image": "x", "imageID": "", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}})),
    ];
    let pvcs: Vec<PersistentVolumeClaim> = ["data-main-0", "data-main-1", "data-main-7"]
        .iter()
        .map(|n| serde_json::from_value(json!({"metadata": {"name": n}})).unwrap())
        .collect();
    let view = EtcdView {
        members: vec![
            Member {
                id: 1,
                name: "main-0".into(),
                peer_urls: vec![n.peer_url("main-0")],
                client_urls: vec![],
                is_learner: false,
            },
            Member {
                id: 2,
                name: "main-2".into(),
                peer_urls: vec![n.peer_url("main-2")],
                client_urls: vec![],
                is_learner: false,
            },
            // Added, never started: no name yet.
            Member {
                id: 3,
                name: String::new(),
                peer_urls: vec![n.peer_url("main-8")],
                client_urls: vec![],
                is_learner: true,
            },
        ],
        statuses: HashMap::from([(1, status(1, 1, false)), (3, status(3, 1, true))]),
        unconfirmed: false,
    };
    let unhealthy = HashMap::from([("main-2".to_string(), 42)]);
    let records = Records { cluster_id_recorded: true, bootstrap: None };
    let o = observation(&n, &pods, &pvcs, Some(&view), &records, &unhealthy, jiff::Timestamp::UNIX_EPOCH);

    assert_eq!(
        o.pods[0],
        PodState {
            name: "main-0".into(),
            ready: true,
            terminating: false,
            failed: false,
            version: "3.4.23".into(),
            spec_hash: None,
            trust: None,
            down_for_secs: 0,
            node: None,
            unplaced: None,
            one_per_node: false,
            containers_gone: false,
        }
    );
    assert!(o.pods[1].terminating && !o.pods[1].ready);
    assert!(o.pods[2].failed);
    assert_eq!(o.volumes, BTreeSet::from(["main-0".into(), "main-1".into(), "main-7".into()]));
    let m = o.members.as_ref().unwrap();
    assert_eq!((m[0].name.as_str(), m[0].leader, m[0].healthy), ("main-0", true, true));
    assert_eq!(
        (m[1].name.as_str(), m[1].healthy, m[1].unhealthy_for_secs),
        ("main-2", false, 42),
        "no status: unhealthy"
    );
    assert_eq!((m[2].name.as_str(), m[2].learner, m[2].healthy), ("main-8", true, true), "named by its peer URL");
    assert_eq!(o.highest_ordinal, Some(8), "ordinals of pods, volumes and members are never reused");
    assert!(o.formed);
}

#[test]
fn volumes_kept_after_removal_or_being_deleted_are_no_members_but_keep_their_ordinals() {
    let pvcs: Vec<PersistentVolumeClaim> = vec![
        serde_json::from_value(json!({"metadata": {"name": "data-main-0"}})).unwrap(),
        serde_json::from_value(
            json!({"metadata": {"name": "data-main-9", "annotations": {REMOVED_ANNOTATION: "true"}}}),
        )
        .unwrap(),
        serde_json::from_value(
            json!({"metadata": {"name": "data-main-4", "deletionTimestamp": "2026-11-22T10:00:00Z"}}),
        )
        .unwrap(),
    ];
    let o = observation(&names(), &[], &pvcs, None, &Records::default(), &HashMap::new(), jiff::Timestamp::UNIX_EPOCH);
    assert_eq!(o.volumes, BTreeSet::from(["main-0".into()]), "retained and terminating volumes are no member's");
    let replaced: Vec<PersistentVolumeClaim> = vec![
        serde_json::from_value(json!({"metadata": {
        "name": "data-main-1", "annotations": {REMOVED_ANNOTATION: "delete", CLUSTER_ID_ANNOTATION: "abc"}}}))
        .unwrap(),
    ];
    let r =
        observation(&names(), &[], &replaced, None, &Records::default(), &HashMap::new(), jiff::Timestamp::UNIX_EPOCH);
    assert!(!r.formed, "a removed member's volume is no evidence that this cluster formed");
    assert_eq!(o.highest_ordinal, Some(9));
}

#[test]
fn a_cluster_id_on_any_member_volume_means_formed_whatever_the_status_says() {
    let pvcs: Vec<PersistentVolumeClaim> = vec![
        serde_json::from_value(json!({"metadata": {"name": "data-main-0"}})).unwrap(),
        serde_json::from_value(
            json!({"metadata": {"name": "data-main-1", "annotations": {CLUSTER_ID_ANNOTATION: "abc"}}}),
        )
        .unwrap(),
    ];
    let o = observation(&names(), &[], &pvcs, None, &Records::default(), &HashMap::new(), jiff::Timestamp::UNIX_EPOCH);
    assert!(o.formed);
    let rec = Records { cluster_id_recorded: false, bootstrap: Some(vec!["main-0".into()]) };
    let o = observation(&names(), &[], &pvcs[..1], None, &rec, &HashMap::new(), jiff::Timestamp::UNIX_EPOCH);
    assert!(!o.formed);
    assert_eq!(o.bootstrap, Some(vec!["main-0".to_string()]));
}

#[test]
fn alarms_are_cluster_state_not_member_health() {
    let mut s = status(1, 1, false);
    s.errors = vec!["memberID:1 alarm:NOSPACE ".into()];
    assert!(member_healthy(Some(&s), false), "an alarm does not make a member unhealthy");
    assert_eq!(s.alarms(), vec!["NOSPACE".to_string()]);
    let mut other = status(2, 1, false);
    other.errors = vec!["memberID:1 alarm:NOSPACE ".into(), "memberID:2 alarm:CORRUPT ".into()];
    let view = EtcdView { statuses: HashMap::from([(1, s.clone()), (2, other)]), ..EtcdView::default() };
    assert_eq!(alarms(&view), vec!["CORRUPT".to_string(), "NOSPACE".to_string()]);
    assert_eq!(alarm_members(&view), vec![(1, "NOSPACE".to_string()), (2, "CORRUPT".to_string())]);
    s.errors.push("etcdserver: no leader".into());
    assert!(!member_healthy(Some(&s), false), "its own errors do");
    assert!(!member_healthy(None, false), "no answer: unhealthy");
}

#[test]
fn a_pod_is_down_since_it_stopped_being_ready_or_was_created() {
    let now = jiff::Timestamp::from_second(1_000).unwrap();
    let at = |s: i64| jiff::Timestamp::from_second(s).unwrap().to_string();
    let fresh =
        pod(json!({"metadata": {"name": "main-1", "creationTimestamp": at(990)}, "status": {"phase": "Pending"}}));
    assert_eq!(pod_down_for(&fresh, now), 10, "a new pod: since it was created");
    let fell = pod(json!({"metadata": {"name": "main-1", "creationTimestamp": at(100)}, "status": {"phase": "Running",
        "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": at(700)}]}}));
    assert_eq!(pod_down_for(&fell, now), 300);
    let ok = pod(json!({"metadata": {"name": "main-1", "creationTimestamp": at(100)}, "status": {"phase": "Running",
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": at(700)}]}}));
    assert_eq!(pod_down_for(&ok, now), 0);
}

#[test]
fn a_pod_started_moments_ago_is_one_whose_containers_all_run_since_then() {
    let now = jiff::Timestamp::from_second(1_000).unwrap();
    let at = |s: i64| jiff::Timestamp::from_second(s).unwrap().to_string();
    let with = |states: serde_json::Value| {
        pod(json!({"metadata": {"name": "main-3"}, "status": {"phase": "Running", "containerStatuses": states}}))
    };
    let running = |since: i64| json!({"name": "etcd", "state": {"running": {"startedAt": at(since)}}});
    for (case, p, just) in [
        ("started 3 s ago", with(json!([running(997)])), true),
        ("started 19 s ago", with(json!([running(981)])), true),
        ("started 20 s ago", with(json!([running(980)])), false),
        ("running for long", with(json!([running(100)])), false),
        (
            "crashing (waiting)",
            with(json!([{"name": "etcd", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}])),
            false,
        ),
        (
            "one of two not running",
            with(json!([running(997), {"name": "x", "state": {"terminated": {"exitCode": 1}}}])),
            false,
        ),
        ("no status yet", pod(json!({"metadata": {"name": "main-3"}})), false),
    ] {
        assert_eq!(started_within(&p, now, 20), just, "{case}");
    }
}

#[test]
fn pod_problems_say_what_to_fix() {
    let pull = pod(json!({"metadata": {"name": "main-0"}, "status": {"phase": "Pending", "containerStatuses": [{
        "name": "etcd", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
        "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"etcd:v9\""}}}]}}));
    assert_eq!(pod_problem(&pull).as_deref(), Some("ImagePullBackOff: Back-off pulling image \"etcd:v9\""));
    let unsched = pod(json!({"metadata": {"name": "main-0"}, "status": {"phase": "Pending", "conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/6 nodes are available"}]}}));
    assert_eq!(pod_problem(&unsched).as_deref(), Some("Unschedulable: 0/6 nodes are available"));
    let crash = pod(json!({"metadata": {"name": "main-0"}, "status": {"phase": "Running", "containerStatuses": [{
        "name": "etcd", "ready": false, "restartCount": 4, "image": "x", "imageID": "",
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
        "lastState": {"terminated": {"exitCode": 1, "message": "member has already been bootstrapped\n"}}}]}}));
    assert_eq!(
        pod_problem(&crash).as_deref(),
        Some("CrashLoopBackOff: back-off 40s (last exit 1: member has already been bootstrapped)")
    );
    assert_eq!(pod_unplaced(&unsched).as_deref(), Some("0/6 nodes are available"), "the scheduler's words");
    let ended = pod(json!({"metadata": {"name": "main-0"}, "status": {"phase": "Running", "containerStatuses": [{
        "name": "etcd", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
        "state": {"terminated": {"exitCode": 0}}}]}}));
    assert!(containers_gone(&ended), "every container terminated");
    assert!(!containers_gone(&crash), "a crash loop is waiting, not gone");
    assert!(!containers_gone(&unsched), "no container status at all is no word from the kubelet");
    assert_eq!(pod_unplaced(&pull), None, "no PodScheduled=False");
    let placed = pod(json!({"metadata": {"name": "main-0"}, "spec": {"containers": [], "nodeName": "w1"},
        "status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}}));
    assert_eq!(pod_unplaced(&placed), None, "a pod with a node is placed, whatever a stale condition says");
    let creating = pod(json!({"metadata": {"name": "main-0"}, "status": {"phase": "Pending", "containerStatuses": [{
        "name": "etcd", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
        "state": {"waiting": {"reason": "ContainerCreating"}}}]}}));
    assert_eq!(pod_problem(&creating), None, "starting is no problem");
}

#[test]
fn no_answer_from_etcd_is_no_member_list() {
    let o = observation(&names(), &[], &[], None, &Records::default(), &HashMap::new(), jiff::Timestamp::UNIX_EPOCH);
    assert!(o.members.is_none());
    assert!(!o.formed);
    assert_eq!(o.highest_ordinal, None);
}
