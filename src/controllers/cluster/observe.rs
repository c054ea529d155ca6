//! Turns what was read from Kubernetes and etcd into the planner's [`Observation`]:
//! pure, so the mapping (which pod is failed, which member is which, what leads) is
//! unit-tested without a cluster.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt;

use super::build::Names;
use super::plan::{MemberState, Observation, PodState, ordinal_of};
use crate::etcd::{EndpointStatus, Member};

pub use super::build::{CLUSTER_ID_ANNOTATION, SPEC_HASH_ANNOTATION, VERSION_ANNOTATION};

/// Annotation of a PVC kept after its member was removed.
pub const REMOVED_ANNOTATION: &str = "etcdpilot.io/removed-member";

/// What etcd said: the member list and each member's own status (by member id).
#[derive(Clone, Debug, Default)]
pub struct EtcdView {
    pub members: Vec<Member>,
    pub statuses: HashMap<u64, EndpointStatus>,
    /// The member list is not the leader's (no leader answered): a follower's, which
    /// may not have applied the latest membership change.
    pub unconfirmed: bool,
}

/// A pod that restarts and keeps failing, or has failed for good.
pub fn pod_failed(pod: &Pod) -> bool {
    let Some(status) = &pod.status else { return false };
    if status.phase.as_deref() == Some("Failed") {
        return true;
    }
    status.container_statuses.iter().flatten().any(|c| {
        c.state.as_ref().and_then(|s| s.waiting.as_ref()).and_then(|w| w.reason.as_deref()) == Some("CrashLoopBackOff")
    })
}

/// Why a member pod does not run, in words a user can act on: an image that cannot be
/// pulled, a pod that cannot be scheduled, a volume that does not mount, a container
/// that keeps crashing (with its last words).
pub fn pod_problem(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    for c in status.container_statuses.iter().flatten() {
        if let Some(w) = c.state.as_ref().and_then(|s| s.waiting.as_ref()) {
            let reason = w.reason.as_deref().unwrap_or_default();
            if reason == "ContainerCreating" || reason == "PodInitializing" {
                continue;
            }
            let msg = w.message.clone().unwrap_or_default();
            let last = c
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .map(|t| {
                    format!(
                        " (last exit {}{})",
                        t.exit_code,
                        t.message.as_deref().map(|m| format!(": {}", m.trim())).unwrap_or_default()
                    )
                })
                .unwrap_or_default();
            return Some(format!("{reason}: {msg}{last}").trim_end_matches([' ', ':']).to_string());
        }
    }
    for c in status.conditions.iter().flatten() {
        if c.type_ == "PodScheduled" && c.status == "False" {
            return Some(format!(
                "{}: {}",
                c.reason.as_deref().unwrap_or("Unschedulable"),
                c.message.as_deref().unwrap_or_default()
            ));
        }
    }
    if status.phase.as_deref() == Some("Failed") {
        return Some(format!("Failed: {}", status.message.as_deref().unwrap_or_default()));
    }
    None
}

/// Every container of the pod is reported terminated (none waiting or running), as the
/// kubelet says once a deleted pod's processes are gone.
pub fn containers_gone(pod: &Pod) -> bool {
    let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    statuses
        .is_some_and(|cs| !cs.is_empty() && cs.iter().all(|c| c.state.as_ref().is_some_and(|s| s.terminated.is_some())))
}

/// Why no node took the pod, in the scheduler's words, while none has.
pub fn pod_unplaced(pod: &Pod) -> Option<String> {
    if pod.spec.as_ref().is_some_and(|s| s.node_name.is_some()) {
        return None;
    }
    let c =
        pod.status.as_ref()?.conditions.iter().flatten().find(|c| c.type_ == "PodScheduled" && c.status == "False")?;
    Some(
        c.message
            .clone()
            .filter(|m| !m.is_empty())
            .or_else(|| c.reason.clone())
            .unwrap_or_else(|| "Unschedulable".into()),
    )
}

