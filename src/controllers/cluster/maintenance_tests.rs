use super::*;

const MIB: i64 = 1024 * 1024;

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + s).unwrap()
}

fn policy() -> Policy {
    Policy {
        defrag_enabled: true,
        threshold_percent: 50,
        min_db_size: 64 * MIB,
        retain_revisions: 1000,
        remediate_no_space: true,
        quota: 256 * MIB,
    }
}

fn member(i: u64, db: i64, in_use: i64) -> MemberDb {
    MemberDb {
        name: format!("main-{i}"),
        id: i + 1,
        leader: i == 0,
        db_size: db * MIB,
        in_use: in_use * MIB,
        last_defrag: None,
        failures: 0,
        last_failure: None,
    }
}

/// Three members with 200 MiB db files of which 40 MiB in use; main-0 leads.
fn fragmented() -> Observed {
    Observed {
        now: t(1000),
        members: (0..3).map(|i| member(i, 200, 40)).collect(),
        no_space: false,
        corrupt: false,
        recovery: None,
        revision: 50_000,
        defrag_slot: None,
        compaction_due: false,
        streamed: None,
    }
}

fn done(mut o: Observed, i: usize, at: i64) -> Observed {
    o.members[i].last_defrag = Some(t(at));
    o.members[i].db_size = o.members[i].in_use;
    o
}

fn defrag(i: u64) -> Step {
    Step::Defragment { id: i + 1, name: format!("main-{i}"), reason: String::new() }
}

/// Steps compared with reasons blanked (rows check the kind and the member).
fn shape(s: Step) -> Step {
    match s {
        Step::Defragment { id, name, .. } => Step::Defragment { id, name, reason: String::new() },
        Step::MoveLeader { to, to_name, .. } => Step::MoveLeader { to, to_name, reason: String::new() },
        Step::Compact { revision, all_history, .. } => Step::Compact { revision, all_history, reason: String::new() },
        Step::Disarm { .. } => Step::Disarm { reason: String::new() },
        Step::Wait(_) => Step::Wait(String::new()),
        Step::Blocked(_) => Step::Blocked(String::new()),
        other => other,
    }
}

fn mv(to: u64) -> Step {
    Step::MoveLeader { to: to + 1, to_name: format!("main-{to}"), reason: String::new() }
}

fn compact(revision: i64, all_history: bool) -> Step {
    Step::Compact { revision, all_history, reason: String::new() }
}

fn wait() -> Step {
    Step::Wait(String::new())
}

fn nospace(mut o: Observed) -> Observed {
    o.no_space = true;
    o
}

fn recovering(mut o: Observed, compacted: i64, all_history: bool) -> Observed {
    o.recovery = Some(Recovery { compacted: Some(t(compacted)), all_history });
    o
}

fn with(mut o: Observed, f: impl FnOnce(&mut Observed)) -> Observed {
    f(&mut o);
    o
}

