//! The next single step for an etcd cluster: a pure function of what the user asked for
//! and what was observed. It does no IO, so every transition, including every state a
//! crash between two steps leaves behind, is a row in a table test.
//!
//! Rules, in order (the first that applies wins):
//! 1. paused, or another controller holds the cluster's operation slot (a restore, a
//!    snapshot): nothing.
//! 2. no answer from etcd: a cluster that durable evidence says formed (its recorded
//!    cluster id, on the EtcdCluster or on a member volume) is never bootstrapped again:
//!    recreate pods of members whose volumes survive, else wait. A recorded bootstrap
//!    is finished; a fresh cluster is bootstrapped only where no member pod or volume
//!    exists, as a single member: every further member joins as a learner (rules 6 and
//!    7), so none becomes a voter before its pod was placed and its etcd answers.
//! 3. a pod or volume etcd does not know of: a member removed before a crash; delete
//!    the pod, and the volume per retention (marked as no member's first). Only on the
//!    leader's member list: a follower may not have applied a member's add yet.
//! 4. a voter whose pod is gone: recreate the pod on its volume; with the volume gone
//!    too, remove the member (it is replaced below), if the rest keep quorum.
//! 5. a failed voter: etcd's view (unhealthy) and the pod's (not ready, or failed) agree
//!    for `replaceUnhealthyAfterSeconds`: remove it if the rest keep quorum, leadership
//!    moved first; it is replaced below.
//! 6. a learner: start its pod (added, pod not yet created), wait for it to catch up,
//!    promote it; one not healthy within the same deadline is removed and retried later.
//!    One whose pod no node can take waits (the scheduler places it when a node can),
//!    its pod replaced when the spec changes. Never a second learner (etcd 3.4 refuses
//!    one).
//! 7. fewer voters than asked: add one learner, only while every voter is healthy and
//!    a node can take it (one member per node: anti-affinity `Required`, or Stacked).
//! 8. more voters than asked: an unhealthy voter goes first; else, with every voter
//!    healthy, the highest ordinal, leadership moved away first.
//! 9. pods built from another spec (version, image, resources, tuning, scheduling):
//!    restart followers first, the leader last after moving leadership, one at a time,
//!    only while all are healthy.
//! 10. maintenance ([`super::maintenance`]): NOSPACE recovery, scheduled compaction,
//!     defragmentation; only while every voter is healthy.

use std::collections::BTreeSet;

use super::maintenance;
use super::step::Step;

/// What the user asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub size: usize,
    pub version: String,
    /// Hash of everything in a member pod that follows from the spec.
    pub spec_hash: String,
    /// During a CA rotation: the CAs every member must have been started trusting
    /// (fingerprint, see [`super::ca_rotation`]).
    pub trust: Option<String>,
    pub paused: bool,
    /// Replace a member that has been unhealthy this long; remove a learner not healthy
    /// within it.
    pub replace_unhealthy_after_secs: u64,
    /// Wait this long after giving up on a learner before adding another.
    pub learner_retry_after_secs: u64,
    /// Members keep their data in memory: a restart loses a member's data.
    pub memory: bool,
    /// The user accepts losing the data of a single-member Memory cluster on restart.
    pub allow_data_loss: bool,
    /// Defragmentation, compaction and NOSPACE policy.
    pub maintenance: Option<maintenance::Policy>,
    /// Members never share a node (anti-affinity `Required`, or Stacked).
    pub one_per_node: bool,
}

/// A member pod as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodState {
    /// Member name (= pod name).
    pub name: String,
    /// Running and passing its readiness probe.
    pub ready: bool,
    /// Being deleted.
    pub terminating: bool,
    /// Crash-looping, or Failed.
    pub failed: bool,
    /// etcd version of its image.
    pub version: String,
    /// The spec hash it was built from (`None`: built before hashes were recorded).
    pub spec_hash: Option<String>,
    /// Fingerprint of the CAs it was started trusting.
    pub trust: Option<String>,
    /// How long it has not been ready (since created, for a new pod); 0 when ready.
    pub down_for_secs: u64,
    /// The node it was placed on.
    pub node: Option<String>,
    /// No node took it: the scheduler's message (`PodScheduled=False`).
    pub unplaced: Option<String>,
    /// Built to never share a node with another member (required anti-affinity).
    pub one_per_node: bool,
    /// Every container of it is reported terminated (its etcd no longer runs).
    pub containers_gone: bool,
}

