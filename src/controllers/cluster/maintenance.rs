//! Maintenance: the lowest-priority steps of the cluster planner (NOSPACE recovery,
//! scheduled compaction, defragmentation). Pure: what to do next from what was observed
//! and what the status recorded, so every transition is a table row.
//!
//! Rules, in order, once nothing else is to be done and every voter is healthy:
//! 1. a CORRUPT alarm: nothing (a member's data may be bad; a person decides).
//! 2. NOSPACE (when remediation is on): compact keeping `retainRevisions`; defragment
//!    every member defragmented before that compaction (followers first, the leader
//!    last, leadership moved away first); then disarm when the largest db file is back
//!    under the quota; else compact all history and go round again; else say which quota
//!    the data needs.
//! 3. a scheduled compaction that is due.
//! 4. defragmentation of members past the threshold, or defragmented before a scheduled
//!    round's slot: one at a time, a settle time after each, followers first, the leader
//!    last; a member whose last attempts failed waits out its backoff.

use jiff::{SignedDuration, Timestamp};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::step::Step;
use crate::api::cluster::{
    CompactionRecord, DefragRecord, EtcdClusterStatus, MaintenanceStatus, MemberStatus, NoSpaceRecovery,
};

/// Pause after a defragmentation before the next member's.
pub const SETTLE_SECS: i64 = 5;
/// The same under NOSPACE: writes are refused until the round ends, so it goes faster.
pub const NOSPACE_SETTLE_SECS: i64 = 1;
/// A member defragmented for fragmentation is not defragmented for it again this soon
/// (a db that does not shrink must not be rewritten in a loop).
pub const THRESHOLD_MIN_INTERVAL_SECS: i64 = 600;
/// After a failed defragmentation: 30 s, doubling, at most 30 min.
pub const BACKOFF_BASE_SECS: i64 = 30;
pub const BACKOFF_MAX_SECS: i64 = 1800;
/// Failures in a row after which the cluster's `MaintenanceFailing` condition is set.
pub const FAILURES_FOR_CONDITION: u32 = 3;
/// NOSPACE is disarmed once the largest db file is below this share (percent) of the
/// quota: above it, the next writes would raise it again at once.
pub const DISARM_BELOW_PERCENT: i64 = 95;
/// The quota suggested when the data itself exceeds it leaves the data at this share.
pub const SUGGESTED_USE_PERCENT: i64 = 80;

/// What the spec asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    pub defrag_enabled: bool,
    pub threshold_percent: i64,
    pub min_db_size: i64,
    pub retain_revisions: i64,
    pub remediate_no_space: bool,
    pub quota: i64,
}

/// A voting member's db, with what the status recorded of its defragmentations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberDb {
    pub name: String,
    pub id: u64,
    pub leader: bool,
    pub db_size: i64,
    pub in_use: i64,
    pub last_defrag: Option<Timestamp>,
    /// Failed defragmentations in a row, and when the last failed.
    pub failures: u32,
    pub last_failure: Option<Timestamp>,
}

impl MemberDb {
    pub fn fragmentation_percent(&self) -> i64 {
        fragmentation_percent(self.db_size, self.in_use)
    }
}

/// Free share (percent) of a db file.
pub fn fragmentation_percent(db_size: i64, in_use: i64) -> i64 {
    if db_size <= 0 { 0 } else { (db_size - in_use).max(0) * 100 / db_size }
}

/// A NOSPACE recovery under way, as the status recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// When history was compacted for it.
    pub compacted: Option<Timestamp>,
    pub all_history: bool,
}

/// What maintenance looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub now: Timestamp,
    /// Voting members.
    pub members: Vec<MemberDb>,
    pub no_space: bool,
    pub corrupt: bool,
    pub recovery: Option<Recovery>,
    /// The store's current revision.
    pub revision: i64,
    /// The slot of a scheduled defragmentation round that is due: members defragmented
    /// before it are defragmented.
    pub defrag_slot: Option<Timestamp>,
    /// A scheduled compaction is due.
    pub compaction_due: bool,
    /// The lowest revision a continuous backup of this cluster has made durable, when one
    /// streams: a scheduled compaction never goes past it.
    pub streamed: Option<i64>,
}

/// When a member that failed may be tried again.
pub fn retry_at(m: &MemberDb) -> Option<Timestamp> {
    let last = m.last_failure?;
    if m.failures == 0 {
        return None;
    }
    let exp = (m.failures - 1).min(16);
    let secs = (BACKOFF_BASE_SECS << exp).min(BACKOFF_MAX_SECS);
    last.checked_add(SignedDuration::from_secs(secs)).ok()
}

fn backing_off(m: &MemberDb, now: Timestamp) -> bool {
    retry_at(m).is_some_and(|t| t > now)
}

