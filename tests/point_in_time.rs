//! A restore to a point with real parts (issue 23): a real etcd under a workload like
//! kube-apiserver's (puts, deletes, guarded multi-key transactions, keys on leases that
//! expire and on a lease that is kept alive), a real base snapshot of it in a real
//! S3-compatible store, its stream running meanwhile; then a member seeded exactly as a
//! restored cluster's first member is (`seed::seed_member`: the base verified, the
//! segments replayed in a scratch etcd 3.5, the result restored with the revision
//! bumped) to a revision R in the middle, started, and compared with `get --rev=R` of the
//! source, read before anything was compacted: every key's value, create_revision,
//! mod_revision and version; leased keys on a lease with a TTL no longer than the
//! source's; and the first write above every revision the source served.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};
use etcd_pilot::backup_store::Credentials;
use etcd_pilot::etcd::bbolt::{self, FilePages};
use etcd_pilot::replay::{self, ReplayTo};
use etcd_pilot::seed::{self, SeedSource};
use etcd_pilot::shared::segment::FlushRule;
use etcd_pilot::shared::stream::{self, Feed, Stop};
use etcd_pilot::shared::window::{Base, Index};
use support::etcd::Cluster;
use support::ports::free_port;
use support::s3::{ACCESS_KEY, S3Server, SECRET_KEY};

const PREFIX: &str = "it/default/main/streams/every-6h/";
const RULE: FlushRule = FlushRule { max_age_ms: 300, max_bytes: 4096 };

#[derive(Debug, PartialEq)]
struct Held {
    value: Vec<u8>,
    create_revision: i64,
    mod_revision: i64,
    version: i64,
    leased: bool,
}

async fn state(kv: &mut Client, revision: Option<i64>) -> BTreeMap<Vec<u8>, (Held, i64)> {
    let mut options = GetOptions::new().with_all_keys();
    if let Some(r) = revision {
        options = options.with_revision(r);
    }
    let r = kv.get("", Some(options)).await.expect("get");
    r.kvs()
        .iter()
        .map(|k| {
            let held = Held {
                value: k.value().to_vec(),
                create_revision: k.create_revision(),
                mod_revision: k.mod_revision(),
                version: k.version(),
                leased: k.lease() != 0,
            };
            (k.key().to_vec(), (held, k.lease()))
        })
        .collect()
}

async fn revision(kv: &mut Client) -> i64 {
    kv.get("x", None).await.expect("revision").header().expect("header").revision()
}

/// One round of kube-apiserver-like writes; events on a 2 s lease (expiring) and leader
/// records on `kept`, a lease kept alive.
async fn workload(kv: &mut Client, round: usize, kept: i64) {
    for i in 0..15 {
        kv.put(format!("/registry/pods/default/p{}", (round * 7 + i) % 25), format!("pod {round}.{i}"), None)
            .await
            .expect("put");
    }
    kv.delete(format!("/registry/pods/default/p{}", round % 25), None).await.expect("delete");
    let txn = Txn::new().when([Compare::version("/registry/ns/default", CompareOp::Greater, -1)]).and_then([
        TxnOp::put(format!("/registry/configmaps/default/c{round}"), "a", None),
        TxnOp::put(format!("/registry/secrets/default/s{round}"), "b", None),
        TxnOp::delete(format!("/registry/configmaps/default/c{}", round.wrapping_sub(2)), None),
    ]);
    kv.txn(txn).await.expect("txn");
    let lease = kv.lease_grant(2, None).await.expect("lease").id();
    kv.put(format!("/registry/events/default/e{round}"), "event", Some(PutOptions::new().with_lease(lease)))
        .await
        .expect("leased put");
    kv.put("/registry/leases/kube-system/leader", format!("r{round}"), Some(PutOptions::new().with_lease(kept)))
        .await
        .expect("kept lease put");
    kv.lease_keep_alive(kept).await.expect("keep alive").0.keep_alive().await.expect("keep alive");
}