/// An etcd member as observed. `name` comes from its peer URL, so a learner that never
/// started (and so has no name in etcd) is still named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberState {
    pub id: u64,
    pub name: String,
    pub learner: bool,
    /// See [`super::health::member_healthy`]: the one definition of member health.
    pub healthy: bool,
    pub leader: bool,
    /// How long it has been unhealthy (0 when healthy).
    pub unhealthy_for_secs: u64,
}

/// Everything the planner looks at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    pub pods: Vec<PodState>,
    /// Members with a volume (PVC), by name.
    pub volumes: BTreeSet<String>,
    /// etcd's member list with health, or `None` when no member answered.
    pub members: Option<Vec<MemberState>>,
    /// The list is a follower's (no leader answered): it may lack a member just added,
    /// so it is no ground for deleting a pod or volume.
    pub members_unconfirmed: bool,
    /// Durable evidence that the cluster formed: a cluster id recorded on the
    /// EtcdCluster (annotation or status) or on a member volume.
    pub formed: bool,
    /// The members of a bootstrap recorded before its first pod was created.
    pub bootstrap: Option<Vec<String>>,
    /// Ordinals ever used in this cluster's member names: never reused, so a new member
    /// never meets an old member's data.
    pub highest_ordinal: Option<u32>,
    /// Seconds since a learner was last given up on, if recently.
    pub since_learner_given_up: Option<u64>,
    /// Another controller's operation holds the cluster's slot (what it is).
    pub slot_busy: Option<String>,
    /// Db files, alarms and maintenance records, for the maintenance rules.
    pub maintenance: Option<maintenance::Observed>,
    /// With one member per node (anti-affinity `Required`, or Stacked): the nodes a
    /// member may be placed on, by name. `None`: members may share nodes.
    pub placeable_nodes: Option<Vec<String>>,
}

/// Votes needed for a majority of `voters`.
pub fn quorum(voters: usize) -> usize {
    voters / 2 + 1
}

/// Name of the member with `ordinal`.
pub fn member_name(cluster: &str, ordinal: u32) -> String {
    format!("{cluster}-{ordinal}")
}

/// The ordinal in a member name, if it has one.
pub fn ordinal_of(name: &str) -> Option<u32> {
    name.rsplit('-').next()?.parse().ok()
}

