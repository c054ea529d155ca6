//! The continuous backup's stream with real parts (issue 23): a real etcd under a
//! workload like kube-apiserver's (puts, deletes, multi-key transactions, keys on a
//! lease that expires), streamed into a real S3-compatible store, stopped cleanly,
//! stopped dead (the future dropped, as by a crash) and resumed: the segments the index
//! names cover every revision after the base exactly once, and replayed over the state at
//! the base they give every key's value, create_revision, mod_revision, version and lease
//! as etcd reports them, at the last revision and at one in the middle. A compaction past
//! a stopped stream ends the next run with the gap named.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use etcd_pilot::backup_store::BackupStore;
use etcd_pilot::shared::segment::{self, FlushRule, KeyState};
use etcd_pilot::shared::stream::{self, Stop};
use etcd_pilot::shared::window::{Base, Index};
use futures::StreamExt;
use support::etcd::Cluster;
use support::s3::S3Server;

const PREFIX: &str = "it/default/main/continuous/";
const RULE: FlushRule = FlushRule { max_age_ms: 300, max_bytes: 1024 };

async fn state_at(kv: &mut Client, revision: i64) -> BTreeMap<Vec<u8>, KeyState> {
    let r = kv.get("", Some(GetOptions::new().with_all_keys().with_revision(revision))).await.expect("get at revision");
    r.kvs()
        .iter()
        .map(|k| {
            let held = KeyState {
                value: k.value().to_vec(),
                create_revision: k.create_revision(),
                mod_revision: k.mod_revision(),
                version: k.version(),
                lease: k.lease(),
            };
            (k.key().to_vec(), held)
        })
        .collect()
}

async fn revision(kv: &mut Client) -> i64 {
    kv.get("x", None).await.expect("revision").header().expect("header").revision()
}

/// One round of writes of the kinds kube-apiserver makes.
async fn workload(kv: &mut Client, round: usize) {
    for i in 0..20 {
        kv.put(format!("/registry/pods/default/p{}", (round * 7 + i) % 30), format!("pod {round}.{i}"), None)
            .await
            .expect("put");
    }
    kv.delete(format!("/registry/pods/default/p{}", round % 30), None).await.expect("delete");
    // A guarded multi-key transaction: one revision, several keys.
    let txn = Txn::new().when([Compare::version("/registry/ns/default", CompareOp::Greater, -1)]).and_then([
        TxnOp::put(format!("/registry/configmaps/default/c{round}"), "a", None),
        TxnOp::put(format!("/registry/secrets/default/s{round}"), "b", None),
        TxnOp::delete(format!("/registry/configmaps/default/c{}", round.wrapping_sub(2)), None),
    ]);
    kv.txn(txn).await.expect("txn");
    // Events on a short lease: its keys are deleted by etcd when it expires.
    let lease = kv.lease_grant(1, None).await.expect("lease").id();
    kv.put(format!("/registry/events/default/e{round}"), "event", Some(PutOptions::new().with_lease(lease)))
        .await
        .expect("leased put");
}

/// Every segment the index names, read back verified and decoded, in order.
async fn segments(store: &BackupStore, index: &Index) -> Vec<segment::Segment> {
    let mut out = Vec::new();
    for s in &index.segments {
        let mut d = store.download(&s.key).await.expect("segment");
        assert_eq!(d.sha256, s.sha256, "the index records the stored object's hash");
        let mut bytes = Vec::new();
        while let Some(c) = d.stream.next().await {
            bytes.extend_from_slice(&c.expect("verified bytes"));
        }
        out.push(segment::decode(&bytes).expect("a valid segment"));
    }
    out
}

