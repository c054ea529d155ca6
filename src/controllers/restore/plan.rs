//! The pure rule of one restore.

use crate::api::Phase;
use crate::api::restore::RestoreMode;
use crate::runtime::operation::Slot;

/// Steps recorded in `status.steps`, in order.
/// In place from a surviving member: its data, snapshotted to the cluster's target.
pub const SURVIVOR: &str = "SurvivorSnapshotted";
/// In place: every member pod stopped, every old volume set aside (kept, never reused).
pub const STOPPED: &str = "MembersStopped";
/// In place: the cluster told to start new members seeded from the snapshot.
pub const REPLACED: &str = "DataReplaced";
pub const VERIFIED: &str = "SourceVerified";
pub const CREATED: &str = "ClusterCreated";
pub const AVAILABLE: &str = "ClusterAvailable";

/// The cluster named by `clusterName`, as the restore sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Absent,
    /// Created by this restore (its seed annotation names it).
    Ours {
        available: bool,
    },
    /// Someone else's.
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    pub phase: Phase,
    /// What is wrong with the spec on its own (validation the schema cannot express).
    pub spec_problem: Option<String>,
    pub mode: RestoreMode,
    pub has_new_cluster: bool,
    /// What is wrong with the source (no such backup, not Succeeded, no target ...).
    pub source_problem: Option<String>,
    /// The steps done so far.
    pub done: Vec<String>,
    pub target: Target,
    /// In place: restore a cluster that still has quorum.
    pub force: bool,
    /// In place: the cluster says it has quorum (Available).
    pub has_quorum: bool,
    /// In place: the source is a surviving member.
    pub from_member: bool,
    /// In place: the cluster's operation slot, as this restore sees it.
    pub slot: Slot,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Done,
    Fail(String),
    /// Read the object through its checks before anything is created.
    Verify,
    CreateCluster,
    Wait(String),
    Succeed,
    /// In place: snapshot the surviving member to the cluster's target.
    SnapshotSurvivor,
    /// In place: take the slot, stop every member pod, set every volume aside.
    StopMembers,
    /// In place: void the old cluster's records and have the cluster bootstrap seeded
    /// members; release the slot.
    ReplaceData,
}

pub fn plan(o: &Observation) -> Step {
    if o.phase.is_finished() {
        return Step::Done;
    }
    if let Some(p) = &o.spec_problem {
        return Step::Fail(p.clone());
    }
    if o.mode == RestoreMode::InPlace {
        return in_place(o);
    }
    if !o.has_new_cluster {
        return Step::Fail("spec.newCluster is required for mode NewCluster: the spec of the cluster to create".into());
    }
    let done = |s: &str| o.done.iter().any(|d| d == s);
    match &o.target {
        Target::Other => {
            return Step::Fail(
                "an EtcdCluster of this name exists already: a NewCluster restore creates a new cluster; choose another clusterName"
                    .into(),
            );
        }
        Target::Ours { available } if done(CREATED) => {
            return if *available {
                Step::Succeed
            } else {
                Step::Wait("waiting for the restored cluster to be Available".into())
            };
        }
        // Created by this restore, but the step was not recorded (a crash in between).
        Target::Ours { .. } => return Step::CreateCluster,
        Target::Absent if done(CREATED) => {
            return Step::Fail("the restored EtcdCluster was deleted before it became Available".into());
        }
        Target::Absent => {}
    }
    if let Some(p) = &o.source_problem {
        return Step::Fail(p.clone());
    }
    if !done(VERIFIED) {
        return Step::Verify;
    }
    Step::CreateCluster
}