/// The next step. `delete_volume_on_scale` is the PVC retention for removed members.
pub fn plan(cluster: &str, want: &Desired, obs: &Observation, delete_volume_on_scale: bool) -> Step {
    if want.paused {
        return Step::Idle;
    }
    if let Some(op) = &obs.slot_busy {
        return Step::Wait(format!("{op} is under way; membership changes wait for it"));
    }
    let next_name = || member_name(cluster, obs.highest_ordinal.map_or(0, |o| o + 1));

    let Some(members) = &obs.members else {
        return no_answer(cluster, want, obs);
    };

    let is_member = |name: &str| members.iter().any(|m| m.name == name);
    // A member's pod on its way out is waited for; the pod of a removed member is not (on
    // a lost node it may never finish terminating, and its member is gone already), nor
    // one whose etcd is over for good: every container reported terminated by the
    // kubelet and the member's volume deleted (no process serves it, and no pod can
    // ever come back with its data; its replacement takes a new name).
    let over = |p: &PodState| p.terminating && p.containers_gone && !obs.volumes.contains(&p.name);
    if let Some(p) = obs.pods.iter().find(|p| p.terminating && is_member(&p.name) && !over(p)) {
        return Step::Wait(format!("pod {} is terminating", p.name));
    }
    let pod = |name: &str| obs.pods.iter().find(|p| p.name == name && !over(p));

    // 3. Pods of members etcd no longer has (removed, then a crash before the delete),
    // on the leader's word only: a follower may not have applied a member's add yet.
    let unlisted = |name: &str| {
        if obs.members_unconfirmed {
            Step::Wait(format!("{name} is not in a follower's member list; waiting for the leader's"))
        } else {
            Step::DeletePod { name: name.to_string(), delete_volume: delete_volume_on_scale }
        }
    };
    if let Some(p) = obs.pods.iter().find(|p| !p.terminating && !is_member(&p.name)) {
        return unlisted(&p.name);
    }

    // A volume of a member etcd no longer has, its pod gone (a crash between the pod's
    // and the volume's deletion): handled per retention, never recreated as a member.
    if let Some(v) = obs.volumes.iter().find(|v| pod(v).is_none() && !members.iter().any(|m| &m.name == *v)) {
        return unlisted(v);
    }

    let voters: Vec<&MemberState> = members.iter().filter(|m| !m.learner).collect();
    let healthy_voters = voters.iter().filter(|m| m.healthy).count();
    let deadline = want.replace_unhealthy_after_secs;

    // 4. Voters whose pods are gone: before anything a learner waits for. When a
    // majority is gone with its volumes, quorum can never come back by itself: say so,
    // and do nothing (an EtcdRestore recovers, from a survivor or a backup).
    if let Some(lost) = quorum_lost_for_good(obs) {
        return Step::Blocked(format!(
            "quorum lost for good: {} of {} voting members are gone with their volumes ({}); nothing is done on its own: recover with an EtcdRestore (mode InPlace, source.member a survivor, or source.backup)",
            lost.len(),
            voters.len(),
            lost.join(", ")
        ));
    }
    for m in &voters {
        if pod(&m.name).is_some() {
            continue;
        }
        if obs.volumes.contains(&m.name) {
            return Step::RecreatePod { name: m.name.clone() };
        }
        return remove_if_safe(m, &voters, healthy_voters, "its pod and volume are gone");
    }

    // 5. Failed voters: etcd and the pod agree it is down, for long enough.
    let failed = voters.iter().find(|m| {
        let pod_down = pod(&m.name).is_some_and(|p| (p.failed || !p.ready) && p.down_for_secs >= deadline);
        !m.healthy && pod_down && m.unhealthy_for_secs >= deadline
    });
    if let Some(m) = failed {
        if m.leader
            && let Some(to) = voters.iter().find(|o| o.id != m.id && o.healthy)
        {
            return Step::MoveLeader { to: to.id, to_name: to.name.clone(), reason: format!("{} is failing", m.name) };
        }
        return remove_if_safe(m, &voters, healthy_voters, &format!("it has been down for {}s", m.unhealthy_for_secs));
    }

    // 6. A learner: finish what was started, or give up on it after the deadline.
    if let Some(l) = members.iter().find(|m| m.learner) {
        // No node takes its pod: it waits, never given up on (a learner does not vote,
        // and trying again elsewhere cannot help); the scheduler places it as soon as a
        // node can. Built from another spec (perhaps the one that kept it out), its pod
        // is replaced by one from the current spec.
        if let Some(p) = pod(&l.name)
            && let Some(why) = &p.unplaced
        {
            if pod_stale(p, want).is_some() {
                return Step::ReplacePod { name: l.name.clone(), initial: None };
            }
            // The members' own pods may be what keeps it out: built when members never
            // shared a node (anti-affinity Required), which the spec no longer asks. They
            // are rolled onto the current spec meanwhile, each back on its own node.
            let kept_out_by_old_pods = !want.one_per_node
                && voters.iter().any(|m| pod(&m.name).is_some_and(|v| v.one_per_node && pod_stale(v, want).is_some()));
            if kept_out_by_old_pods && let Some(step) = roll(want, obs, &voters, healthy_voters, Some(&l.name)) {
                return step;
            }
            return Step::Wait(format!("learner {} cannot be placed: {why}", l.name));
        }
        return match pod(&l.name) {
            // Its pod cannot be created (a quota, an admission webhook): give up on it too.
            None if l.unhealthy_for_secs >= deadline => Step::RemoveMember {
                id: l.id,
                name: l.name.clone(),
                reason: format!(
                    "learner {} has no pod after {}s; removing it to try again later",
                    l.name, l.unhealthy_for_secs
                ),
            },
            None => Step::CreateLearnerPod { name: l.name.clone() },
            // A learner's pod that fails gets the same deadline: its etcd may exit while it
            // joins (its peer name not resolving yet, a slow node) and then join on a
            // restart; giving it up at once cost a new member (and a minute) under load.
            Some(p) if !l.healthy && l.unhealthy_for_secs >= deadline => Step::RemoveMember {
                id: l.id,
                name: l.name.clone(),
                reason: format!(
                    "learner {} is not healthy after {}s (pod {}); removing it to try again later",
                    l.name,
                    l.unhealthy_for_secs,
                    if p.failed {
                        "failed"
                    } else if p.ready {
                        "ready"
                    } else {
                        "not ready"
                    }
                ),
            },
            Some(p) if p.failed && !l.healthy => {
                Step::Wait(format!("learner {}'s pod fails; it is restarted, and given up after {deadline}s", l.name))
            }
            Some(_) if !l.healthy => Step::Wait(format!("learner {} is catching up", l.name)),
            Some(_) => Step::Promote { id: l.id, name: l.name.clone() },
        };
    }

    // 7. Scale up, one learner at a time, only while every voter is healthy (etcd refuses
    // membership changes otherwise).
    if voters.len() < want.size {
        if healthy_voters < voters.len() {
            return Step::Wait("waiting for every member to be healthy before adding one".into());
        }
        if let Some(free) = free_nodes(obs)
            && free.is_empty()
        {
            return Step::Wait(format!(
                "{} of {} members run, one per node, and no other node can take one",
                voters.len(),
                want.size
            ));
        }
        if let Some(s) = obs.since_learner_given_up.filter(|s| *s < want.learner_retry_after_secs) {
            return Step::Wait(format!(
                "a learner was given up on {s}s ago; adding another in {}s",
                want.learner_retry_after_secs - s
            ));
        }
        return Step::AddLearner { name: next_name() };
    }

    // 8. Scale down: an unhealthy voter first (removing a healthy one would spend the
    // cluster's fault tolerance); else the highest ordinal, leadership moved away first.
    if voters.len() > want.size {
        if let Some(sick) = voters.iter().filter(|m| !m.healthy).max_by_key(|m| ordinal_of(&m.name).unwrap_or(0)) {
            return remove_if_safe(sick, &voters, healthy_voters, "scaling down: the unhealthy member goes first");
        }
        let victim = voters.iter().max_by_key(|m| ordinal_of(&m.name).unwrap_or(0)).copied();
        let Some(victim) = victim else { return Step::Idle };
        if victim.leader {
            return match voters.iter().filter(|o| o.id != victim.id && o.healthy).min_by_key(|o| &o.name) {
                Some(to) => Step::MoveLeader {
                    to: to.id,
                    to_name: to.name.clone(),
                    reason: format!("{} leads and is being removed", victim.name),
                },
                None => Step::Blocked("no healthy member to take leadership".into()),
            };
        }
        return remove_if_safe(victim, &voters, healthy_voters, "scaling down");
    }

    // 9. Rolling restart to the current spec: followers first, leader last; all healthy
    // before each.
    if let Some(step) = roll(want, obs, &voters, healthy_voters, None) {
        return step;
    }

    // 10. Maintenance, the lowest priority.
    match (&want.maintenance, &obs.maintenance) {
        (Some(p), Some(m)) => {
            let all_ready = healthy_voters == voters.len() && obs.pods.iter().all(|p| p.ready);
            maintenance::next(p, m, all_ready)
        }
        _ => Step::Idle,
    }
}

