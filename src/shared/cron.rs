//! Cron slots: when a schedule (a backup schedule, a maintenance round) is due.

use jiff::{Timestamp, Zoned};

/// The latest slot at or before `now`, if it is after `since` (the last run, or the
/// schedule's creation): one catch-up run however many slots were missed.
pub fn due_slot(cron: &croner::Cron, tz: &jiff::tz::TimeZone, since: Timestamp, now: Timestamp) -> Option<Timestamp> {
    let now_z = Zoned::new(now, tz.clone());
    let slot = cron.find_previous_occurrence(&now_z, true).ok()?.timestamp();
    (slot > since).then_some(slot)
}

/// The first slot after `now`.
pub fn next_slot(cron: &croner::Cron, tz: &jiff::tz::TimeZone, now: Timestamp) -> Option<Timestamp> {
    cron.find_next_occurrence(&Zoned::new(now, tz.clone()), false).ok().map(|z| z.timestamp())
}

/// The longest time between two consecutive slots (seconds), over the next 50 slots:
/// how old the newest backup may get before a slot was surely missed.
pub fn interval(cron: &croner::Cron, tz: &jiff::tz::TimeZone, now: Timestamp) -> Option<i64> {
    let mut at = Zoned::new(now, tz.clone());
    let mut longest: Option<i64> = None;
    let mut previous: Option<Timestamp> = None;
    for _ in 0..50 {
        let Ok(next) = cron.find_next_occurrence(&at, false) else { break };
        if let Some(p) = previous {
            let gap = (next.timestamp() - p).get_seconds();
            longest = Some(longest.map_or(gap, |l| l.max(gap)));
        }
        previous = Some(next.timestamp());
        at = next;
    }
    longest
}