#[test]
fn table() {
    let p = policy();
    let full = |f: &mut Observed| {
        for m in &mut f.members {
            m.db_size = 256 * MIB;
            m.in_use = 250 * MIB;
        }
    };
    let rows: Vec<(&str, Policy, Observed, bool, Step)> = vec![
        // Threshold defragmentation round: followers by name, then the leader after
        // moving leadership; a settle time between members.
        ("fragmented: a follower first", p.clone(), fragmented(), true, defrag(1)),
        ("not while a member is unhealthy", p.clone(), fragmented(), false, Step::Idle),
        ("settling after the first", p.clone(), done(fragmented(), 1, 998), true, wait()),
        ("then the next follower", p.clone(), done(fragmented(), 1, 990), true, defrag(2)),
        (
            "the leader last: leadership moved to a defragmented member first",
            p.clone(),
            done(done(fragmented(), 1, 900), 2, 990),
            true,
            mv(1),
        ),
        (
            "the old leader, now a follower",
            p.clone(),
            with(done(done(fragmented(), 1, 900), 2, 990), |o| {
                o.members[0].leader = false;
                o.members[1].leader = true;
            }),
            true,
            defrag(0),
        ),
        ("all done: idle", p.clone(), done(done(done(fragmented(), 1, 900), 2, 950), 0, 990), true, Step::Idle),
        (
            "a crash after a defragmentation, before its record: the member is done again, harmlessly",
            p.clone(),
            fragmented(),
            true,
            defrag(1),
        ),
        (
            "below the size floor: nothing",
            Policy { min_db_size: 300 * MIB, ..p.clone() },
            fragmented(),
            true,
            Step::Idle,
        ),
        ("below the threshold: nothing", Policy { threshold_percent: 90, ..p.clone() }, fragmented(), true, Step::Idle),
        ("defragmentation off", Policy { defrag_enabled: false, ..p.clone() }, fragmented(), true, Step::Idle),
        (
            "a member defragmented minutes ago that did not shrink is left alone",
            p.clone(),
            with(fragmented(), |o| {
                for m in &mut o.members {
                    m.last_defrag = Some(t(900));
                }
            }),
            true,
            Step::Idle,
        ),
        (
            "a member backing off after a failure is skipped",
            p.clone(),
            with(fragmented(), |o| {
                o.members[1].failures = 2;
                o.members[1].last_failure = Some(t(980));
            }),
            true,
            defrag(2),
        ),
        (
            "its backoff over (60 s after a second failure), it is tried again",
            p.clone(),
            with(fragmented(), |o| {
                o.members[1].failures = 2;
                o.members[1].last_failure = Some(t(939));
            }),
            true,
            defrag(1),
        ),
        (
            "a single member defragments itself",
            p.clone(),
            with(fragmented(), |o| o.members.truncate(1)),
            true,
            defrag(0),
        ),
        // Scheduled defragmentation: every member defragmented before the slot.
        (
            "a scheduled round covers members under the threshold",
            Policy { threshold_percent: 99, ..p.clone() },
            with(fragmented(), |o| o.defrag_slot = Some(t(500))),
            true,
            defrag(1),
        ),
        (
            "members defragmented after the slot are done",
            Policy { threshold_percent: 99, ..p.clone() },
            with(done(done(done(fragmented(), 1, 600), 2, 700), 0, 800), |o| o.defrag_slot = Some(t(500))),
            true,
            Step::Idle,
        ),
        // Compaction.
        (
            "a scheduled compaction first",
            p.clone(),
            with(fragmented(), |o| o.compaction_due = true),
            true,
            compact(49_000, false),
        ),
        (
            "keeping nothing compacts all history",
            Policy { retain_revisions: 0, ..p.clone() },
            with(fragmented(), |o| o.compaction_due = true),
            true,
            compact(50_000, true),
        ),
        (
            "a continuous backup behind: compaction stops at what it made durable",
            p.clone(),
            with(fragmented(), |o| {
                o.compaction_due = true;
                o.streamed = Some(48_500);
            }),
            true,
            compact(48_500, false),
        ),
        (
            "a continuous backup ahead of the compaction: no change",
            p.clone(),
            with(fragmented(), |o| {
                o.compaction_due = true;
                o.streamed = Some(49_990);
            }),
            true,
            compact(49_000, false),
        ),
        // CORRUPT: nothing at all.
        ("CORRUPT: no maintenance", p.clone(), with(nospace(fragmented()), |o| o.corrupt = true), true, Step::Idle),
        // NOSPACE.
        ("NOSPACE: compact first", p.clone(), with(nospace(fragmented()), full), true, compact(49_000, false)),
        (
            "NOSPACE with a member down: wait (reads still served)",
            p.clone(),
            with(nospace(fragmented()), full),
            false,
            wait(),
        ),
        (
            "NOSPACE, remediation off: nothing",
            Policy { remediate_no_space: false, ..p.clone() },
            nospace(fragmented()),
            true,
            Step::Idle,
        ),
        ("NOSPACE compacted: a follower", p.clone(), recovering(nospace(fragmented()), 990, false), true, defrag(1)),
        (
            "a defragmentation from before the compaction does not count",
            p.clone(),
            recovering(nospace(done(fragmented(), 1, 900)), 950, false),
            true,
            defrag(1),
        ),
        (
            "NOSPACE: the leader last, leadership moved first",
            p.clone(),
            recovering(nospace(done(done(fragmented(), 1, 960), 2, 980)), 950, false),
            true,
            mv(1),
        ),
        (
            "NOSPACE: a member backing off holds the round",
            p.clone(),
            recovering(
                nospace(with(fragmented(), |o| {
                    o.members[1].failures = 1;
                    o.members[1].last_failure = Some(t(990));
                })),
                950,
                false,
            ),
            true,
            wait(),
        ),
        (
            "NOSPACE: all defragmented and under the quota: disarm",
            p.clone(),
            recovering(nospace(done(done(done(fragmented(), 1, 960), 2, 970), 0, 980)), 950, false),
            true,
            Step::Disarm { reason: String::new() },
        ),
        (
            "NOSPACE: a crash after the disarm, before its record: the alarm is gone, so nothing",
            p.clone(),
            recovering(done(done(done(fragmented(), 1, 960), 2, 970), 0, 980), 950, false),
            true,
            Step::Idle,
        ),
        (
            "NOSPACE: still full after keeping history: compact all of it",
            p.clone(),
            with(recovering(nospace(done(done(done(fragmented(), 1, 960), 2, 970), 0, 980)), 950, false), full),
            true,
            compact(50_000, true),
        ),
        (
            "NOSPACE: all history compacted: a second round",
            p.clone(),
            with(recovering(nospace(done(done(done(fragmented(), 1, 960), 2, 970), 0, 980)), 985, true), full),
            true,
            defrag(1),
        ),
        (
            "NOSPACE: the data itself exceeds the quota: blocked, saying what quota to set",
            p.clone(),
            with(recovering(nospace(done(done(done(fragmented(), 1, 960), 2, 970), 0, 980)), 950, true), full),
            true,
            Step::Blocked(String::new()),
        ),
    ];
    for (name, p, o, ready, want) in rows {
        assert_eq!(shape(next(&p, &o, ready)), want, "{name}");
    }
}