/// The next step of a rolling restart onto the current spec, if a voter's pod is built
/// from another: followers first, the leader last after moving leadership; only while
/// every voter is healthy and every pod ready (but `waiting`, a learner's pod no node
/// has taken).
fn roll(
    want: &Desired,
    obs: &Observation,
    voters: &[&MemberState],
    healthy_voters: usize,
    waiting: Option<&str>,
) -> Option<Step> {
    let pod = |name: &str| obs.pods.iter().find(|p| p.name == name);
    let stale_why = |m: &MemberState| -> Option<String> { pod_stale(pod(&m.name)?, want) };
    let stale: Vec<(&MemberState, String)> = voters.iter().filter_map(|m| stale_why(m).map(|w| (*m, w))).collect();
    let (leader, why) = stale.first()?;
    if healthy_voters < voters.len() || obs.pods.iter().any(|p| !p.ready && Some(p.name.as_str()) != waiting) {
        return Some(Step::Wait("waiting for every member to be healthy before restarting the next".into()));
    }
    if want.memory && voters.len() == 1 && !want.allow_data_loss {
        return Some(Step::Blocked(
            "restarting the only member of a Memory cluster would lose all its data; set spec.storage.allowDataLoss: true to accept that, or grow the cluster first"
                .into(),
        ));
    }
    if let Some((f, why)) = stale.iter().find(|(m, _)| !m.leader) {
        return Some(Step::Restart { name: f.name.clone(), reason: why.clone() });
    }
    let fresh = voters.iter().find(|o| o.id != leader.id && stale_why(o).is_none());
    Some(match fresh.or_else(|| voters.iter().find(|o| o.id != leader.id)) {
        Some(to) => Step::MoveLeader {
            to: to.id,
            to_name: to.name.clone(),
            reason: format!("{} leads and is restarted last", leader.name),
        },
        // A single member leads itself: restart it.
        None => Step::Restart { name: leader.name.clone(), reason: why.clone() },
    })
}

