//! The next single step for an etcd cluster: a pure function of what the user asked for
//! and what was observed. It does no IO, so every transition, including every state a
//! crash between two steps leaves behind, is a row in a table test.
//!
//! Rules, in order (the first that applies wins):
//! 1. paused: nothing.
//! 2. no answer from etcd: bootstrap a cluster never formed; recreate pods of members
//!    whose volumes survive; otherwise wait.
//! 3. a pod etcd does not know of: a member removed before a crash; delete it.
//! 4. a learner: start its pod (added, pod not yet created), wait for it to catch up,
//!    promote it. Never a second learner (etcd 3.4 refuses one).
//! 5. a member whose pod is gone: recreate the pod on its volume; with the volume gone
//!    too, remove the member (it is replaced below), if the rest keep quorum.
//! 6. a failed member (crash-looping, or unhealthy too long): remove it, if the rest
//!    keep quorum; it is replaced below.
//! 7. fewer voters than asked: add one learner.
//! 8. more voters than asked: move leadership off the one to remove, then remove it.
//! 9. members on another version: restart followers first, the leader last after
//!    moving leadership, one at a time, only while all are healthy.

use std::collections::BTreeSet;

/// What the user asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub size: usize,
    pub version: String,
    pub paused: bool,
    /// Replace a member that has been unhealthy this long.
    pub replace_unhealthy_after_secs: u64,
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
}

/// An etcd member as observed. `name` comes from its peer URL, so a learner that never
/// started (and so has no name in etcd) is still named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberState {
    pub id: u64,
    pub name: String,
    pub learner: bool,
    /// Answered its status, knows a leader, reports no errors; for a learner: in sync
    /// enough to be promoted.
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
    /// The cluster has formed before (its id is recorded in status).
    pub bootstrapped: bool,
    /// Ordinals ever used in this cluster's member names: never reused, so a new member
    /// never meets an old member's data.
    pub highest_ordinal: Option<u32>,
}