/// In place: refuse a cluster with quorum unless forced; the source made and checked
/// before anything is touched; the slot taken; the members stopped; the data replaced.
fn in_place(o: &Observation) -> Step {
    let done = |s: &str| o.done.iter().any(|d| d == s);
    match &o.target {
        Target::Absent => {
            return Step::Fail(
                "the EtcdCluster does not exist: an InPlace restore replaces the data of an existing cluster (use NewCluster)"
                    .into(),
            );
        }
        Target::Ours { available } if done(REPLACED) => {
            return if *available {
                Step::Succeed
            } else {
                Step::Wait("waiting for the restored members to form the cluster".into())
            };
        }
        _ if done(REPLACED) => return Step::ReplaceData,
        _ => {}
    }
    if !done(STOPPED) && o.has_quorum && !o.force {
        return Step::Fail(
            "the cluster has quorum: an in-place restore would throw away a working cluster's data; set spec.force to restore anyway"
                .into(),
        );
    }
    if let Some(p) = &o.source_problem {
        return Step::Fail(p.clone());
    }
    if o.from_member && !done(SURVIVOR) {
        return Step::SnapshotSurvivor;
    }
    if !done(VERIFIED) {
        return Step::Verify;
    }
    if let Slot::Busy(op) = &o.slot {
        return Step::Wait(format!("waiting for the cluster's operation slot ({} {} runs)", op.controller, op.kind));
    }
    if !done(STOPPED) {
        return Step::StopMembers;
    }
    Step::ReplaceData
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Observation {
        Observation {
            phase: Phase::Pending,
            spec_problem: None,
            mode: RestoreMode::NewCluster,
            has_new_cluster: true,
            source_problem: None,
            done: vec![],
            target: Target::Absent,
            force: false,
            has_quorum: false,
            from_member: false,
            slot: Slot::Free,
        }
    }

    fn in_place() -> Observation {
        Observation { mode: RestoreMode::InPlace, has_new_cluster: false, target: Target::Other, ..base() }
    }

    #[test]
    fn the_in_place_table() {
        use crate::runtime::operation::Operation;
        let busy = Slot::Busy(Operation {
            kind: "AddLearner".into(),
            member: None,
            controller: "cluster".into(),
            holder: "a".into(),
            since: jiff::Timestamp::from_second(0).unwrap(),
            expires: jiff::Timestamp::from_second(100).unwrap(),
        });
        let quorum = "the cluster has quorum: an in-place restore would throw away a working cluster's data; set spec.force to restore anyway";
        let rows: Vec<(&str, Observation, Step)> = vec![
            ("a healthy cluster is refused", Observation { has_quorum: true, ..in_place() }, Step::Fail(quorum.into())),
            ("forced: verified first", Observation { has_quorum: true, force: true, ..in_place() }, Step::Verify),
            ("quorum lost: verified first", in_place(), Step::Verify),
            ("from a survivor: its snapshot first", Observation { from_member: true, ..in_place() }, Step::SnapshotSurvivor),
            (
                "survivor snapshotted: verified",
                Observation { from_member: true, done: done(&[SURVIVOR]), ..in_place() },
                Step::Verify,
            ),
            (
                "the cluster mid-change holds the slot: wait",
                Observation { done: done(&[VERIFIED]), slot: busy, ..in_place() },
                Step::Wait("waiting for the cluster's operation slot (cluster AddLearner runs)".into()),
            ),
            ("verified: stop the members", Observation { done: done(&[VERIFIED]), ..in_place() }, Step::StopMembers),
            (
                "stopping began: quorum is gone by our hand, go on",
                Observation { done: done(&[VERIFIED, STOPPED]), has_quorum: true, ..in_place() },
                Step::ReplaceData,
            ),
            (
                "crash after replacing, before its record: replace again (idempotent)",
                Observation { done: done(&[VERIFIED, STOPPED, REPLACED]), ..in_place() },
                Step::ReplaceData,
            ),
            (
                "replaced: wait for the new members",
                Observation {
                    done: done(&[VERIFIED, STOPPED, REPLACED]),
                    target: Target::Ours { available: false },
                    ..in_place()
                },
                Step::Wait("waiting for the restored members to form the cluster".into()),
            ),
            (
                "restored and Available",
                Observation {
                    done: done(&[VERIFIED, STOPPED, REPLACED]),
                    target: Target::Ours { available: true },
                    ..in_place()
                },
                Step::Succeed,
            ),
            (
                "no such cluster",
                Observation { target: Target::Absent, ..in_place() },
                Step::Fail("the EtcdCluster does not exist: an InPlace restore replaces the data of an existing cluster (use NewCluster)".into()),
            ),
        ];
        for (what, obs, want) in rows {
            assert_eq!(plan(&obs), want, "{what}");
        }
    }

    fn done(steps: &[&str]) -> Vec<String> {
        steps.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_restore_table() {
        let rows: Vec<(&str, Observation, Step)> = vec![
            ("a new restore verifies the object first", base(), Step::Verify),
            ("verified: create the cluster", Observation { done: done(&[VERIFIED]), ..base() }, Step::CreateCluster),
            (
                "crash between create and its record: the step is recorded, nothing created twice",
                Observation { done: done(&[VERIFIED]), target: Target::Ours { available: false }, ..base() },
                Step::CreateCluster,
            ),
            (
                "created: wait for Available",
                Observation { done: done(&[VERIFIED, CREATED]), target: Target::Ours { available: false }, ..base() },
                Step::Wait("waiting for the restored cluster to be Available".into()),
            ),
            (
                "Available: succeeded",
                Observation { done: done(&[VERIFIED, CREATED]), target: Target::Ours { available: true }, ..base() },
                Step::Succeed,
            ),
            (
                "created cluster deleted meanwhile",
                Observation { done: done(&[VERIFIED, CREATED]), target: Target::Absent, ..base() },
                Step::Fail("the restored EtcdCluster was deleted before it became Available".into()),
            ),
            (
                "a cluster of the name exists: refused, nothing touched",
                Observation { target: Target::Other, ..base() },
                Step::Fail("an EtcdCluster of this name exists already: a NewCluster restore creates a new cluster; choose another clusterName".into()),
            ),
            (
                "bad source",
                Observation { source_problem: Some("EtcdBackup b9 does not exist".into()), ..base() },
                Step::Fail("EtcdBackup b9 does not exist".into()),
            ),
            (
                "no newCluster",
                Observation { has_new_cluster: false, ..base() },
                Step::Fail("spec.newCluster is required for mode NewCluster: the spec of the cluster to create".into()),
            ),
            ("finished", Observation { phase: Phase::Failed, ..base() }, Step::Done),
            (
                "an invalid spec fails before anything is read",
                Observation { spec_problem: Some("spec.source: set exactly one of backup or s3".into()), ..base() },
                Step::Fail("spec.source: set exactly one of backup or s3".into()),
            ),
        ];
        for (what, obs, want) in rows {
            assert_eq!(plan(&obs), want, "{what}");
        }
        assert!(
            matches!(plan(&Observation { mode: RestoreMode::InPlace, ..base() }), Step::Fail(m) if m.contains("InPlace"))
        );
    }
}