/// How long the pod has not been ready: since its Ready condition last turned false, or
/// since it was created (a new pod is given the whole deadline to become ready). 0 when
/// it is ready.
pub fn pod_down_for(pod: &Pod, now: jiff::Timestamp) -> u64 {
    if pod_ready(pod) {
        return 0;
    }
    let ready_changed = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0);
    let created = pod.metadata.creation_timestamp.as_ref().map(|t| t.0);
    match ready_changed.into_iter().chain(created).max() {
        Some(since) => u64::try_from((now - since).get_seconds()).unwrap_or(0),
        None => 0,
    }
}

pub fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether a cluster formed, and what bootstrap was begun, as recorded durably: on the
/// EtcdCluster (annotations, and its status) and on the member volumes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Records {
    /// A cluster id is recorded on the EtcdCluster (annotation or status).
    pub cluster_id_recorded: bool,
    /// The members of a bootstrap recorded before its first pod was created.
    pub bootstrap: Option<Vec<String>>,
}

/// Builds the planner's view. `unhealthy_for` says, by member name, how long a member
/// has been unhealthy (kept by the controller between passes).
pub fn observation(
    names: &Names,
    pods: &[Pod],
    pvcs: &[PersistentVolumeClaim],
    etcd: Option<&EtcdView>,
    records: &Records,
    unhealthy_for: &HashMap<String, u64>,
    now: jiff::Timestamp,
) -> Observation {
    let pods: Vec<PodState> = pods
        .iter()
        .map(|p| PodState {
            name: p.name_any(),
            ready: pod_ready(p),
            terminating: p.metadata.deletion_timestamp.is_some(),
            failed: pod_failed(p),
            version: p.annotations().get(VERSION_ANNOTATION).cloned().unwrap_or_default(),
            spec_hash: p.annotations().get(SPEC_HASH_ANNOTATION).cloned(),
            trust: p.annotations().get(super::ca_rotation::TRUST_ANNOTATION).cloned(),
            down_for_secs: pod_down_for(p, now),
            node: p.spec.as_ref().and_then(|s| s.node_name.clone()),
            unplaced: pod_unplaced(p),
            one_per_node: p
                .spec
                .as_ref()
                .and_then(|s| s.affinity.as_ref())
                .and_then(|a| a.pod_anti_affinity.as_ref())
                .and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref())
                .is_some_and(|r| !r.is_empty()),
            containers_gone: containers_gone(p),
        })
        .collect();
    // A volume kept after its member was removed (retention `Retain`) is no member's,
    // and one being deleted is gone already: both only keep their ordinals from reuse.
    let retained: BTreeSet<String> = pvcs
        .iter()
        .filter(|c| c.annotations().contains_key(REMOVED_ANNOTATION) || c.metadata.deletion_timestamp.is_some())
        .filter_map(|c| c.name_any().strip_prefix("data-").map(str::to_string))
        .collect();
    let volumes: BTreeSet<String> = pvcs
        .iter()
        .filter_map(|c| c.name_any().strip_prefix("data-").map(str::to_string))
        .filter(|v| !retained.contains(v))
        .collect();
    let members = etcd.map(|view| {
        view.members
            .iter()
            .map(|m| {
                // A learner that never started has no name in etcd: its peer URL names it.
                let name =
                    m.peer_urls.iter().find_map(|u| names.member_of_peer_url(u)).unwrap_or_else(|| m.name.clone());
                let status = view.statuses.get(&m.id);
                let healthy = member_healthy(status, m.is_learner);
                MemberState {
                    id: m.id,
                    leader: status.is_some_and(EndpointStatus::is_leader),
                    learner: m.is_learner,
                    healthy,
                    unhealthy_for_secs: if healthy { 0 } else { unhealthy_for.get(&name).copied().unwrap_or(0) },
                    name,
                }
            })
            .collect::<Vec<_>>()
    });
    let highest_ordinal = pods
        .iter()
        .map(|p| p.name.as_str())
        .chain(volumes.iter().chain(&retained).map(String::as_str))
        .chain(members.iter().flatten().map(|m| m.name.as_str()))
        .filter_map(ordinal_of)
        .max();
    // A removed member's volume (kept by retention, or by an in-place restore that
    // replaced every member) is evidence of nothing.
    let formed = records.cluster_id_recorded
        || pvcs.iter().any(|c| {
            c.annotations().contains_key(CLUSTER_ID_ANNOTATION)
                && !c.name_any().strip_prefix("data-").is_some_and(|m| retained.contains(m))
        });
    Observation {
        pods,
        volumes,
        members,
        members_unconfirmed: etcd.is_some_and(|v| v.unconfirmed),
        formed,
        bootstrap: records.bootstrap.clone(),
        highest_ordinal,
        ..Observation::default()
    }
}

