//! The pure rules of a backup schedule: when the next backup is due, and which backups
//! retention deletes.

use jiff::Timestamp;

use crate::api::Phase;
pub use crate::shared::cron::{due_slot, interval, next_slot};

/// Failed backups are kept this long for diagnosis (they never count for retention).
pub const KEEP_FAILED_SECS: i64 = 24 * 3600;

/// A backup this schedule made, as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Made {
    pub name: String,
    pub phase: Phase,
    /// When it was created (its slot).
    pub created: Timestamp,
    pub completed: Option<Timestamp>,
    pub deleting: bool,
}

/// What to do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Run {
    /// Nothing due.
    No,
    /// Due, but a backup of this schedule is still running: wait for it (never two at once).
    Wait(String),
    /// Create the backup of this slot.
    Backup(Timestamp),
}

pub fn run(due: Option<Timestamp>, suspended: bool, made: &[Made]) -> Run {
    let Some(slot) = due else { return Run::No };
    if suspended {
        return Run::No;
    }
    if let Some(b) = made.iter().find(|b| !b.phase.is_finished() && !b.deleting) {
        return Run::Wait(format!("backup {} is still running", b.name));
    }
    Run::Backup(slot)
}

/// The backups retention deletes: successful ones past `keep_last` (newest first) or
/// older than `max_age_secs`, but never the newest successful one; failed ones after
/// [`KEEP_FAILED_SECS`]. Running ones are never touched.
pub fn prune(made: &[Made], keep_last: Option<i32>, max_age_secs: Option<i64>, now: Timestamp) -> Vec<String> {
    let mut ok: Vec<&Made> = made.iter().filter(|b| b.phase == Phase::Succeeded && !b.deleting).collect();
    ok.sort_by(|a, b| (b.completed.unwrap_or(b.created), &b.name).cmp(&(a.completed.unwrap_or(a.created), &a.name)));
    let mut out = Vec::new();
    for (i, b) in ok.iter().enumerate() {
        if i == 0 {
            continue;
        }
        let too_many = keep_last.is_some_and(|k| i >= usize::try_from(k.max(1)).unwrap_or(1));
        let too_old = max_age_secs.is_some_and(|age| (now - b.created).get_seconds() > age);
        if too_many || too_old {
            out.push(b.name.clone());
        }
    }
    for b in made.iter().filter(|b| b.phase == Phase::Failed && !b.deleting) {
        if (now - b.completed.unwrap_or(b.created)).get_seconds() > KEEP_FAILED_SECS {
            out.push(b.name.clone());
        }
    }
    out
}

/// The name of the backup of one slot: `<schedule>-<minutes since the epoch>`, as a
/// CronJob names its Jobs, so a slot is never run twice even across a crash.
pub fn backup_name(schedule: &str, slot: Timestamp) -> String {
    let minutes = slot.as_second() / 60;
    let suffix = format!("-{minutes}");
    let keep = 253usize.saturating_sub(suffix.len());
    let base: String = schedule.chars().take(keep).collect();
    format!("{base}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn made(name: &str, phase: Phase, created: &str) -> Made {
        Made { name: name.into(), phase, created: t(created), completed: Some(t(created)), deleting: false }
    }

    #[test]
    fn the_interval_is_the_longest_gap_between_slots() {
        let utc = jiff::tz::TimeZone::UTC;
        let now = t("2026-11-23T10:17:00Z");
        let every = |expr: &str| interval(&crate::api::validation::parse_cron(expr).unwrap(), &utc, now);
        assert_eq!(every("*/5 * * * *"), Some(300));
        assert_eq!(every("@hourly"), Some(3600));
        assert_eq!(every("0 2 * * 1-5"), Some(3 * 86400), "Friday to Monday");
        assert_eq!(every("0 1,13 * * *"), Some(12 * 3600));
        assert_eq!(every("30 3 * * 0"), Some(7 * 86400));
    }

    #[test]
    fn one_catch_up_run_however_many_slots_were_missed() {
        let cron = crate::api::validation::parse_cron("*/5 * * * *").unwrap();
        let utc = jiff::tz::TimeZone::UTC;
        let now = t("2026-11-23T10:17:00Z");
        assert_eq!(due_slot(&cron, &utc, t("2026-11-23T10:15:00Z"), now), None, "this slot already ran");
        assert_eq!(due_slot(&cron, &utc, t("2026-11-23T10:14:00Z"), now), Some(t("2026-11-23T10:15:00Z")));
        assert_eq!(
            due_slot(&cron, &utc, t("2026-11-20T00:00:00Z"), now),
            Some(t("2026-11-23T10:15:00Z")),
            "three days down: one run, for the latest slot"
        );
        assert_eq!(next_slot(&cron, &utc, now), Some(t("2026-11-23T10:20:00Z")));
    }

    #[test]
    fn slots_are_in_the_schedules_time_zone() {
        let cron = crate::api::validation::parse_cron("0 2 * * *").unwrap();
        let berlin = jiff::tz::TimeZone::get("Europe/Berlin").unwrap();
        assert_eq!(next_slot(&cron, &berlin, t("2026-11-23T10:00:00Z")), Some(t("2026-11-24T01:00:00Z")));
        let daily = crate::api::validation::parse_cron("@daily").unwrap();
        assert_eq!(
            next_slot(&daily, &jiff::tz::TimeZone::UTC, t("2026-11-23T10:00:00Z")),
            Some(t("2026-11-24T00:00:00Z"))
        );
    }

    #[test]
    fn the_run_table() {
        let slot = t("2026-11-23T10:15:00Z");
        let running = made("s-1", Phase::Running, "2026-11-23T10:10:00Z");
        let done = made("s-1", Phase::Succeeded, "2026-11-23T10:10:00Z");
        assert_eq!(run(None, false, &[]), Run::No);
        assert_eq!(run(Some(slot), true, &[]), Run::No, "suspended");
        assert_eq!(run(Some(slot), false, &[done]), Run::Backup(slot));
        assert_eq!(run(Some(slot), false, &[running]), Run::Wait("backup s-1 is still running".into()));
    }

    #[test]
    fn retention_keeps_the_newest_and_drops_failed_ones_late() {
        let now = t("2026-11-23T12:00:00Z");
        let all = vec![
            made("s-4", Phase::Succeeded, "2026-11-23T11:00:00Z"),
            made("s-3", Phase::Succeeded, "2026-11-23T10:00:00Z"),
            made("s-2", Phase::Failed, "2026-11-23T09:30:00Z"),
            made("s-1", Phase::Succeeded, "2026-11-23T09:00:00Z"),
            made("s-0", Phase::Failed, "2026-11-21T09:00:00Z"),
            made("s-5", Phase::Running, "2026-11-23T11:59:00Z"),
        ];
        assert_eq!(prune(&all, Some(2), None, now), vec!["s-1".to_string(), "s-0".to_string()]);
        assert_eq!(prune(&all, None, Some(7200), now), vec!["s-1".to_string(), "s-0".to_string()]);
        assert_eq!(prune(&all, Some(1), None, now), vec!["s-3".to_string(), "s-1".to_string(), "s-0".to_string()]);
        let old = vec![made("s-9", Phase::Succeeded, "2026-01-01T00:00:00Z")];
        assert!(prune(&old, Some(1), Some(60), now).is_empty(), "the newest successful backup is never deleted");
    }

    #[test]
    fn backup_names_follow_the_slot() {
        assert_eq!(backup_name("nightly", t("2026-11-23T10:15:00Z")), "nightly-29923815");
        assert!(backup_name(&"x".repeat(253), t("2026-11-23T10:15:00Z")).len() <= 253);
    }
}
