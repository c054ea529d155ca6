//! The index: where a stream resumes after any stop, what a restore to a point reads
//! (the newest base at or before it, the segments up to it), points outside the window
//! or in a gap refused with the window named, compaction held at what is durable,
//! retention of segments with their bases.

use super::*;

fn base(key: &str, revision: i64, time_ms: i64) -> Base {
    Base { key: key.into(), revision, time_ms, sha256: format!("sha-{key}") }
}

fn seg(first: i64, last: i64, first_ms: i64, last_ms: i64) -> SegmentRef {
    SegmentRef { key: format!("s{first}-{last}"), first, last, first_ms, last_ms, sha256: String::new() }
}

/// Base b1 at revision 100 (t=1000), segments 101..=300 (t=1010..=3000), base b2 at 250
/// (t=2500), then the stream stopped at 300; etcd compacted past it; base b3 at 400
/// (t=4000) and segments 401..=450 (t=4010..=4500).
fn index() -> Index {
    Index {
        bases: vec![base("b1", 100, 1000), base("b2", 250, 2500), base("b3", 400, 4000)],
        segments: vec![seg(101, 200, 1010, 2000), seg(201, 300, 2010, 3000), seg(401, 450, 4010, 4500)],
        gaps: vec![Gap { from: 301, to: 400, from_ms: 3000, to_ms: 4000 }],
    }
}

fn keys(plan: &Plan) -> Vec<&str> {
    plan.segments.iter().map(|s| s.key.as_str()).collect()
}

#[test]
fn the_stream_resumes_after_what_is_durable() {
    assert_eq!(Index::default().resume(), Resume::NeedBase, "no base: one at once");
    let only_base = Index { bases: vec![base("b1", 100, 1000)], ..Index::default() };
    assert_eq!(only_base.resume(), Resume::From(101), "from the base's own revision + 1");
    assert_eq!(index().resume(), Resume::From(451));
    // A base newer than the last segment (taken after a gap): from the base.
    let mut after_gap = index();
    after_gap.segments.pop();
    assert_eq!(after_gap.resume(), Resume::From(401));
}

#[test]
fn a_restore_reads_the_newest_base_at_or_before_the_point_and_the_segments_up_to_it() {
    let i = index();
    let table: [(Point, &str, &[&str], Upto); 8] = [
        (Point::Revision(100), "b1", &[], Upto::Revision(100)),
        (Point::Revision(150), "b1", &["s101-200"], Upto::Revision(150)),
        (Point::Revision(200), "b1", &["s101-200"], Upto::Revision(200)),
        (Point::Revision(201), "b1", &["s101-200", "s201-300"], Upto::Revision(201)),
        // b2 (250) is newer than b1 and still before the point: the replay is shorter.
        (Point::Revision(260), "b2", &["s201-300"], Upto::Revision(260)),
        (Point::Revision(400), "b3", &[], Upto::Revision(400)),
        (Point::Latest, "b3", &["s401-450"], Upto::Revision(450)),
        (Point::Time(2005), "b1", &["s101-200"], Upto::Time(2005)),
    ];
    for (point, want_base, want_segments, upto) in table {
        let plan = i.plan(point).unwrap_or_else(|e| panic!("{point:?}: {e}"));
        assert_eq!(
            (plan.base.key.as_str(), keys(&plan), plan.upto),
            (want_base, want_segments.to_vec(), upto),
            "{point:?}"
        );
    }
    let plan = i.plan(Point::Time(2600)).unwrap();
    assert_eq!((plan.base.key.as_str(), keys(&plan)), ("b2", vec!["s201-300"]), "a time after b2 was taken");
}

#[test]
fn points_outside_the_window_or_in_a_gap_are_refused_with_the_window() {
    let i = index();
    assert_eq!(i.window(), Some((100, 450, 1000, 4500)));
    let table = [
        (Point::Revision(99), "outside the window: revisions 100 to 450"),
        (Point::Revision(451), "outside the window: revisions 100 to 450"),
        (Point::Time(999), "outside the window"),
        // After the last durable revision: what was written meanwhile is not known.
        (Point::Time(4501), "outside the window"),
        (Point::Revision(301), "in a gap of the stream: revisions 301 to 400"),
        (Point::Revision(399), "in a gap of the stream: revisions 301 to 400"),
        (Point::Time(3500), "in a gap"),
    ];
    for (point, says) in table {
        let refused = i.plan(point).expect_err("refused").to_string();
        assert!(refused.contains(says), "{point:?}: {refused}");
    }
    assert_eq!(Index::default().plan(Point::Latest), Err(Unreachable::Empty));
}

#[test]
fn a_time_resolves_to_the_last_revision_received_at_or_before_it() {
    let received = [(101, 1010), (102, 1010), (103, 1500), (104, 2000)];
    let table = [(1009, None), (1010, Some(102)), (1499, Some(102)), (1500, Some(103)), (9999, Some(104))];
    for (t, want) in table {
        assert_eq!(resolve_time(received, t), want, "t={t}");
    }
}

