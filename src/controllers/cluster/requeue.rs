//! When a cluster is looked at next: pure rules of the wait after a pass.

use std::time::{Duration, Instant};

use super::step::Step;
use crate::api::EtcdCluster;

/// How often an idle cluster with a maintenance schedule (or paused) is looked at (a
/// round falls due within this).
pub const IDLE_REQUEUE_SECS: u64 = 60;
/// How often an idle cluster without one is looked at: pod changes (readiness follows
/// etcd's health) and spec changes wake a pass at once, a cluster near its quota is
/// looked at every 5 s, so this is only for what etcd alone shows (a CORRUPT alarm, the
/// revision).
pub const CALM_REQUEUE_SECS: u64 = 120;

/// How often a cluster waiting for a node that can take a member looks again.
pub const PLACEMENT_REQUEUE_SECS: u64 = 30;

/// The largest member db file (bytes) as seen at an instant.
pub type DbSeen = (Instant, i64);

/// A member whose pod started less than this ago is looked at every second while it
/// settles (its etcd serves before its probes say so).
pub const JUST_STARTED_SECS: i64 = 20;

/// The shortest wait a growing db brings the next pass to.
pub const GROWTH_WAIT_MIN: Duration = Duration::from_secs(5);

/// How long an idle cluster may wait when its largest db file grew from `before` to
/// `now` (bytes, at those instants): half the time it would take at that rate to reach
/// the quota's warn mark (`warn_at` bytes), between [`GROWTH_WAIT_MIN`] and `wait`. A
/// cluster filling fast is then looked at before it crosses the mark, and from there
/// every 5 s (`QuotaHigh`), so a NOSPACE it runs into is found within seconds, without
/// every calm cluster being looked at that often.
pub fn growth_wait(before: Option<DbSeen>, now: DbSeen, warn_at: i64, wait: Duration) -> Duration {
    let Some((then, old)) = before else { return wait };
    let (at, size) = now;
    let secs = at.saturating_duration_since(then).as_secs_f64();
    if size <= old || secs <= 0.0 {
        return wait;
    }
    let rate = (size - old) as f64 / secs;
    let left = (warn_at - size).max(0) as f64 / rate;
    Duration::from_secs_f64(left / 2.0).clamp(GROWTH_WAIT_MIN, wait)
}

/// How long an idle cluster waits for its next pass.
pub fn idle_requeue(ec: &EtcdCluster) -> Duration {
    // Paused: the status still follows etcd (fragmentation, alarms) for the user to see.
    let scheduled = ec.spec.compaction.schedule.is_some() || ec.spec.defrag.schedule.is_some() || ec.spec.paused;
    Duration::from_secs(if scheduled { IDLE_REQUEUE_SECS } else { CALM_REQUEUE_SECS })
}

pub fn requeue_after(step: &Step) -> Duration {
    match step {
        Step::Idle => Duration::from_secs(IDLE_REQUEUE_SECS),
        Step::Blocked(_) => Duration::from_secs(15),
        Step::Wait(_) | Step::Bootstrap { .. } => Duration::from_secs(2),
        _ => Duration::from_secs(1),
    }
}

#[cfg(test)]
#[path = "requeue_tests.rs"]
mod tests;
