//! Turns what was read from Kubernetes and etcd into the planner's [`Observation`]:
//! pure, so the mapping (which pod is failed, which member is which, what leads) is
//! unit-tested without a cluster.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt;

use super::plan::{MemberState, Observation, PodState, ordinal_of};
use crate::etcd::{EndpointStatus, Member};
use crate::shared::names::Names;

use crate::shared::names::{CLUSTER_ID_ANNOTATION, REMOVED_ANNOTATION, SPEC_HASH_ANNOTATION, VERSION_ANNOTATION};

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

/// Whether the pod's containers run and the newest of them started less than `secs`
/// ago: a member just started, whose etcd serves before its probes (every 5 s) say so.
pub fn started_within(pod: &Pod, now: jiff::Timestamp, secs: i64) -> bool {
    let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.as_ref());
    let started = statuses.and_then(|cs| {
        cs.iter()
            .map(|c| c.state.as_ref().and_then(|s| s.running.as_ref()).and_then(|r| r.started_at.as_ref()))
            .collect::<Option<Vec<_>>>()
    });
    started.and_then(|ts| ts.into_iter().map(|t| t.0).max()).is_some_and(|t| (now - t).get_seconds() < secs)
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
#[path = "observe_tests.rs"]
mod tests;
