//! The pure rule of one backup: what to do next, from what was observed.

use crate::api::Phase;
use crate::runtime::operation::Slot;
use crate::shared::snapshot::Candidate;

/// After this many failed attempts a backup is `Failed`.
pub const MAX_ATTEMPTS: u32 = 3;
/// A backup that could not start (no healthy voter, the cluster busy or paused) for this
/// long is `Failed`: a scheduled backup should not wait forever behind a stuck cluster.
pub const START_DEADLINE_SECS: u64 = 30 * 60;

/// What the backup controller saw.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    pub phase: Phase,
    /// Attempts made so far.
    pub attempts: u32,
    /// Seconds since the backup was created.
    pub age_secs: u64,
    /// Seconds until the retry after a failed attempt is due (0: due).
    pub retry_in_secs: u64,
    /// The cluster exists.
    pub cluster: bool,
    pub paused: bool,
    /// What is wrong with the target or its credentials, if anything.
    pub target_problem: Option<String>,
    pub slot: Slot,
    /// Healthy voting members, from the cluster's status.
    pub candidates: Vec<Candidate>,
}

/// The next step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Finished: nothing to do.
    Done,
    /// Give up, saying why.
    Fail(String),
    /// Not now; look again.
    Wait(String),
    /// Take a snapshot of this member and upload it.
    Snapshot(Candidate),
}

pub fn plan(o: &Observation) -> Step {
    if o.phase.is_finished() {
        return Step::Done;
    }
    if !o.cluster {
        return Step::Fail("the EtcdCluster does not exist in this namespace".into());
    }
    if let Some(p) = &o.target_problem {
        return Step::Fail(p.clone());
    }
    if o.attempts >= MAX_ATTEMPTS {
        return Step::Fail(format!("gave up after {MAX_ATTEMPTS} attempts"));
    }
    let why_not = if o.paused {
        Some("the cluster is paused".to_string())
    } else if let Slot::Busy(op) = &o.slot {
        Some(format!("waiting for the cluster's operation slot ({} {} runs)", op.controller, op.kind))
    } else if o.candidates.is_empty() {
        Some("no healthy voting member to take a snapshot from".to_string())
    } else if o.retry_in_secs > 0 {
        Some(format!("retrying in {}s", o.retry_in_secs))
    } else {
        None
    };
    if let Some(why) = why_not {
        if o.attempts == 0 && o.age_secs >= START_DEADLINE_SECS {
            return Step::Fail(format!("could not start within {} minutes: {why}", START_DEADLINE_SECS / 60));
        }
        return Step::Wait(why);
    }
    // A follower when there is one: the leader has enough to do.
    let pick = o.candidates.iter().find(|c| !c.leader).or_else(|| o.candidates.first());
    match pick {
        Some(c) => Step::Snapshot(c.clone()),
        None => Step::Wait("no healthy voting member to take a snapshot from".into()),
    }
}

/// What to do about the copies of a backup that succeeded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CopyStep {
    /// Every copy is written or given up on.
    Done,
    /// Write copy `i` (of `spec.copyTo`), attempt `attempt` (from 1).
    Copy { index: usize, attempt: u32 },
}

/// The next copy to write: the first of `wanted` not finished, in order (one at a time:
/// each streams the whole object). `phases` holds each copy's phase and attempts so far.
pub fn copy_step(wanted: usize, phases: &[(Phase, u32)]) -> CopyStep {
    for index in 0..wanted {
        match phases.get(index) {
            Some((phase, _)) if phase.is_finished() => continue,
            Some((_, attempts)) => return CopyStep::Copy { index, attempt: attempts + 1 },
            None => return CopyStep::Copy { index, attempt: 1 },
        }
    }
    CopyStep::Done
}

