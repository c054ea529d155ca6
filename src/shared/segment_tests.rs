//! Segments hold whole, consecutive revisions only: the builder refuses anything else,
//! cuts on age or size, and what it cuts survives the round trip through bytes; bytes
//! that are not such a segment are refused.

use super::*;

fn put(key: &str, value: &str, create_revision: i64, version: i64, lease: i64) -> Change {
    Change { key: key.into(), value: value.into(), delete: false, create_revision, version, lease }
}

fn delete(key: &str) -> Change {
    Change { key: key.into(), value: Vec::new(), delete: true, create_revision: 0, version: 0, lease: 0 }
}

fn revision(revision: i64, received_ms: i64, changes: Vec<Change>) -> Revision {
    Revision { revision, received_ms, changes }
}

const RULE: FlushRule = FlushRule { max_age_ms: 5_000, max_bytes: 64 };

#[test]
fn the_builder_takes_exactly_the_next_whole_revision() {
    let mut b = Builder::new(101);
    assert_eq!(b.next(), 101);
    // A transaction of three keys is one revision.
    let txn = vec![put("/registry/pods/a", "1", 101, 1, 0), put("/registry/pods/b", "1", 101, 1, 0), delete("/c")];
    b.push(revision(101, 1_000, txn)).expect("the revision resumed from");
    let table = [
        (101, vec![put("/k", "v", 101, 1, 0)], Refused::OutOfOrder { expected: 102, found: 101 }),
        (103, vec![put("/k", "v", 103, 1, 0)], Refused::OutOfOrder { expected: 102, found: 103 }),
        (100, vec![put("/k", "v", 100, 1, 0)], Refused::OutOfOrder { expected: 102, found: 100 }),
        (102, vec![], Refused::NoChange(102)),
    ];
    for (rev, changes, refused) in table {
        assert_eq!(b.push(revision(rev, 1_100, changes)), Err(refused), "revision {rev}");
        assert_eq!(b.next(), 102, "a refused revision changes nothing");
    }
    b.push(revision(102, 1_200, vec![put("/registry/pods/a", "2", 101, 2, 0)])).expect("the next one");
    assert_eq!(b.next(), 103);
}

#[test]
fn a_segment_is_due_by_the_age_of_its_oldest_revision_or_its_size() {
    let mut b = Builder::new(1);
    assert!(!b.due(RULE, i64::MAX), "nothing open: nothing due");
    b.push(revision(1, 10_000, vec![put("/a", "x", 1, 1, 0)])).unwrap();
    assert!(!b.due(RULE, 14_999));
    assert!(b.due(RULE, 15_000), "the oldest revision waited flushSeconds");
    let mut big = Builder::new(1);
    big.push(revision(1, 10_000, vec![put("/a", &"x".repeat(63), 1, 1, 0)])).unwrap();
    assert!(big.due(RULE, 10_000), "past the size bound at once");
}

#[test]
fn a_cut_segment_round_trips_and_the_stream_continues_after_it() {
    let mut b = Builder::new(41);
    assert_eq!(b.cut(Vec::new()), None, "nothing appended: no segment");
    b.push(revision(41, 1, vec![put("/a", "1", 41, 1, 7)])).unwrap();
    b.push(revision(42, 2, vec![put("/a", "2", 41, 2, 7), delete("/b")])).unwrap();
    let leases = vec![Lease { id: 7, granted_ttl: 60, remaining_ttl: 42 }];
    let segment = b.cut(leases.clone()).expect("a segment");
    assert_eq!((segment.first, segment.last, segment.format), (41, 42, FORMAT));
    assert_eq!(decode(&encode(&segment)), Ok(segment.clone()));
    assert_eq!(segment.leases, leases);
    assert_eq!(b.next(), 43, "the next segment starts after the cut");
    assert_eq!(b.cut(Vec::new()), None);
    b.push(revision(43, 3, vec![put("/c", "1", 43, 1, 0)])).unwrap();
    assert_eq!(b.cut(Vec::new()).map(|s| (s.first, s.last)), Some((43, 43)));
}

#[test]
fn bytes_that_are_not_one_run_of_whole_revisions_are_refused() {
    let good = Segment {
        format: FORMAT,
        first: 5,
        last: 7,
        revisions: (5..=7).map(|r| revision(r, r, vec![put("/k", "v", 5, r - 4, 0)])).collect(),
        leases: Vec::new(),
    };
    assert_eq!(decode(&encode(&good)), Ok(good.clone()));
    let with = |f: &dyn Fn(&mut Segment)| {
        let mut s = good.clone();
        f(&mut s);
        decode(&encode(&s))
    };
    assert_eq!(with(&|s| s.format = 2), Err(Invalid::Format(2)));
    assert_eq!(with(&|s| s.revisions.clear()), Err(Invalid::Empty { first: 5, last: 7 }));
    assert_eq!(with(&|s| s.first = 4), Err(Invalid::First { said: 4, found: 5 }));
    assert_eq!(with(&|s| s.last = 8), Err(Invalid::Last { said: 8, found: 7 }));
    assert_eq!(
        with(&|s| {
            s.revisions.remove(1);
        }),
        Err(Invalid::Broken { after: 5, found: 7 }),
        "a revision missing"
    );
    assert_eq!(
        with(&|s| s.revisions[1] = s.revisions[0].clone()),
        Err(Invalid::Broken { after: 5, found: 5 }),
        "a revision written twice"
    );
    assert_eq!(with(&|s| s.revisions[2].changes.clear()), Err(Invalid::NoChange(7)));
    let bytes = encode(&good);
    assert!(matches!(decode(&bytes[..bytes.len() - 3]), Err(Invalid::Decode(_))), "truncated");
}