/// No member answers.
fn no_answer(cluster: &str, want: &Desired, obs: &Observation) -> Step {
    let pod = |name: &str| obs.pods.iter().find(|p| p.name == name);
    if obs.formed {
        // Members' pods gone while their volumes stay (e.g. all pods evicted): bring
        // them back as they were; etcd answers once a quorum of them runs.
        if let Some(name) = obs.volumes.iter().find(|v| pod(v).is_none()) {
            return Step::RecreatePod { name: name.clone() };
        }
        return Step::Wait("no etcd member answers; waiting for a quorum of members to run".into());
    }
    if let Some(members) = &obs.bootstrap {
        let create: Vec<String> = members.iter().filter(|m| pod(m).is_none()).cloned().collect();
        if !create.is_empty() {
            return Step::Bootstrap { members: members.clone(), create };
        }
        // A bootstrap member no node takes: replaced once the spec changes, else waited for.
        for p in members.iter().filter_map(|m| pod(m)) {
            if let Some(why) = &p.unplaced {
                if pod_stale(p, want).is_some() {
                    return Step::ReplacePod { name: p.name.clone(), initial: Some(members.clone()) };
                }
                return Step::Wait(format!("bootstrapping: {} cannot be placed: {why}", p.name));
            }
        }
        return Step::Wait("bootstrapping: waiting for the members to form the cluster".into());
    }
    if !obs.pods.is_empty() || !obs.volumes.is_empty() {
        return Step::Blocked(
            "member pods or volumes exist, but nothing records that this cluster was bootstrapped or formed: refusing to start a new cluster beside that data"
                .into(),
        );
    }
    // One member, under a name never given before (after an in-place restore, the new
    // members follow the ordinals of the members they replace). The others join as
    // learners, each a voter only once its pod runs and its etcd has caught up: an
    // initial cluster of several would count members as voters before any node took
    // their pods (a 5-member cluster with 3 placeable pods has no fault tolerance).
    let first = member_name(cluster, obs.highest_ordinal.map_or(0, |h| h + 1));
    Step::Bootstrap { create: vec![first.clone()], members: vec![first] }
}

/// Why a pod is not what the spec makes now, if it is not.
fn pod_stale(p: &PodState, want: &Desired) -> Option<String> {
    if p.version != want.version {
        return Some(format!("etcd {} -> {}", p.version, want.version));
    }
    match &p.spec_hash {
        Some(h) if *h != want.spec_hash => return Some("the spec of its pod changed".into()),
        _ => {}
    }
    match &want.trust {
        Some(t) if p.trust.as_ref() != Some(t) => Some("the CA rotation changed the CAs members trust".into()),
        _ => None,
    }
}

/// With one member per node: the nodes that can take a member and hold none of this
/// cluster's pods. `None`: members may share nodes.
pub fn free_nodes(obs: &Observation) -> Option<Vec<&str>> {
    let nodes = obs.placeable_nodes.as_ref()?;
    Some(nodes.iter().map(String::as_str).filter(|n| !obs.pods.iter().any(|p| p.node.as_deref() == Some(*n))).collect())
}