/// The one thing to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do.
    Idle,
    /// Something is under way; look again soon.
    Wait(String),
    /// Create the missing pods of a new cluster: all of `members` form the initial
    /// cluster (state `new`).
    Bootstrap {
        members: Vec<String>,
        create: Vec<String>,
    },
    /// Recreate the pod of a member on its surviving volume: same member, same data.
    RecreatePod {
        name: String,
    },
    /// `member add --learner` for a new member.
    AddLearner {
        name: String,
    },
    /// Create the pod of a learner etcd knows (state `existing`).
    CreateLearnerPod {
        name: String,
    },
    Promote {
        id: u64,
        name: String,
    },
    MoveLeader {
        to: u64,
        to_name: String,
        reason: String,
    },
    RemoveMember {
        id: u64,
        name: String,
        reason: String,
    },
    /// Delete the pod (and its volume when `delete_volume`) of a member etcd no longer has.
    DeletePod {
        name: String,
        delete_volume: bool,
    },
    /// Restart a member's pod with the desired version.
    Upgrade {
        name: String,
        version: String,
    },
    /// The next step would risk quorum: do nothing, say why.
    Blocked(String),
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
    let pod = |name: &str| obs.pods.iter().find(|p| p.name == name);
    let next_name = || member_name(cluster, obs.highest_ordinal.map_or(0, |o| o + 1));

    let Some(members) = &obs.members else {
        if !obs.bootstrapped {
            let members: Vec<String> = (0..want.size as u32).map(|i| member_name(cluster, i)).collect();
            let create: Vec<String> = members.iter().filter(|m| pod(m).is_none()).cloned().collect();
            if create.is_empty() {
                return Step::Wait("bootstrapping: waiting for the members to form the cluster".into());
            }
            return Step::Bootstrap { members, create };
        }
        // Members' pods gone while their volumes stay (e.g. all pods evicted): bring
        // them back as they were; etcd answers once a quorum of them runs.
        if let Some(name) = obs.volumes.iter().find(|v| pod(v).is_none()) {
            return Step::RecreatePod { name: name.clone() };
        }
        return Step::Wait("no etcd member answers; waiting for a quorum of members to run".into());
    };

    if let Some(p) = obs.pods.iter().find(|p| p.terminating) {
        return Step::Wait(format!("pod {} is terminating", p.name));
    }

    // 3. Pods of members etcd no longer has (removed, then a crash before the delete).
    if let Some(p) = obs.pods.iter().find(|p| !members.iter().any(|m| m.name == p.name)) {
        return Step::DeletePod { name: p.name.clone(), delete_volume: delete_volume_on_scale };
    }

    let voters: Vec<&MemberState> = members.iter().filter(|m| !m.learner).collect();
    let healthy_voters = voters.iter().filter(|m| m.healthy).count();

    // 4. A learner: finish what was started before anything else.
    if let Some(l) = members.iter().find(|m| m.learner) {
        return match pod(&l.name) {
            None => Step::CreateLearnerPod { name: l.name.clone() },
            Some(p) if p.failed => Step::RemoveMember {
                id: l.id,
                name: l.name.clone(),
                reason: "the new learner's pod failed; removing it to try again".into(),
            },
            Some(_) if !l.healthy => Step::Wait(format!("learner {} is catching up", l.name)),
            Some(_) => Step::Promote { id: l.id, name: l.name.clone() },
        };
    }

    // 5. Voters whose pods are gone.
    for m in &voters {
        if pod(&m.name).is_some() {
            continue;
        }
        if obs.volumes.contains(&m.name) {
            return Step::RecreatePod { name: m.name.clone() };
        }
        return remove_if_safe(m, &voters, healthy_voters, "its pod and volume are gone");
    }

    // 6. Failed voters.
    let failed = voters.iter().find(|m| {
        pod(&m.name).is_some_and(|p| p.failed)
            || (!m.healthy && m.unhealthy_for_secs >= want.replace_unhealthy_after_secs)
    });
    if let Some(m) = failed {
        if m.leader
            && let Some(to) = voters.iter().find(|o| o.id != m.id && o.healthy)
        {
            return Step::MoveLeader { to: to.id, to_name: to.name.clone(), reason: format!("{} is failing", m.name) };
        }
        return remove_if_safe(m, &voters, healthy_voters, "it has failed");
    }

    // 7. Scale up, one learner at a time, only while every voter is healthy (etcd refuses
    // membership changes otherwise).
    if voters.len() < want.size {
        if healthy_voters < voters.len() {
            return Step::Wait("waiting for every member to be healthy before adding one".into());
        }
        return Step::AddLearner { name: next_name() };
    }

    // 8. Scale down: the highest ordinal goes, leadership moved away first.
    if voters.len() > want.size {
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

    // 9. Rolling upgrade: followers first, leader last; all healthy before each.
    let stale: Vec<&&MemberState> =
        voters.iter().filter(|m| pod(&m.name).is_some_and(|p| p.version != want.version)).collect();
    if !stale.is_empty() {
        if healthy_voters < voters.len() || obs.pods.iter().any(|p| !p.ready) {
            return Step::Wait("waiting for every member to be healthy before upgrading the next".into());
        }
        if let Some(f) = stale.iter().find(|m| !m.leader) {
            return Step::Upgrade { name: f.name.clone(), version: want.version.clone() };
        }
        let leader = stale[0];
        let upgraded =
            voters.iter().find(|o| o.id != leader.id && pod(&o.name).is_some_and(|p| p.version == want.version));
        return match upgraded.or_else(|| voters.iter().find(|o| o.id != leader.id)) {
            Some(to) => Step::MoveLeader {
                to: to.id,
                to_name: to.name.clone(),
                reason: format!("{} leads and is upgraded last", leader.name),
            },
            // A single member leads itself: restart it.
            None => Step::Upgrade { name: leader.name.clone(), version: want.version.clone() },
        };
    }
    Step::Idle
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

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "main";

    fn want(size: usize) -> Desired {
        Desired { size, version: "3.4.23".into(), paused: false, replace_unhealthy_after_secs: 300 }
    }

    fn pod(name: &str) -> PodState {
        PodState { name: name.into(), ready: true, terminating: false, failed: false, version: "3.4.23".into() }
    }

    fn member(id: u64, name: &str) -> MemberState {
        MemberState { id, name: name.into(), learner: false, healthy: true, leader: id == 1, unhealthy_for_secs: 0 }
    }

    /// A healthy cluster of `n` members `main-0..`, ids 1.., member 1 leading, with pods
    /// and volumes.
    fn healthy(n: u64) -> Observation {
        let names: Vec<String> = (0..n).map(|i| member_name(C, i as u32)).collect();
        Observation {
            pods: names.iter().map(|n| pod(n)).collect(),
            volumes: names.iter().cloned().collect(),
            members: Some((0..n).map(|i| member(i + 1, &names[i as usize])).collect()),
            bootstrapped: true,
            highest_ordinal: Some(n as u32 - 1),
        }
    }

    fn members(o: &mut Observation) -> &mut Vec<MemberState> {
        o.members.as_mut().unwrap()
    }

    fn without_pod(mut o: Observation, name: &str) -> Observation {
        o.pods.retain(|p| p.name != name);
        o
    }

    // Rows are pushed one by one because many build on the observation of the row before.
    #[allow(clippy::vec_init_then_push)]
    #[test]
    fn table() {
        let mut cases: Vec<(&str, Desired, Observation, Step)> = Vec::new();

        cases.push((
            "paused does nothing, whatever it sees",
            Desired { paused: true, ..want(5) },
            healthy(3),
            Step::Idle,
        ));
        cases.push(("steady state", want(3), healthy(3), Step::Idle));

        // Bootstrap.
        cases.push((
            "a new cluster starts all members at once",
            want(3),
            Observation::default(),
            Step::Bootstrap {
                members: vec!["main-0".into(), "main-1".into(), "main-2".into()],
                create: vec!["main-0".into(), "main-1".into(), "main-2".into()],
            },
        ));
        cases.push((
            "crash during bootstrap: only the missing pods are created",
            want(3),
            Observation { pods: vec![pod("main-0")], ..Observation::default() },
            Step::Bootstrap {
                members: vec!["main-0".into(), "main-1".into(), "main-2".into()],
                create: vec!["main-1".into(), "main-2".into()],
            },
        ));
        cases.push((
            "bootstrap pods exist: wait for them to form the cluster",
            want(1),
            Observation { pods: vec![pod("main-0")], ..Observation::default() },
            Step::Wait("bootstrapping: waiting for the members to form the cluster".into()),
        ));

        // etcd unreachable after bootstrap.
        let mut all_gone = healthy(3);
        all_gone.pods.clear();
        all_gone.members = None;
        cases.push((
            "all pods gone, volumes kept: recreate them",
            want(3),
            all_gone,
            Step::RecreatePod { name: "main-0".into() },
        ));
        let mut dark = healthy(3);
        dark.members = None;
        cases.push((
            "pods there but no member answers: wait",
            want(3),
            dark,
            Step::Wait("no etcd member answers; waiting for a quorum of members to run".into()),
        ));

        // Pod deleted, volume kept: it comes back with its data.
        cases.push((
            "member pod deleted: recreate it on its volume",
            want(3),
            without_pod(healthy(3), "main-2"),
            Step::RecreatePod { name: "main-2".into() },
        ));
        let mut terminating = healthy(3);
        terminating.pods[2].terminating = true;
        cases.push(("a pod terminating: wait", want(3), terminating, Step::Wait("pod main-2 is terminating".into())));

        // Pod and volume deleted: replace (remove, then add a learner).
        let mut lost = without_pod(healthy(3), "main-2");
        lost.volumes.remove("main-2");
        members(&mut lost)[2].healthy = false;
        cases.push((
            "pod and volume gone: remove the member",
            want(3),
            lost,
            Step::RemoveMember { id: 3, name: "main-2".into(), reason: "its pod and volume are gone".into() },
        ));
        let mut replaced = healthy(3);
        replaced.pods.pop();
        replaced.volumes.remove("main-2");
        members(&mut replaced).pop();
        cases.push((
            "after the removal a fresh learner is added, with a new ordinal",
            want(3),
            replaced,
            Step::AddLearner { name: "main-3".into() },
        ));

        // Scale up through a learner, with crashes between the steps.
        cases.push(("scale up: add a learner", want(5), healthy(3), Step::AddLearner { name: "main-3".into() }));
        let mut added = healthy(3);
        members(&mut added).push(MemberState { learner: true, healthy: false, ..member(9, "main-3") });
        added.highest_ordinal = Some(3);
        cases.push((
            "crash after member add, before the pod: create the learner's pod",
            want(5),
            added.clone(),
            Step::CreateLearnerPod { name: "main-3".into() },
        ));
        let mut catching_up = added.clone();
        catching_up.pods.push(PodState { ready: false, ..pod("main-3") });
        cases.push((
            "learner catching up: wait",
            want(5),
            catching_up.clone(),
            Step::Wait("learner main-3 is catching up".into()),
        ));
        let mut in_sync = catching_up.clone();
        members(&mut in_sync)[3].healthy = true;
        cases.push((
            "learner in sync: promote (also after a crash that left it unpromoted)",
            want(5),
            in_sync.clone(),
            Step::Promote { id: 9, name: "main-3".into() },
        ));
        let mut learner_failed = catching_up.clone();
        learner_failed.pods[3].failed = true;
        cases.push((
            "a learner whose pod fails is removed to try again",
            want(5),
            learner_failed,
            Step::RemoveMember {
                id: 9,
                name: "main-3".into(),
                reason: "the new learner's pod failed; removing it to try again".into(),
            },
        ));
        cases.push((
            "a learner blocks a scale-down until promoted: finish first",
            want(3),
            in_sync.clone(),
            Step::Promote { id: 9, name: "main-3".into() },
        ));
        let mut unhealthy_voter = healthy(3);
        members(&mut unhealthy_voter)[1].healthy = false;
        members(&mut unhealthy_voter)[1].unhealthy_for_secs = 10;
        cases.push((
            "no learner is added while a voter is unhealthy",
            want(5),
            unhealthy_voter,
            Step::Wait("waiting for every member to be healthy before adding one".into()),
        ));

        // Scale down: leader moved first, highest ordinal removed, pod deleted after.
        cases.push((
            "scale down removes the highest ordinal",
            want(3),
            healthy(5),
            Step::RemoveMember { id: 5, name: "main-4".into(), reason: "scaling down".into() },
        ));
        let mut leader_last = healthy(5);
        for m in members(&mut leader_last) {
            m.leader = m.id == 5;
        }
        cases.push((
            "the member to remove leads: move leadership first",
            want(3),
            leader_last,
            Step::MoveLeader { to: 1, to_name: "main-0".into(), reason: "main-4 leads and is being removed".into() },
        ));
        let mut removed = healthy(5);
        members(&mut removed).pop();
        cases.push((
            "crash after member remove, before the pod delete: delete the pod",
            want(3),
            removed,
            Step::DeletePod { name: "main-4".into(), delete_volume: true },
        ));

        // Quorum is never risked.
        let mut two_down = healthy(3);
        members(&mut two_down)[1].healthy = false;
        members(&mut two_down)[1].unhealthy_for_secs = 400;
        members(&mut two_down)[2].healthy = false;
        members(&mut two_down)[2].unhealthy_for_secs = 400;
        cases.push((
            "two of three unhealthy: removing one would not help quorum",
            want(3),
            two_down,
            Step::Blocked("removing main-1 (it has failed) would leave 1 healthy of 2 members, short of quorum".into()),
        ));
        let mut one_down = healthy(3);
        members(&mut one_down)[2].healthy = false;
        members(&mut one_down)[2].unhealthy_for_secs = 400;
        cases.push((
            "one of three unhealthy for too long: replace it",
            want(3),
            one_down.clone(),
            Step::RemoveMember { id: 3, name: "main-2".into(), reason: "it has failed".into() },
        ));
        let mut briefly = one_down.clone();
        members(&mut briefly)[2].unhealthy_for_secs = 20;
        cases.push(("briefly unhealthy: no replacement yet", want(3), briefly, Step::Idle));
        let mut crashloop = healthy(3);
        crashloop.pods[0].failed = true;
        cases.push((
            "the leader crash-loops: leadership moves before it is replaced",
            want(3),
            crashloop,
            Step::MoveLeader { to: 2, to_name: "main-1".into(), reason: "main-0 is failing".into() },
        ));
        let mut single = healthy(1);
        single.pods[0].failed = true;
        cases.push((
            "a single member is never removed",
            want(1),
            single,
            Step::Blocked("removing main-0 (it has failed) would leave 0 healthy of 0 members, short of quorum".into()),
        ));

        // Upgrades: followers first, the leader last after moving leadership.
        let upgrade = Desired { version: "3.5.1".into(), ..want(3) };
        cases.push((
            "upgrade starts with a follower",
            upgrade.clone(),
            healthy(3),
            Step::Upgrade { name: "main-1".into(), version: "3.5.1".into() },
        ));
        let mut followers_done = healthy(3);
        followers_done.pods[1].version = "3.5.1".into();
        followers_done.pods[2].version = "3.5.1".into();
        cases.push((
            "only the leader is old: move leadership to an upgraded member",
            upgrade.clone(),
            followers_done.clone(),
            Step::MoveLeader { to: 2, to_name: "main-1".into(), reason: "main-0 leads and is upgraded last".into() },
        ));
        let mut moved = followers_done.clone();
        for m in members(&mut moved) {
            m.leader = m.id == 2;
        }
        cases.push((
            "leadership moved: upgrade the former leader",
            upgrade.clone(),
            moved,
            Step::Upgrade { name: "main-0".into(), version: "3.5.1".into() },
        ));
        let mut restarting = healthy(3);
        restarting.pods[1].version = "3.5.1".into();
        restarting.pods[1].ready = false;
        cases.push((
            "the upgraded member is not ready yet: wait",
            upgrade.clone(),
            restarting,
            Step::Wait("waiting for every member to be healthy before upgrading the next".into()),
        ));
        let mut one = healthy(1);
        one.pods[0].version = "3.4.23".into();
        cases.push((
            "a single member is upgraded in place",
            Desired { version: "3.5.1".into(), ..want(1) },
            one,
            Step::Upgrade { name: "main-0".into(), version: "3.5.1".into() },
        ));

        for (what, want, obs, expected) in cases {
            assert_eq!(plan(C, &want, &obs, true), expected, "{what}");
        }
    }

    #[test]
    fn quorum_sizes() {
        assert_eq!([1, 2, 3, 4, 5, 7].map(quorum), [1, 2, 2, 3, 3, 4]);
    }

    #[test]
    fn names_and_ordinals() {
        assert_eq!(member_name("my-etcd", 12), "my-etcd-12");
        assert_eq!(ordinal_of("my-etcd-12"), Some(12));
        assert_eq!(ordinal_of("weird"), None);
    }
}
