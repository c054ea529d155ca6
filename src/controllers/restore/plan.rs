//! The pure rule of one restore.

use crate::api::Phase;
use crate::api::restore::RestoreMode;

/// Steps recorded in `status.steps`, in order.
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
}

pub fn plan(o: &Observation) -> Step {
    if o.phase.is_finished() {
        return Step::Done;
    }
    if let Some(p) = &o.spec_problem {
        return Step::Fail(p.clone());
    }
    if o.mode == RestoreMode::InPlace {
        return Step::Fail(
            "mode InPlace is not supported by this version of etcd-pilot yet: restore into a new cluster (mode NewCluster)"
                .into(),
        );
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