/// The phase of a copy after a failed attempt: `Failed` when it was the last or the
/// failure is one retrying cannot fix, else still `Pending`.
pub fn after_failed_copy(attempt: u32, permanent: bool) -> Phase {
    if permanent || attempt >= MAX_ATTEMPTS { Phase::Failed } else { Phase::Pending }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::operation::Operation;

    fn cand(name: &str, leader: bool) -> Candidate {
        Candidate { name: name.into(), endpoint: format!("https://{name}:2379"), leader }
    }

    fn base() -> Observation {
        Observation {
            phase: Phase::Pending,
            attempts: 0,
            age_secs: 1,
            retry_in_secs: 0,
            cluster: true,
            paused: false,
            target_problem: None,
            slot: Slot::Free,
            candidates: vec![cand("main-0", true), cand("main-1", false), cand("main-2", false)],
        }
    }

    fn busy() -> Slot {
        Slot::Busy(Operation {
            kind: "RemoveMember".into(),
            member: Some("main-4".into()),
            controller: "cluster".into(),
            holder: "a".into(),
            since: jiff::Timestamp::from_second(0).unwrap(),
            expires: jiff::Timestamp::from_second(100).unwrap(),
        })
    }

    #[test]
    fn the_backup_table() {
        let rows: Vec<(&str, Observation, Step)> = vec![
            ("a fresh backup snapshots a follower", base(), Step::Snapshot(cand("main-1", false))),
            (
                "only the leader is healthy: the leader",
                Observation { candidates: vec![cand("main-0", true)], ..base() },
                Step::Snapshot(cand("main-0", true)),
            ),
            ("finished: nothing", Observation { phase: Phase::Succeeded, ..base() }, Step::Done),
            ("failed stays failed", Observation { phase: Phase::Failed, ..base() }, Step::Done),
            (
                "unknown cluster",
                Observation { cluster: false, ..base() },
                Step::Fail("the EtcdCluster does not exist in this namespace".into()),
            ),
            (
                "bad credentials fail at once",
                Observation { target_problem: Some("Secret s3 does not exist".into()), ..base() },
                Step::Fail("Secret s3 does not exist".into()),
            ),
            (
                "a membership change holds the slot: wait",
                Observation { slot: busy(), ..base() },
                Step::Wait("waiting for the cluster's operation slot (cluster RemoveMember runs)".into()),
            ),
            ("paused: wait", Observation { paused: true, ..base() }, Step::Wait("the cluster is paused".into())),
            (
                "no healthy voter: wait",
                Observation { candidates: vec![], ..base() },
                Step::Wait("no healthy voting member to take a snapshot from".into()),
            ),
            (
                "could not start for half an hour: fail",
                Observation { candidates: vec![], age_secs: START_DEADLINE_SECS, ..base() },
                Step::Fail(
                    "could not start within 30 minutes: no healthy voting member to take a snapshot from".into(),
                ),
            ),
            (
                "crash mid-snapshot (Running, own slot): snapshot again",
                Observation { phase: Phase::Running, attempts: 1, slot: Slot::Ours, ..base() },
                Step::Snapshot(cand("main-1", false)),
            ),
            (
                "a failed attempt waits for its backoff",
                Observation { attempts: 1, retry_in_secs: 10, ..base() },
                Step::Wait("retrying in 10s".into()),
            ),
            (
                "a failed attempt retried when due",
                Observation { attempts: 2, ..base() },
                Step::Snapshot(cand("main-1", false)),
            ),
            (
                "out of attempts",
                Observation { attempts: MAX_ATTEMPTS, ..base() },
                Step::Fail("gave up after 3 attempts".into()),
            ),
            (
                "a retry is not failed by the start deadline",
                Observation { attempts: 1, age_secs: START_DEADLINE_SECS * 2, slot: busy(), ..base() },
                Step::Wait("waiting for the cluster's operation slot (cluster RemoveMember runs)".into()),
            ),
        ];
        for (what, obs, want) in rows {
            assert_eq!(plan(&obs), want, "{what}");
        }
    }

    #[test]
    fn the_copy_table() {
        use Phase::*;
        type Row = (&'static str, usize, Vec<(Phase, u32)>, CopyStep);
        let rows: Vec<Row> = vec![
            ("no copies wanted", 0, vec![], CopyStep::Done),
            ("the first copy, first attempt", 2, vec![], CopyStep::Copy { index: 0, attempt: 1 }),
            ("a retry of the first", 2, vec![(Pending, 1)], CopyStep::Copy { index: 0, attempt: 2 }),
            ("then the second", 2, vec![(Succeeded, 1)], CopyStep::Copy { index: 1, attempt: 1 }),
            (
                "a failed copy does not stop the next",
                2,
                vec![(Failed, 3), (Pending, 0)],
                CopyStep::Copy { index: 1, attempt: 1 },
            ),
            ("all written", 2, vec![(Succeeded, 1), (Succeeded, 2)], CopyStep::Done),
            (
                "a target removed from the list: its record is past the end",
                1,
                vec![(Succeeded, 1), (Pending, 1)],
                CopyStep::Done,
            ),
        ];
        for (why, wanted, phases, want) in rows {
            assert_eq!(copy_step(wanted, &phases), want, "{why}");
        }
        assert_eq!(after_failed_copy(1, false), Phase::Pending);
        assert_eq!(after_failed_copy(MAX_ATTEMPTS, false), Phase::Failed);
        assert_eq!(after_failed_copy(1, true), Phase::Failed, "access denied, no bucket: retrying cannot help");
    }
}
