//! The pure rules of restore drills: what to do with the drill pod, and the verdict on
//! what it found.

use jiff::Timestamp;

use crate::api::schedule::VerificationResult;
use crate::drill::{Outcome, Report};

/// A drill pod that has not ended this long after its creation (say it never got a node)
/// is given up on: the drill failed. The pod's own `activeDeadlineSeconds` is shorter.
pub const GIVE_UP_SECS: i64 = 3600 + 600;
/// The pod's `activeDeadlineSeconds`: the kubelet ends a drill that runs this long.
pub const POD_DEADLINE_SECS: i64 = 3600;

/// The drill pod, as observed.
#[derive(Clone, Debug, PartialEq)]
pub enum Pod {
    Absent,
    /// Created (pending or running) at `created`, to drill `backup`.
    Running {
        backup: String,
        created: Timestamp,
    },
    /// Ended at `finished` with `outcome`.
    Ended {
        backup: String,
        created: Timestamp,
        finished: Timestamp,
        outcome: Outcome,
    },
}

/// What the drill controller saw.
#[derive(Clone, Debug, PartialEq)]
pub struct Observation {
    /// The schedule asks for drills (`spec.verify`, valid).
    pub verify: bool,
    /// A drill slot passed since the last drill.
    pub due: bool,
    /// The newest successful backup of the schedule.
    pub newest: Option<String>,
    pub pod: Pod,
    /// The drill recorded in the status: its backup and time.
    pub recorded: Option<(String, Timestamp)>,
    pub now: Timestamp,
}

/// The next step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing to do now.
    Idle,
    /// Create the drill pod for this backup.
    Start(String),
    /// A drill is under way.
    Wait,
    /// The pod ended: judge what it found, record the verdict at this time, then delete
    /// it.
    Judge(Timestamp),
    /// The pod never ended: record a failed drill at this time, then delete it.
    GiveUp(Timestamp),
    /// The pod's verdict is recorded (or drills were turned off): delete it.
    Remove,
}

pub fn plan(o: &Observation) -> Step {
    let recorded = |backup: &str, at: Timestamp| o.recorded.as_ref().is_some_and(|(b, t)| b == backup && *t == at);
    match &o.pod {
        Pod::Ended { .. } | Pod::Running { .. } if !o.verify => Step::Remove,
        Pod::Ended { backup, finished, .. } if recorded(backup, *finished) => Step::Remove,
        Pod::Ended { finished, .. } => Step::Judge(*finished),
        Pod::Running { backup, created } => {
            let give_up = *created + jiff::SignedDuration::from_secs(GIVE_UP_SECS);
            match () {
                _ if o.now < give_up => Step::Wait,
                _ if recorded(backup, give_up) => Step::Remove,
                _ => Step::GiveUp(give_up),
            }
        }
        Pod::Absent if !o.verify || !o.due => Step::Idle,
        Pod::Absent => o.newest.clone().map_or(Step::Idle, Step::Start),
    }
}

/// What the backup claims.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claim {
    pub revision: Option<i64>,
    pub key_count: Option<i64>,
}

/// `HashKV` at the backup's revision on a live member, or why there is none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Live {
    Hash { member: String, hash: u32, compact_revision: i64 },
    Unavailable(String),
}