/// The quota to set for data of `size` bytes: leaves it at [`SUGGESTED_USE_PERCENT`],
/// rounded up to a MiB.
pub fn suggested_quota(size: i64) -> i64 {
    const MIB: i64 = 1024 * 1024;
    let want = size * 100 / SUGGESTED_USE_PERCENT;
    (want + MIB - 1) / MIB * MIB
}

fn mib(bytes: i64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The next maintenance step. `all_ready`: every voter healthy and every pod ready.
pub fn next(p: &Policy, o: &Observed, all_ready: bool) -> Step {
    if o.corrupt {
        return Step::Idle;
    }
    if o.members.is_empty() {
        return Step::Idle;
    }
    if o.no_space {
        // Remediation off: the alarm is left to a person, and nothing else runs either.
        return if p.remediate_no_space { no_space(p, o, all_ready) } else { Step::Idle };
    }
    if !all_ready {
        return Step::Idle;
    }
    if o.compaction_due {
        return Step::Compact {
            revision: crate::shared::window::compaction_limit((o.revision - p.retain_revisions).max(0), o.streamed),
            all_history: p.retain_revisions == 0,
            reason: format!("scheduled compaction keeping {} revisions", p.retain_revisions),
        };
    }
    if !p.defrag_enabled {
        return Step::Idle;
    }
    let due = |m: &MemberDb| -> Option<String> {
        if backing_off(m, o.now) {
            return None;
        }
        if let Some(slot) = o.defrag_slot
            && m.last_defrag.is_none_or(|t| t < slot)
        {
            return Some(format!("scheduled defragmentation ({slot})"));
        }
        let recent = m.last_defrag.is_some_and(|t| o.now.duration_since(t).as_secs() < THRESHOLD_MIN_INTERVAL_SECS);
        (m.db_size >= p.min_db_size && m.fragmentation_percent() >= p.threshold_percent && !recent).then(|| {
            format!(
                "{}% of its {} db file is free (threshold {}%)",
                m.fragmentation_percent(),
                mib(m.db_size),
                p.threshold_percent
            )
        })
    };
    round(o, SETTLE_SECS, |m| due(m))
}

/// One member of a round, followers first, the leader last (after moving leadership).
fn round(o: &Observed, settle: i64, due: impl Fn(&MemberDb) -> Option<String>) -> Step {
    let mut todo: Vec<(&MemberDb, String)> = o.members.iter().filter_map(|m| due(m).map(|why| (m, why))).collect();
    if todo.is_empty() {
        return Step::Idle;
    }
    todo.sort_by(|a, b| a.0.leader.cmp(&b.0.leader).then(a.0.name.cmp(&b.0.name)));
    let last = o.members.iter().filter_map(|m| m.last_defrag).max();
    if let Some(last) = last {
        let since = o.now.duration_since(last).as_secs();
        if (0..settle).contains(&since) {
            return Step::Wait(format!("letting the cluster settle after a defragmentation ({since}s ago)"));
        }
    }
    let (m, why) = &todo[0];
    if m.leader
        && let Some(to) = o.members.iter().filter(|x| x.id != m.id).min_by_key(|x| (x.last_defrag.is_none(), &x.name))
    {
        return Step::MoveLeader {
            to: to.id,
            to_name: to.name.clone(),
            reason: format!("{} leads and is defragmented last", m.name),
        };
    }
    Step::Defragment { id: m.id, name: m.name.clone(), reason: why.clone() }
}

/// NOSPACE recovery: compact, defragment every member, disarm.
fn no_space(p: &Policy, o: &Observed, all_ready: bool) -> Step {
    if !all_ready {
        return Step::Wait("NOSPACE: waiting for every member to be healthy before freeing space".into());
    }
    let compacted = o.recovery.as_ref().and_then(|r| r.compacted);
    let all_history = o.recovery.as_ref().is_some_and(|r| r.all_history);
    let Some(compacted) = compacted else {
        return Step::Compact {
            revision: (o.revision - p.retain_revisions).max(0),
            all_history: p.retain_revisions == 0,
            reason: format!("NOSPACE: compacting history, keeping {} revisions", p.retain_revisions),
        };
    };
    let pending = |m: &MemberDb| m.last_defrag.is_none_or(|t| t < compacted);
    if o.members.iter().any(pending) {
        if let Some(m) = o.members.iter().find(|m| pending(m) && backing_off(m, o.now)) {
            return Step::Wait(format!("NOSPACE: defragmenting {} failed; retrying after its backoff", m.name));
        }
        return round(o, NOSPACE_SETTLE_SECS, |m| {
            pending(m).then(|| "NOSPACE: freeing the space compaction released".to_string())
        });
    }
    let largest = o.members.iter().map(|m| m.db_size).max().unwrap_or(0);
    if largest * 100 < p.quota * DISARM_BELOW_PERCENT {
        return Step::Disarm {
            reason: format!(
                "NOSPACE: every member defragmented, the largest db file is {} of a {} quota",
                mib(largest),
                mib(p.quota)
            ),
        };
    }
    if !all_history {
        return Step::Compact {
            revision: o.revision,
            all_history: true,
            reason: format!(
                "NOSPACE: keeping {} revisions freed too little ({} of a {} quota); compacting all history",
                p.retain_revisions,
                mib(largest),
                mib(p.quota)
            ),
        };
    }
    Step::Blocked(format!(
        "NOSPACE: the data itself takes {} of the {} quota after compacting all history and defragmenting every member; set spec.etcd.quotaBackendBytes to at least {} (rolled out member by member), or delete data",
        mib(largest),
        mib(p.quota),
        suggested_quota(largest)
    ))
}

/// What a maintenance step did, for the status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Outcome {
    #[default]
    None,
    Defragmented {
        name: String,
        at: Timestamp,
        blocked_ms: i64,
        before: i64,
        after: i64,
    },
    DefragFailed {
        name: String,
        at: Timestamp,
    },
    Compacted {
        revision: i64,
        all_history: bool,
        at: Timestamp,
    },
    Disarmed {
        at: Timestamp,
    },
}