/// Why members the spec asks for cannot be placed, if some cannot: a reason and a
/// message naming them (the scheduler's own words for a pod it left unplaced).
pub fn placement(cluster: &str, size: usize, obs: &Observation) -> Option<(&'static str, String)> {
    let unplaced: Vec<String> = obs
        .pods
        .iter()
        .filter(|p| !p.terminating)
        .filter_map(|p| p.unplaced.as_ref().map(|why| format!("{} cannot be placed: {why}", p.name)))
        .collect();
    if !unplaced.is_empty() {
        return Some(("Unschedulable", unplaced.join("; ")));
    }
    let nodes = obs.placeable_nodes.as_ref()?;
    let running = obs.pods.iter().filter(|p| !p.terminating).count();
    let missing = size.saturating_sub(nodes.len().max(running.min(size)));
    if missing == 0 {
        return None;
    }
    let next = obs.highest_ordinal.map_or(0, |h| h + 1);
    let cannot: Vec<String> = (next..next + missing as u32).map(|i| member_name(cluster, i)).collect();
    Some((
        "NotEnoughNodes",
        format!(
            "{} cannot be placed: size {size} needs a node per member (anti-affinity Required, or Stacked), and {} node{} can take one ({}); the cluster runs with the members it can place and grows when nodes are added",
            cannot.join(" and "),
            nodes.len(),
            if nodes.len() == 1 { "" } else { "s" },
            nodes.join(", ")
        ),
    ))
}

/// The voting members gone with their volumes, when they are a majority: quorum can
/// never come back by itself. Members whose pods are merely gone, Pending or down, but
/// whose volumes remain, may come back and do not count.
pub fn quorum_lost_for_good(obs: &Observation) -> Option<Vec<String>> {
    let members = obs.members.as_ref()?;
    let voters: Vec<&MemberState> = members.iter().filter(|m| !m.learner).collect();
    let lost: Vec<String> = voters
        .iter()
        .filter(|m| !obs.pods.iter().any(|p| p.name == m.name) && !obs.volumes.contains(&m.name))
        .map(|m| m.name.clone())
        .collect();
    (!voters.is_empty() && voters.len() - lost.len() < quorum(voters.len())).then_some(lost)
}

/// Whether the planner gives back the operation slot it holds: once idle (its round is
/// over), and as soon as quorum is lost for good, unless the step is itself disruptive:
/// no membership change completes without quorum, and the way out, a restore, needs
/// the slot. (Seen on the testbed: a removal planned just before the second member was
/// lost held the slot until it expired, and the opt-in recovery waited behind it.)
/// Also while it only waits for a node to take a member (`unplaceable`): that may last
/// until a node is added, and a backup meanwhile is no risk (it reads a voter).
pub fn releases_slot(step: &Step, quorum_lost_for_good: bool, unplaceable: bool) -> bool {
    *step == Step::Idle
        || (quorum_lost_for_good && !step.disruptive())
        || (unplaceable && matches!(step, Step::Wait(_)))
}

/// Removes `m` only if the members left keep quorum.
fn remove_if_safe(m: &MemberState, voters: &[&MemberState], healthy_voters: usize, why: &str) -> Step {
    let left = voters.len() - 1;
    let healthy_left = healthy_voters - usize::from(m.healthy);
    if left == 0 || healthy_left < quorum(left) {
        return Step::Blocked(format!(
            "removing {} ({why}) would leave {healthy_left} healthy of {left} members, short of quorum",
            m.name
        ));
    }
    Step::RemoveMember { id: m.id, name: m.name.clone(), reason: why.to_string() }
}

/// The highest ordinal to record: the observed one, or the one a step gave a new member
/// once it was done (an add etcd refused took none).
pub fn highest_ordinal(observed: Option<u32>, step: &Step, done: bool) -> Option<u32> {
    let given = match step {
        Step::AddLearner { name } if done => ordinal_of(name),
        Step::Bootstrap { members, .. } if done => members.iter().filter_map(|m| ordinal_of(m)).max(),
        _ => None,
    };
    observed.max(given)
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