/// The verdict: passed only when the backup restored, at the revision it claims, with the
/// keys it claims, and (when a live member can still say) the same `HashKV`.
pub fn verdict(outcome: &Outcome, claim: &Claim, live: &Live) -> (VerificationResult, String) {
    use VerificationResult::{Failed, Passed};
    let r: &Report = match outcome {
        Outcome::Failed(why) => return (Failed, format!("the backup did not restore: {why}")),
        Outcome::Restored(r) => r,
    };
    if let Some(want) = claim.revision
        && want != r.revision
    {
        return (Failed, format!("it restored at revision {}, but the backup claims revision {want}", r.revision));
    }
    if let Some(want) = claim.key_count
        && want != r.key_count
    {
        return (Failed, format!("it restored {} keys, but the backup claims {want}", r.key_count));
    }
    let keys = match claim.key_count {
        Some(_) => format!("{} keys", r.key_count),
        None => format!("{} keys (the backup recorded no count)", r.key_count),
    };
    let hash = match live {
        Live::Hash { member, hash, compact_revision } if *compact_revision == r.compact_revision => {
            if *hash != r.hash {
                return (
                    Failed,
                    format!(
                        "HashKV at revision {} is {} restored, but {} on member {member}: the backup does not hold what the cluster held",
                        r.revision, r.hash, hash
                    ),
                );
            }
            format!("HashKV at revision {} matches member {member} ({hash})", r.revision)
        }
        Live::Hash { compact_revision, .. } => format!(
            "HashKV not compared: the cluster has compacted to revision {compact_revision} since the backup (compacted to {})",
            r.compact_revision
        ),
        Live::Unavailable(why) => format!("HashKV not compared: {why}"),
    };
    (Passed, format!("restored at revision {}, {keys}; {hash}; in {:.1}s", r.revision, r.seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().expect("time")
    }

    fn obs(pod: Pod) -> Observation {
        Observation {
            verify: true,
            due: false,
            newest: Some("nightly-2".into()),
            pod,
            recorded: Some(("nightly-1".into(), t("2026-12-07T09:00:30Z"))),
            now: t("2026-12-07T10:00:10Z"),
        }
    }

    fn report() -> Report {
        Report { revision: 100, key_count: 40, hash: 7, compact_revision: 50, seconds: 2.0 }
    }

    #[test]
    fn the_drill_table() {
        let created = t("2026-12-07T10:00:00Z");
        let finished = t("2026-12-07T10:00:20Z");
        let running = Pod::Running { backup: "nightly-2".into(), created };
        let ended = Pod::Ended { backup: "nightly-2".into(), created, finished, outcome: Outcome::Restored(report()) };
        let give_up = created + jiff::SignedDuration::from_secs(GIVE_UP_SECS);
        let rows: Vec<(&str, Observation, Step)> = vec![
            ("not due", obs(Pod::Absent), Step::Idle),
            ("due: the newest backup", Observation { due: true, ..obs(Pod::Absent) }, Step::Start("nightly-2".into())),
            ("due, but no backup yet", Observation { due: true, newest: None, ..obs(Pod::Absent) }, Step::Idle),
            ("drills off", Observation { due: true, verify: false, ..obs(Pod::Absent) }, Step::Idle),
            ("one at a time: a drill runs", Observation { due: true, ..obs(running.clone()) }, Step::Wait),
            ("ended: judged at its end", obs(ended.clone()), Step::Judge(finished)),
            (
                "crash after the verdict was recorded, before the pod was deleted",
                Observation { recorded: Some(("nightly-2".into(), finished)), ..obs(ended.clone()) },
                Step::Remove,
            ),
            ("drills turned off during one", Observation { verify: false, ..obs(running.clone()) }, Step::Remove),
            ("drills turned off after one ended", Observation { verify: false, ..obs(ended) }, Step::Remove),
            ("never ended: given up", Observation { now: give_up, ..obs(running.clone()) }, Step::GiveUp(give_up)),
            (
                "crash after recording the give-up",
                Observation { now: give_up, recorded: Some(("nightly-2".into(), give_up)), ..obs(running) },
                Step::Remove,
            ),
        ];
        for (why, o, want) in rows {
            assert_eq!(plan(&o), want, "{why}");
        }
    }

    #[test]
    fn the_verdict_table() {
        use VerificationResult::{Failed, Passed};
        let claim = Claim { revision: Some(100), key_count: Some(40) };
        let live = Live::Hash { member: "main-1".into(), hash: 7, compact_revision: 50 };
        let ok = Outcome::Restored(report());
        type Row = (&'static str, Outcome, Claim, Live, VerificationResult, &'static str);
        let rows: Vec<Row> = vec![
            (
                "all match",
                ok.clone(),
                claim.clone(),
                live.clone(),
                Passed,
                "HashKV at revision 100 matches member main-1",
            ),
            (
                "did not restore",
                Outcome::Failed("object x is corrupt".into()),
                claim.clone(),
                live.clone(),
                Failed,
                "did not restore: object x is corrupt",
            ),
            (
                "another revision",
                ok.clone(),
                Claim { revision: Some(99), ..claim.clone() },
                live.clone(),
                Failed,
                "claims revision 99",
            ),
            (
                "other keys",
                ok.clone(),
                Claim { key_count: Some(41), ..claim.clone() },
                live.clone(),
                Failed,
                "claims 41",
            ),
            (
                "another hash",
                ok.clone(),
                claim.clone(),
                Live::Hash { member: "main-1".into(), hash: 8, compact_revision: 50 },
                Failed,
                "does not hold what the cluster held",
            ),
            (
                "compacted since: not comparable",
                ok.clone(),
                claim.clone(),
                Live::Hash { member: "main-1".into(), hash: 8, compact_revision: 90 },
                Passed,
                "HashKV not compared: the cluster has compacted to revision 90",
            ),
            (
                "no live member",
                ok.clone(),
                claim.clone(),
                Live::Unavailable("the cluster has compacted past revision 100".into()),
                Passed,
                "HashKV not compared: the cluster has compacted past",
            ),
            (
                "an old backup without a count",
                ok,
                Claim { key_count: None, ..claim },
                live,
                Passed,
                "recorded no count",
            ),
        ];
        for (why, outcome, claim, live, want, says) in rows {
            let (got, message) = verdict(&outcome, &claim, &live);
            assert_eq!(got, want, "{why}: {message}");
            assert!(message.contains(says), "{why}: {message}");
        }
    }
}