#[tokio::test]
async fn a_member_seeded_to_a_revision_in_the_middle_holds_exactly_the_source_state_at_it() {
    let tools = support::etcd35();
    let cluster = Cluster::start(1).await;
    let mut kv = cluster.kv().await;
    let server = S3Server::start().await;
    let store = server.store("backups").await;
    let work = tempfile::tempdir().expect("temp dir");

    kv.put("/registry/ns/default", "ns", None).await.expect("put");
    let kept = kv.lease_grant(30, None).await.expect("lease").id();
    workload(&mut kv, 0, kept).await;

    // The base: a real snapshot, its revision read from the snapshot itself, stored.
    let base_file = work.path().join("base.db");
    replay::snapshot_to_file(&mut kv, &base_file).await.expect("snapshot");
    let base_revision =
        bbolt::snapshot_revision(&mut FilePages(std::fs::File::open(&base_file).expect("open"))).await.expect("rev");
    let bytes = std::fs::read(&base_file).expect("read");
    let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(bytes))]);
    let uploaded = store.upload("it/default/main/base.db", body, HashMap::new()).await.expect("upload");
    let index = Index {
        bases: vec![Base {
            key: uploaded.key.clone(),
            revision: base_revision,
            time_ms: stream::now_ms(),
            sha256: uploaded.sha256.clone(),
        }],
        ..Index::default()
    };
    stream::write_index(&store, PREFIX, &index).await.expect("index");

    // The stream, while the workload runs on.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let run = {
        let store = store.clone();
        let mut index = index.clone();
        let mut watcher = cluster.kv().await;
        tokio::spawn(async move {
            stream::run(&mut watcher, &store, PREFIX, &mut index, RULE, stopped, &mut Feed::default()).await
        })
    };
    for round in 1..8 {
        workload(&mut kv, round, kept).await;
    }
    let point = revision(&mut kv).await;
    let at_point = state(&mut kv, Some(point)).await;
    // Granted TTLs of the leases live at R, to compare restored TTLs with.
    let mut granted: HashMap<i64, i64> = HashMap::new();
    for (_, lease) in at_point.values() {
        if *lease != 0 {
            let ttl = kv.lease_time_to_live(*lease, None).await.expect("ttl").granted_ttl();
            granted.insert(*lease, ttl.max(2));
        }
    }
    for round in 8..14 {
        workload(&mut kv, round, kept).await;
    }
    let last = revision(&mut kv).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while stream::read_index(&store, PREFIX).await.expect("index").durable() < Some(last) {
        assert!(std::time::Instant::now() < deadline, "revision {last} not durable within 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.send(true).expect("stop");
    assert_eq!(run.await.expect("stream task").expect("stream"), Stop::Shutdown);
    assert!(point > base_revision + 50 && last > point + 50, "base {base_revision}, R {point}, last {last}");
    let segments = stream::read_index(&store, PREFIX).await.expect("index").segments;
    let used = replay::segments_for(&Index { segments, ..index.clone() }, base_revision, point).expect("coverage");
    assert!(used.len() > 1, "R is reached through several segments: {used:?}");

    // Seed a member exactly as a restored cluster's first member is seeded.
    let bump = 1_000_000;
    let (client_port, peer_port) = (free_port(), free_port());
    let peer = format!("http://127.0.0.1:{peer_port}");
    let source = SeedSource {
        restore: "to-r".into(),
        bucket: "backups".into(),
        key: uploaded.key.clone(),
        sha256: uploaded.sha256.clone(),
        endpoint: Some(server.endpoint.clone()),
        region: "us-east-1".into(),
        path_style: true,
        credentials_secret: None,
        bump_revision: bump,
        replaces: None,
        replay: Some(ReplayTo { prefix: PREFIX.into(), base_revision, upto: point }),
        encryption_keys: Vec::new(),
    };
    let credentials = Credentials::Static {
        access_key_id: ACCESS_KEY.into(),
        secret_access_key: SECRET_KEY.into(),
        session_token: None,
    };
    let data = work.path().join("member").join("data");
    std::fs::create_dir_all(data.parent().expect("parent")).expect("dir");
    let member = seed::Member {
        name: "restored-0".into(),
        peer_url: peer.clone(),
        initial_cluster: format!("restored-0={peer}"),
        token: "restored".into(),
    };
    let started = std::time::Instant::now();
    let seeded = seed::seed_member(
        &source,
        credentials,
        &data,
        &member,
        (&tools.join("etcdutl"), &tools.join("etcd")),
        Vec::new(),
    )
    .await
    .expect("seed to the point");
    assert!(seeded);
    eprintln!(
        "seeded to revision {point} ({} revisions after the base) in {:.1}s",
        point - base_revision,
        started.elapsed().as_secs_f64()
    );

    let endpoint = format!("http://127.0.0.1:{client_port}");
    let mut restored = tokio::process::Command::new(tools.join("etcd"))
        .args([
            "--name=restored-0".to_string(),
            format!("--data-dir={}", data.display()),
            format!("--listen-client-urls={endpoint}"),
            format!("--advertise-client-urls={endpoint}"),
            format!("--listen-peer-urls={peer}"),
            format!("--initial-advertise-peer-urls={peer}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("etcd 3.5 on the seeded data");
    let mut r = {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut c) = Client::connect([endpoint.as_str()], None).await
                && c.status().await.is_ok()
            {
                break c;
            }
            assert!(std::time::Instant::now() < deadline, "the restored member did not answer");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let got = state(&mut r, None).await;
    fn held(s: &BTreeMap<Vec<u8>, (Held, i64)>) -> Vec<(&Vec<u8>, &Held)> {
        s.iter().map(|(k, (h, _))| (k, h)).collect()
    }
    // Keys on a lease with a second or two left at R may have expired in the restored
    // member since (their lease kept the TTL it had left at R): only those.
    let expired: Vec<&Vec<u8>> = at_point.keys().filter(|k| !got.contains_key(*k)).collect();
    assert!(
        expired.iter().all(|k| at_point[*k].1 != 0 && granted[&at_point[*k].1] <= 2),
        "only keys on short leases are missing: {expired:?}"
    );
    // A BTreeMap: in key order, as `held` gives them.
    let expected = at_point.iter().filter(|(k, _)| got.contains_key(*k)).map(|(k, v)| (k, &v.0)).collect::<Vec<_>>();
    assert_eq!(held(&got), expected, "every key, value, create/mod revision and version as at R");
    assert!(at_point.values().any(|(h, _)| h.leased), "the point has leased keys");
    for (key, (h, lease)) in &got {
        if h.leased {
            let source_lease = at_point[key].1;
            assert_eq!(*lease, source_lease, "{}: the same lease id", String::from_utf8_lossy(key));
            let ttl = r.lease_time_to_live(*lease, None).await.expect("ttl");
            assert!(ttl.ttl() > 0, "{}: its lease exists", String::from_utf8_lossy(key));
            assert!(
                ttl.granted_ttl() <= granted[&source_lease],
                "{}: TTL {} no longer than the source's {}",
                String::from_utf8_lossy(key),
                ttl.granted_ttl(),
                granted[&source_lease]
            );
        }
    }
    let first = r.put("/after-restore", "x", None).await.expect("put").header().expect("header").revision();
    assert!(
        first > last,
        "the first write after the restore ({first}) is above every revision the source served ({last})"
    );
    let _ = restored.kill().await;
}