/// Member health, as the planner, the status and the timers all read it.
pub fn member_healthy(status: Option<&EndpointStatus>, learner: bool) -> bool {
    match status {
        Some(s) if learner => s.is_healthy_learner(),
        Some(s) => s.is_healthy(),
        None => false,
    }
}

/// The alarms active in the cluster (every member reports all of them).
pub fn alarms(view: &EtcdView) -> Vec<String> {
    let mut out: Vec<String> = view.statuses.values().flat_map(EndpointStatus::alarms).collect();
    out.sort();
    out.dedup();
    out
}

/// The alarms active in the cluster with the member each is about: `(member id, kind)`.
/// etcd reports them as `memberID:<decimal id> alarm:<KIND>`.
pub fn alarm_members(view: &EtcdView) -> Vec<(u64, String)> {
    let mut out: Vec<(u64, String)> = view
        .statuses
        .values()
        .flat_map(|s| s.errors.iter())
        .filter_map(|e| {
            let id = e.split("memberID:").nth(1)?.split_whitespace().next()?.parse().ok()?;
            let kind = e.split("alarm:").nth(1)?.split_whitespace().next()?.to_string();
            Some((id, kind))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
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
        let o =
            observation(&names(), &[], &pvcs, None, &Records::default(), &HashMap::new(), jiff::Timestamp::UNIX_EPOCH);
        assert_eq!(o.volumes, BTreeSet::from(["main-0".into()]), "retained and terminating volumes are no member's");
        let replaced: Vec<PersistentVolumeClaim> = vec![
            serde_json::from_value(json!({"metadata": {
            "name": "data-main-1", "annotations": {REMOVED_ANNOTATION: "delete", CLUSTER_ID_ANNOTATION: "abc"}}}))
            .unwrap(),
        ];
        let r = observation(
            &names(),
            &[],
            &replaced,
            None,
            &Records::default(),
            &HashMap::new(),
            jiff::Timestamp::UNIX_EPOCH,
        );
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
        let o =
            observation(&names(), &[], &pvcs, None, &Records::default(), &HashMap::new(), jiff::Timestamp::UNIX_EPOCH);
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
        let fell =
            pod(json!({"metadata": {"name": "main-1", "creationTimestamp": at(100)}, "status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": at(700)}]}}));
        assert_eq!(pod_down_for(&fell, now), 300);
        let ok =
            pod(json!({"metadata": {"name": "main-1", "creationTimestamp": at(100)}, "status": {"phase": "Running",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": at(700)}]}}));
        assert_eq!(pod_down_for(&ok, now), 0);
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
        let creating =
            pod(json!({"metadata": {"name": "main-0"}, "status": {"phase": "Pending", "containerStatuses": [{
            "name": "etcd", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
            "state": {"waiting": {"reason": "ContainerCreating"}}}]}}));
        assert_eq!(pod_problem(&creating), None, "starting is no problem");
    }

    #[test]
    fn no_answer_from_etcd_is_no_member_list() {
        let o =
            observation(&names(), &[], &[], None, &Records::default(), &HashMap::new(), jiff::Timestamp::UNIX_EPOCH);
        assert!(o.members.is_none());
        assert!(!o.formed);
        assert_eq!(o.highest_ordinal, None);
    }
}
