use super::*;
use crate::controllers::cluster::fixtures::cluster;
use serde_json::json;

#[test]
fn a_growing_db_brings_the_next_pass_forward() {
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let calm = Duration::from_secs(CALM_REQUEUE_SECS);
    const MIB: i64 = 1 << 20;
    let warn = 800 * MIB;
    let rows: &[(Option<DbSeen>, DbSeen, Duration)] = &[
        // First look, or nothing grew (or it shrank): the usual wait.
        (None, (at(0), 100 * MIB), calm),
        (Some((at(0), 100 * MIB)), (at(120), 100 * MIB), calm),
        (Some((at(0), 300 * MIB)), (at(120), 100 * MIB), calm),
        // 1 MiB/s with 600 MiB to the mark: 300 s, capped at the usual wait.
        (Some((at(0), 80 * MIB)), (at(120), 200 * MIB), calm),
        // 5 MiB/s with 200 MiB to go: 40 s, looked at after 20 s.
        (Some((at(0), 0)), (at(120), 600 * MIB), Duration::from_secs(20)),
        // Past the mark already (QuotaHigh takes over) or very fast: the floor.
        (Some((at(0), 0)), (at(120), 900 * MIB), GROWTH_WAIT_MIN),
        (Some((at(0), 0)), (at(5), 700 * MIB), GROWTH_WAIT_MIN),
        // No time passed: no rate.
        (Some((at(5), 0)), (at(5), 700 * MIB), calm),
    ];
    for (i, (before, now, want)) in rows.iter().enumerate() {
        assert_eq!(growth_wait(*before, *now, warn, calm), *want, "row {i}");
    }
}

#[test]
fn calm_clusters_are_looked_at_less_often_than_scheduled_or_paused_ones() {
    let calm = cluster(json!({"size": 3, "version": "3.5.1"}));
    assert_eq!(idle_requeue(&calm), Duration::from_secs(CALM_REQUEUE_SECS));
    for spec in [
        json!({"size": 3, "version": "3.5.1", "compaction": {"schedule": "@hourly"}}),
        json!({"size": 3, "version": "3.5.1", "defrag": {"schedule": "0 3 * * *"}}),
        json!({"size": 3, "version": "3.5.1", "paused": true}),
    ] {
        assert_eq!(idle_requeue(&cluster(spec.clone())), Duration::from_secs(IDLE_REQUEUE_SECS), "{spec}");
    }
}
