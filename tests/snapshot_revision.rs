//! The revision a snapshot holds, read from the snapshot itself (issue 23, "the base is
//! exact"), against real etcd: a small store, one whose key tree has branch pages, one
//! whose newest revision is a deletion compacted away (only the compaction record
//! says it), each read from the file on disk and from the object in a real S3-compatible
//! store by ranged reads; and a snapshot taken while writes go on, whose revision is
//! then known only from the file: the state at that revision is what the file holds.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use etcd_client::{CompactionOptions, GetOptions};
use etcd_pilot::etcd::bbolt::{self, FilePages};
use etcd_pilot::shared::snapshot::ObjectPages;
use futures::StreamExt;
use support::etcd::Cluster;
use support::s3::S3Server;

async fn snapshot_file(cluster: &Cluster, name: &str) -> (std::path::PathBuf, Vec<u8>) {
    let admin = cluster.admin();
    let mut snap = admin.snapshot(&cluster.endpoints()[0]).await.expect("snapshot");
    let mut bytes = Vec::new();
    while let Some(c) = snap.stream.next().await {
        bytes.extend_from_slice(&c.expect("verified chunk"));
    }
    let path = cluster.dir.path().join(name);
    std::fs::write(&path, &bytes).expect("write snapshot");
    (path, bytes)
}

async fn from_file(path: &std::path::Path) -> i64 {
    let mut pages = FilePages(std::fs::File::open(path).expect("open"));
    bbolt::snapshot_revision(&mut pages).await.expect("revision from the file")
}

async fn revision(kv: &mut etcd_client::Client) -> i64 {
    kv.get("x", None).await.expect("get").header().expect("header").revision()
}

#[tokio::test]
async fn the_revision_is_read_from_the_snapshot_itself() {
    let cluster = Cluster::start(1).await;
    let mut kv = cluster.kv().await;
    let server = S3Server::start().await;
    let store = server.store("backups").await;

    // A small store: the key bucket is one leaf (or inline).
    for i in 0..5 {
        kv.put(format!("/registry/a/{i}"), "v", None).await.expect("put");
    }
    let small = revision(&mut kv).await;
    // Thousands of revisions: a key tree with branch pages.
    for i in 0..3000 {
        kv.put(format!("/registry/b/{}", i % 400), vec![b'x'; 200], None).await.expect("put");
    }
    let large = revision(&mut kv).await;
    // The newest revision a deletion, compacted away: no key holds it any more.
    kv.put("/registry/c/last", "v", None).await.expect("put");
    kv.delete("/registry/c/last", None).await.expect("delete");
    let deleted = revision(&mut kv).await;

    let (path, _) = snapshot_file(&cluster, "large.db").await;
    assert_eq!(from_file(&path).await, deleted, "a large store");
    kv.compact(deleted, Some(CompactionOptions::new().with_physical())).await.expect("compact");
    let (path, bytes) = snapshot_file(&cluster, "compacted.db").await;
    assert_eq!(from_file(&path).await, deleted, "the newest revision only in the compaction record");
    assert!(small < large && large < deleted);

    // The same, read from the object in the store a few pages at a time.
    let key = "default/main/compacted.db";
    let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(bytes))]);
    store.upload(key, body, HashMap::new()).await.expect("upload");
    let mut pages = ObjectPages { store: &store, key };
    assert_eq!(bbolt::snapshot_revision(&mut pages).await.expect("revision from the object"), deleted);

    // A snapshot taken while writes go on: the file's revision is between the ones seen
    // before and after, and the file holds exactly the state at that revision.
    let mut writer = cluster.kv().await;
    let writes = tokio::spawn(async move {
        for i in 0..2000 {
            writer.put(format!("/registry/d/{}", i % 100), format!("{i}"), None).await.expect("put");
        }
    });
    // Once the writes are under way.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while revision(&mut kv).await < deleted + 50 {
        assert!(std::time::Instant::now() < deadline, "the writes did not start");
    }
    let before = revision(&mut kv).await;
    let (path, _) = snapshot_file(&cluster, "busy.db").await;
    let after = revision(&mut kv).await;
    writes.await.expect("writes");
    let at = from_file(&path).await;
    assert!(before <= at && at <= after, "{before} <= {at} <= {after}");
    let expected = kv
        .get("/registry/d/", Some(GetOptions::new().with_prefix().with_revision(at)))
        .await
        .expect("state at the snapshot's revision");
    // Restored, the file serves that state: etcdctl restores it into a data dir, and an
    // etcd on it answers the same keys and revisions.
    let data_dir = cluster.dir.path().join("busy.etcd");
    let peer = support::ports::free_port();
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "restore", path.to_str().unwrap_or_default(), "--data-dir"])
        .arg(&data_dir)
        .args(["--name", "r0", "--initial-cluster", &format!("r0=http://127.0.0.1:{peer}")])
        .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .output()
        .expect("etcdctl");
    assert!(out.status.success(), "restore: {}", String::from_utf8_lossy(&out.stderr));
    let port = support::ports::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let log = std::fs::File::create(cluster.dir.path().join("r0.log")).expect("log");
    let _etcd = support::KillOnDrop(
        std::process::Command::new("etcd")
            .args(["--name", "r0", "--data-dir"])
            .arg(&data_dir)
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .args(["--initial-cluster", &format!("r0=http://127.0.0.1:{peer}")])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("etcd"),
    );
    let mut restored = {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = etcd_client::Client::connect([url.as_str()], None).await
                && c.get("x", None).await.is_ok()
            {
                break c;
            }
            assert!(std::time::Instant::now() < deadline, "restored etcd did not answer");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert_eq!(revision(&mut restored).await, at, "the restored store is at the file's revision");
    let got = restored.get("/registry/d/", Some(GetOptions::new().with_prefix())).await.expect("get");
    let view = |r: &etcd_client::GetResponse| -> Vec<(Vec<u8>, Vec<u8>, i64)> {
        r.kvs().iter().map(|k| (k.key().to_vec(), k.value().to_vec(), k.mod_revision())).collect()
    };
    assert_eq!(view(&got), view(&expected), "the file holds the state at revision {at}");
}