#[test]
fn messages_say_what_to_do() {
    let mut o = recovering(nospace(done(done(done(fragmented(), 1, 960), 2, 970), 0, 980)), 950, true);
    for m in &mut o.members {
        m.db_size = 250 * MIB;
    }
    let Step::Blocked(why) = next(&policy(), &o, true) else { panic!() };
    assert!(why.contains("at least 328204288"), "{why}");
    assert_eq!(suggested_quota(250 * MIB), 313 * MIB);
    let Step::Defragment { reason, .. } = next(&policy(), &fragmented(), true) else { panic!() };
    assert_eq!(reason, "80% of its 200.0 MiB db file is free (threshold 50%)");
}

#[test]
fn backoff_doubles_up_to_half_an_hour() {
    let mut m = member(1, 100, 10);
    m.last_failure = Some(t(0));
    let after = |n: u32| {
        let mut m = m.clone();
        m.failures = n;
        retry_at(&m).map(|r| r.duration_since(t(0)).as_secs())
    };
    assert_eq!(after(0), None);
    assert_eq!(after(1), Some(30));
    assert_eq!(after(2), Some(60));
    assert_eq!(after(7), Some(1800));
    assert_eq!(after(40), Some(1800));
}

#[test]
fn a_recovery_is_recorded_from_detection_to_disarm() {
    // Detected and compacted in one pass.
    let compacted = Outcome::Compacted { revision: 900, all_history: false, at: t(10) };
    let s1 = status(None, Some(true), 256 * MIB, &compacted, t(10)).unwrap();
    let r = s1.no_space.clone().unwrap();
    assert_eq!((r.detected.0, r.db_size_before, r.compacted_revision), (t(10), 256 * MIB, Some(900)));
    assert_eq!(s1.last_compaction.as_ref().unwrap().revision, 900);
    // Later passes keep it; a second compaction of all history is noted.
    let s2 = status(Some(&s1), Some(true), 256 * MIB, &Outcome::None, t(20)).unwrap();
    assert_eq!(s2, s1);
    let all = Outcome::Compacted { revision: 1000, all_history: true, at: t(30) };
    let s3 = status(Some(&s2), Some(true), 250 * MIB, &all, t(30)).unwrap();
    assert!(s3.no_space.as_ref().unwrap().all_history);
    assert_eq!(s3.no_space.as_ref().unwrap().detected.0, t(10), "detection time kept");
    // Disarmed: the recovery is finished with the size after; the alarm still seen
    // in this pass's (earlier) view does not start another.
    let s4 = status(Some(&s3), Some(true), 40 * MIB, &Outcome::Disarmed { at: t(50) }, t(50)).unwrap();
    assert_eq!(s4.no_space, None);
    let done = s4.last_no_space_recovery.clone().unwrap();
    assert_eq!((done.db_size_after, done.recovered.clone().map(|r| r.0)), (Some(40 * MIB), Some(t(50))));
    assert_eq!(
        describe_recovery(&done),
        "NOSPACE recovered in 40s: largest db file 256.0 MiB -> 40.0 MiB (216.0 MiB freed), history compacted to revision 1000; writes are accepted again"
    );
    // No answer: nothing changes; disarmed by hand: the record goes.
    assert_eq!(status(Some(&s3), None, 0, &Outcome::None, t(60)).unwrap(), s3);
    assert_eq!(status(Some(&s3), Some(false), 0, &Outcome::None, t(60)).unwrap().no_space, None);
    assert_eq!(status(None, Some(false), 0, &Outcome::None, t(60)), None, "nothing recorded: no field");
}

#[test]
fn member_records_follow_outcomes() {
    let prev = EtcdClusterStatus {
        members: vec![
            MemberStatus {
                name: "main-0".into(),
                defrag_failures: 2,
                last_defrag_failure: Some(Time(t(1))),
                ..Default::default()
            },
            MemberStatus { name: "main-1".into(), ..Default::default() },
        ],
        ..Default::default()
    };
    let fresh = || {
        vec![
            MemberStatus { name: "main-0".into(), ..Default::default() },
            MemberStatus { name: "main-1".into(), ..Default::default() },
        ]
    };
    let mut m = fresh();
    member_records(&mut m, Some(&prev), &Outcome::None);
    assert_eq!(m[0].defrag_failures, 2, "carried over");
    let mut m = fresh();
    member_records(&mut m, Some(&prev), &Outcome::DefragFailed { name: "main-0".into(), at: t(5) });
    assert_eq!((m[0].defrag_failures, m[0].last_defrag_failure.clone().map(|t| t.0)), (3, Some(t(5))));
    let mut m = fresh();
    let ok = Outcome::Defragmented { name: "main-0".into(), at: t(9), blocked_ms: 1200, before: 100, after: 20 };
    member_records(&mut m, Some(&prev), &ok);
    assert_eq!((m[0].defrag_failures, m[0].last_defrag_failure.clone()), (0, None), "a success resets failures");
    assert_eq!(m[0].last_defragmentation.as_ref().map(|d| (d.blocked_millis, d.db_size_after)), Some((1200, 20)));
    assert_eq!(m[1].last_defragmentation, None);
}