/// The member records of this pass: what the previous status recorded, with the
/// outcome of this pass's step.
pub fn member_records(members: &mut [MemberStatus], previous: Option<&EtcdClusterStatus>, outcome: &Outcome) {
    for m in members.iter_mut() {
        if let Some(p) = previous.and_then(|p| p.members.iter().find(|p| p.name == m.name)) {
            m.last_defragmentation = p.last_defragmentation.clone();
            m.defrag_failures = p.defrag_failures;
            m.last_defrag_failure = p.last_defrag_failure.clone();
        }
        match outcome {
            Outcome::Defragmented { name, at, blocked_ms, before, after } if *name == m.name => {
                m.last_defragmentation = Some(DefragRecord {
                    time: Time(*at),
                    blocked_millis: *blocked_ms,
                    db_size_before: *before,
                    db_size_after: *after,
                });
                m.defrag_failures = 0;
                m.last_defrag_failure = None;
            }
            Outcome::DefragFailed { name, at } if *name == m.name => {
                m.defrag_failures += 1;
                m.last_defrag_failure = Some(Time(*at));
            }
            _ => {}
        }
    }
}

/// The maintenance status of this pass. `no_space`: the alarm as observed (`None`: no
/// answer); `largest_db`: the largest member db file observed.
pub fn status(
    previous: Option<&MaintenanceStatus>,
    no_space: Option<bool>,
    largest_db: i64,
    outcome: &Outcome,
    now: Timestamp,
) -> Option<MaintenanceStatus> {
    let mut s = previous.cloned().unwrap_or_default();
    match no_space {
        // Raised and not yet recorded: the recovery starts (unless this pass disarmed it).
        Some(true) if s.no_space.is_none() && !matches!(outcome, Outcome::Disarmed { .. }) => {
            s.no_space = Some(NoSpaceRecovery {
                detected: Time(now),
                db_size_before: largest_db,
                compacted: None,
                compacted_revision: None,
                all_history: false,
                recovered: None,
                db_size_after: None,
            });
        }
        // Gone without etcd-pilot disarming it (someone did by hand): nothing under way.
        Some(false) if !matches!(outcome, Outcome::Disarmed { .. }) => s.no_space = None,
        _ => {}
    }
    match outcome {
        Outcome::Compacted { revision, all_history, at } => {
            s.last_compaction = Some(CompactionRecord { time: Time(*at), revision: *revision });
            if let Some(r) = &mut s.no_space {
                r.compacted = Some(Time(*at));
                r.compacted_revision = Some(*revision);
                r.all_history |= *all_history;
            }
        }
        Outcome::Disarmed { at } => {
            if let Some(mut r) = s.no_space.take() {
                r.recovered = Some(Time(*at));
                r.db_size_after = Some(largest_db);
                s.last_no_space_recovery = Some(r);
            }
        }
        _ => {}
    }
    (s != MaintenanceStatus::default()).then_some(s)
}

/// A finished recovery, in a sentence.
pub fn describe_recovery(r: &NoSpaceRecovery) -> String {
    let took = match &r.recovered {
        Some(end) => format!(" in {}s", end.0.duration_since(r.detected.0).as_secs()),
        None => String::new(),
    };
    let after = r.db_size_after.unwrap_or(r.db_size_before);
    format!(
        "NOSPACE recovered{took}: largest db file {} -> {} ({} freed){}; writes are accepted again",
        mib(r.db_size_before),
        mib(after),
        mib((r.db_size_before - after).max(0)),
        r.compacted_revision.map(|rev| format!(", history compacted to revision {rev}")).unwrap_or_default()
    )
}

#[cfg(test)]
#[path = "maintenance_tests.rs"]
mod tests;