#[tokio::test]
async fn segments_cover_every_revision_once_across_stops_and_replay_exactly() {
    let cluster = Cluster::start(1).await;
    let mut kv = cluster.kv().await;
    let server = S3Server::start().await;
    let store = server.store("backups").await;

    kv.put("/registry/ns/default", "ns", None).await.expect("put");
    workload(&mut kv, 0).await;
    // The base: written here as the index would record a full backup at this revision.
    let base_revision = revision(&mut kv).await;
    let base_state = state_at(&mut kv, base_revision).await;
    let mut index = Index {
        bases: vec![Base {
            key: "base".into(),
            revision: base_revision,
            time_ms: stream::now_ms(),
            sha256: String::new(),
        }],
        ..Index::default()
    };
    stream::write_index(&store, PREFIX, &index).await.expect("index");

    let mut watcher = cluster.kv().await;
    // 1. A clean stop: whatever was received is made durable before it returns.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run = {
        let store = store.clone();
        let mut index = index.clone();
        tokio::spawn(async move {
            let r = stream::run(&mut watcher, &store, PREFIX, &mut index, RULE, stopped, &mut stream::Feed::default())
                .await;
            (r, index, watcher)
        })
    };
    for round in 1..6 {
        workload(&mut kv, round).await;
    }
    let middle = revision(&mut kv).await;
    let middle_state = state_at(&mut kv, middle).await;
    for round in 6..10 {
        workload(&mut kv, round).await;
    }
    let written = revision(&mut kv).await;
    // Wait until the stream has made the last write durable, then stop it.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while stream::read_index(&store, PREFIX).await.expect("index").durable() < Some(written) {
        assert!(std::time::Instant::now() < deadline, "revision {written} not durable within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(true).expect("stop");
    let (result, after, mut watcher) = run.await.expect("stream task");
    assert_eq!(result.expect("stream"), Stop::Shutdown);
    index = stream::read_index(&store, PREFIX).await.expect("index");
    assert_eq!(index, after, "what the run holds is what is stored");
    assert!(index.segments.len() > 1, "more than one segment: {:?}", index.segments);

    // 2. A dead stop: the run dropped mid-stream while writes go on, as by a crash or a
    // lost Lease; whatever it had not made durable is streamed again by the next run.
    for cut_after_ms in [150, 700] {
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        let mut mine = stream::read_index(&store, PREFIX).await.expect("index");
        let mut feed = stream::Feed::default();
        let writes = async {
            for round in 0..3 {
                workload(&mut kv, 10 + round).await;
            }
        };
        let streaming = tokio::time::timeout(
            Duration::from_millis(cut_after_ms),
            stream::run(&mut watcher, &store, PREFIX, &mut mine, RULE, stopped, &mut feed),
        );
        let (_, cut) = tokio::join!(writes, streaming);
        assert!(cut.is_err(), "the run is cut, not ended");
    }
    let last = revision(&mut kv).await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut resumed = stream::read_index(&store, PREFIX).await.expect("index");
    let run = {
        let store = store.clone();
        tokio::spawn(async move {
            let r =
                stream::run(&mut watcher, &store, PREFIX, &mut resumed, RULE, stopped, &mut stream::Feed::default())
                    .await;
            (r, watcher)
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while stream::read_index(&store, PREFIX).await.expect("index").durable() < Some(last) {
        assert!(std::time::Instant::now() < deadline, "revision {last} not durable within 20 s after the resume");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(true).expect("stop");
    let (result, mut watcher) = run.await.expect("stream task");
    assert_eq!(result.expect("stream"), Stop::Shutdown);
    index = stream::read_index(&store, PREFIX).await.expect("index");

    // Every revision after the base, exactly once, in order, across every stop.
    let all = segments(&store, &index).await;
    let revisions: Vec<i64> = all.iter().flat_map(|s| s.revisions.iter().map(|r| r.revision)).collect();
    let expected: Vec<i64> = (base_revision + 1..=index.durable().expect("durable")).collect();
    assert_eq!(revisions, expected, "every revision once, in order");
    assert!(index.durable().expect("durable") >= last);
    for s in &all {
        assert_eq!((s.first, s.last), (s.revisions[0].revision, s.revisions[s.revisions.len() - 1].revision));
    }

    // Replayed over the base: etcd's own state at the middle and at the end.
    let mut replayed = base_state.clone();
    for r in all.iter().flat_map(|s| &s.revisions).filter(|r| r.revision <= middle) {
        segment::apply(&mut replayed, r);
    }
    assert_eq!(replayed, middle_state, "replay to revision {middle}");
    let end = index.durable().expect("durable");
    let mut replayed = base_state;
    for r in all.iter().flat_map(|s| &s.revisions) {
        segment::apply(&mut replayed, r);
    }
    assert_eq!(replayed, state_at(&mut kv, end).await, "replay to revision {end}");
    // The leases' expiries are in the stream: a leased key written and later deleted by
    // etcd when its lease ran out.
    let leased_then_gone = all
        .iter()
        .flat_map(|s| &s.revisions)
        .any(|r| r.changes.iter().any(|c| c.delete && c.key.starts_with(b"/registry/events/")));
    assert!(leased_then_gone, "an expired lease's key deletion was streamed");

    // 3. Compaction past a stopped stream: the next run says which revision it needed.
    for round in 20..22 {
        workload(&mut kv, round).await;
    }
    let now = revision(&mut kv).await;
    kv.compact(now, None).await.expect("compact");
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let needed = index.durable().expect("durable") + 1;
    let stop = stream::run(&mut watcher, &store, PREFIX, &mut index, RULE, stopped, &mut stream::Feed::default())
        .await
        .expect("stream");
    assert_eq!(stop, Stop::Compacted { needed, compacted: now });
}

/// A revision changing one key, `k<r>`.
fn change(r: i64) -> segment::Revision {
    segment::Revision {
        revision: r,
        received_ms: r,
        changes: vec![segment::Change {
            key: format!("k{r}").into_bytes(),
            value: b"v".to_vec(),
            ..Default::default()
        }],
    }
}

fn base(key: &str, revision: i64) -> Base {
    Base { key: key.into(), revision, time_ms: revision, sha256: String::new() }
}

/// Segments of whole revisions `first..=last`, written under `PREFIX`, in an index with
/// bases `b1` at 10 and `b2` at 30.
async fn three_segments(store: &BackupStore) -> Index {
    let mut index = Index { bases: vec![base("b1", 10), base("b2", 30)], ..Index::default() };
    for (first, last) in [(11, 20), (21, 30), (31, 40)] {
        let seg = segment::Segment {
            format: segment::FORMAT,
            first,
            last,
            revisions: (first..=last).map(change).collect(),
            leases: vec![],
        };
        index.segments.push(stream::write_segment(store, PREFIX, &seg).await.expect("segment"));
    }
    index
}

/// Retention: once a base's backup is gone from the schedule's list, the next commit of
/// the index drops it, and the segments that end at or before the oldest kept base are
/// deleted from the store; the others, and the index, stay.
#[tokio::test]
async fn segments_before_the_oldest_kept_base_go_with_it() {
    let server = S3Server::start().await;
    let store = server.store("backups").await;
    let mut index = three_segments(&store).await;
    let listed = |store: BackupStore| async move {
        let mut keys: Vec<String> =
            store.list(&format!("{PREFIX}segments/")).await.expect("list").into_iter().map(|o| o.key).collect();
        keys.sort();
        keys
    };
    assert_eq!(listed(store.clone()).await.len(), 3);
    // Retention deleted b1's backup: the schedule's list holds b2 alone.
    let (_tx, rx) = tokio::sync::watch::channel(vec![base("b2", 30)]);
    let mut feed = stream::Feed { bases: Some(rx), ..stream::Feed::default() };
    stream::commit(&store, PREFIX, &mut index, &mut feed).await.expect("commit");
    assert_eq!(index.bases.iter().map(|b| b.key.as_str()).collect::<Vec<_>>(), ["b2"]);
    assert_eq!(index.segments.iter().map(|s| (s.first, s.last)).collect::<Vec<_>>(), [(31, 40)]);
    let left = listed(store.clone()).await;
    assert_eq!(left, [stream::segment_key(PREFIX, 31, 40)], "the segments before b2 are gone from the store");
    assert_eq!(stream::read_index(&store, PREFIX).await.expect("index"), index, "the stored index says so");
}

/// A copy of the stream (`copyTo`): the segments copied as they are stored, the index
/// with every key under the copy's prefix, so that the copy reads alone; segments the
/// index lets go (retention) go from the copy too.
#[tokio::test]
async fn a_copy_of_the_stream_holds_its_segments_and_an_index_of_its_own_keys() {
    use etcd_pilot::backup_store::StoreConfig;
    use etcd_pilot::controllers::stream::mirror::{self, Copy};
    use support::s3::{ACCESS_KEY, SECRET_KEY};
    let server = S3Server::start().await;
    let first = server.store("backups").await;
    server.create_bucket("copies");
    let config = StoreConfig {
        prefix: Some("dr".into()),
        ..StoreConfig::s3_compatible(&server.endpoint, "copies", ACCESS_KEY, SECRET_KEY)
    };
    let second = BackupStore::new(config).await.expect("second store");
    let mut index = three_segments(&first).await;
    stream::write_index(&first, PREFIX, &index).await.expect("index");

    let copy_prefix = first.key_in(PREFIX, &second);
    assert_eq!(copy_prefix, format!("dr/{PREFIX}"));
    let mut copy = Copy::open(second.clone(), copy_prefix.clone()).await.expect("an empty copy");
    copy.sync(&first, &index).await.expect("sync");
    assert_eq!(copy.last_revision(), Some(40));
    let held = stream::read_index(&second, &copy_prefix).await.expect("the copy's index");
    assert_eq!(held, mirror::translate(&index, |k| first.key_in(k, &second)));
    assert_eq!(segments(&second, &held).await, segments(&first, &index).await, "read from the copy alone");

    // Retention in the first store: the copy follows.
    let (_tx, rx) = tokio::sync::watch::channel(vec![base("b2", 30)]);
    let mut feed = stream::Feed { bases: Some(rx), ..stream::Feed::default() };
    stream::commit(&first, PREFIX, &mut index, &mut feed).await.expect("commit");
    copy.sync(&first, &index).await.expect("sync after retention");
    let left: Vec<String> =
        second.list(&format!("{copy_prefix}segments/")).await.expect("list").into_iter().map(|o| o.key).collect();
    assert_eq!(left, [stream::segment_key(&copy_prefix, 31, 40)]);
    // A copy opened afresh (an operator restart) starts from what the copy holds.
    let again = Copy::open(second.clone(), copy_prefix).await.expect("reopened");
    assert_eq!(again.last_revision(), Some(40));
}