#[test]
fn compaction_never_passes_what_the_stream_made_durable() {
    let table = [(500, None, 500), (500, Some(450), 450), (400, Some(450), 400), (450, Some(450), 450)];
    for (planned, streamed, allowed) in table {
        assert_eq!(compaction_limit(planned, streamed), allowed, "planned {planned}, durable {streamed:?}");
    }
}

#[test]
fn segments_and_gaps_go_with_the_oldest_kept_base() {
    let i = index();
    let (kept, gone) = i.prune(&["b2".into(), "b3".into()]);
    assert_eq!(gone, ["b1", "s101-200"], "what only b1 could use");
    assert_eq!(kept.bases.iter().map(|b| b.key.as_str()).collect::<Vec<_>>(), ["b2", "b3"]);
    assert_eq!(kept.plan(Point::Revision(260)).map(|p| keys(&p).len()), Ok(1), "b2 still reaches its segments");
    let (kept, gone) = i.prune(&["b3".into()]);
    assert_eq!(gone, ["b1", "b2", "s101-200", "s201-300"]);
    assert!(kept.gaps.is_empty(), "a gap before the oldest kept base is no longer in the window");
    assert_eq!(kept.window(), Some((400, 450, 4000, 4500)));
    // The index is what the store keeps beside the segments.
    let json = serde_json::to_string(&i).unwrap();
    assert!(json.contains("\"firstMs\":1010"), "{json}");
    assert_eq!(serde_json::from_str::<Index>(&json).unwrap(), i);
}

/// Bases join the index from the schedule's backups: the first at once, later ones once
/// the stream has passed their revision, the first one at or past a compaction gap with
/// the gap recorded; older ones never; retention takes bases and their segments out.
#[test]
fn the_admission_table() {
    let b1 = base("b1", 100, 1000);
    let b2 = base("b2", 250, 2500);
    let b3 = base("b3", 400, 4000);
    let streamed = |bases: Vec<Base>, last: i64| Index {
        bases,
        segments: vec![seg(101, 200, 1010, 2000), seg(201, last, 2010, 3000)],
        gaps: vec![],
    };
    struct Case {
        name: &'static str,
        index: Index,
        candidates: Vec<Base>,
        gap: Option<(i64, i64)>,
        bases: Vec<&'static str>,
        dropped: Vec<&'static str>,
        gap_recorded: Option<Gap>,
    }
    let cases = [
        Case {
            name: "no base yet: the first joins at once",
            index: Index::default(),
            candidates: vec![b1.clone()],
            gap: None,
            bases: vec!["b1"],
            dropped: vec![],
            gap_recorded: None,
        },
        Case {
            name: "a base the stream has not passed yet waits",
            index: streamed(vec![b1.clone()], 240),
            candidates: vec![b1.clone(), b2.clone()],
            gap: None,
            bases: vec!["b1"],
            dropped: vec![],
            gap_recorded: None,
        },
        Case {
            name: "once the segments pass it, it joins",
            index: streamed(vec![b1.clone()], 250),
            candidates: vec![b1.clone(), b2.clone()],
            gap: None,
            bases: vec!["b1", "b2"],
            dropped: vec![],
            gap_recorded: None,
        },
        Case {
            name: "after a compaction gap, the first base at or past the needed revision joins",
            index: streamed(vec![b1.clone()], 300),
            candidates: vec![b1.clone(), b3.clone()],
            gap: Some((301, 3000)),
            bases: vec!["b1", "b3"],
            dropped: vec![],
            gap_recorded: Some(Gap { from: 301, to: 400, from_ms: 3000, to_ms: 4000 }),
        },
        Case {
            name: "a base older than the newest in the index never joins",
            index: streamed(vec![b2.clone()], 300),
            candidates: vec![b1.clone(), b2.clone()],
            gap: None,
            bases: vec!["b2"],
            dropped: vec![],
            gap_recorded: None,
        },
        Case {
            name: "retention: a deleted base leaves with the segments before the oldest kept",
            index: streamed(vec![b1.clone(), b2.clone()], 300),
            candidates: vec![b2.clone()],
            gap: None,
            bases: vec!["b2"],
            dropped: vec!["s101-200"],
            gap_recorded: None,
        },
        Case {
            name: "an empty list of backups is not believed: the newest base stays",
            index: streamed(vec![b1.clone(), b2.clone()], 300),
            candidates: vec![],
            gap: None,
            bases: vec!["b2"],
            dropped: vec!["s101-200"],
            gap_recorded: None,
        },
    ];
    for c in cases {
        let (next, dropped, gap) = admit(&c.index, &c.candidates, c.gap);
        let bases: Vec<&str> = next.bases.iter().map(|b| b.key.as_str()).collect();
        assert_eq!(bases, c.bases, "{}", c.name);
        assert_eq!(dropped, c.dropped, "{}", c.name);
        assert_eq!(gap, c.gap_recorded, "{}", c.name);
        if let Some(g) = gap {
            assert!(next.gaps.contains(&g), "{}: the gap is in the index", c.name);
            assert_eq!(next.resume(), Resume::From(g.to + 1), "{}: the stream goes on after the new base", c.name);
        }
    }
}
