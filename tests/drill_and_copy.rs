//! Restore drills and second copies with real parts (issue 24): a real etcd, a real
//! snapshot of it taken as a backup takes it (its revision and key count recorded), a
//! real S3-compatible store with encryption at rest on.
//!
//! - The drill's in-pod run (`drill::run`: download, restore into a scratch etcd 3.5,
//!   measure) finds the backup's revision and key count, and a `HashKV` at that revision
//!   equal to the live member's, after the cluster wrote on; the verdict passes. The
//!   same object with one byte changed on the server's disk fails the drill.
//! - A copy into a second bucket is the original's stored bytes, SHA-256 and all; it
//!   opens with the original's key once the original is deleted; a damaged original is
//!   never copied.

mod support;

use std::collections::HashMap;

use etcd_pilot::backup_store::crypt::NamedKey;
use etcd_pilot::backup_store::{BackupStore, Credentials, StoreConfig};
use etcd_pilot::controllers::drill::plan::{self, Claim, Live};
use etcd_pilot::drill::{self, Outcome};
use etcd_pilot::seed::SeedSource;
use etcd_pilot::shared::snapshot::{self, Candidate};
use futures::StreamExt;
use support::etcd::Cluster;
use support::s3::{ACCESS_KEY, S3Server, SECRET_KEY};

fn key() -> NamedKey {
    NamedKey::from_secret("backup-key/k1", &[7u8; 32]).expect("key")
}

async fn store(server: &S3Server, bucket: &str) -> BackupStore {
    server.create_bucket(bucket);
    let config = StoreConfig {
        prefix: Some(format!("{bucket}-prefix")),
        part_size: 5 * 1024 * 1024,
        ..StoreConfig::s3_compatible(&server.endpoint, bucket, ACCESS_KEY, SECRET_KEY)
    };
    BackupStore::new(config).await.expect("store").with_keys(vec![key()])
}

fn creds() -> Credentials {
    Credentials::Static { access_key_id: ACCESS_KEY.into(), secret_access_key: SECRET_KEY.into(), session_token: None }
}

/// A cluster with some history (puts, overwrites, deletes) and its backup in `store`.
async fn backed_up(cluster: &Cluster, store: &BackupStore, name: &str) -> snapshot::Taken {
    let mut kv = cluster.kv().await;
    for i in 0..200 {
        kv.put(format!("/registry/configmaps/default/c{i}"), format!("v{i}"), None).await.expect("put");
    }
    for i in 0..50 {
        kv.put(format!("/registry/configmaps/default/c{i}"), "again", None).await.expect("overwrite");
        kv.delete(format!("/registry/configmaps/default/c{}", 150 + i), None).await.expect("delete");
    }
    let member = Candidate { name: "m0".into(), endpoint: cluster.endpoints()[0].clone(), leader: true };
    let metrics = etcd_pilot::metrics::Metrics::default();
    let labels = etcd_pilot::metrics::ClusterLabels { namespace: "default".into(), cluster: "main".into() };
    let key = store.backup_key("default", "main", "20261207T220000Z", name);
    snapshot::snapshot_to_store(&member, cluster.admin_config(), store, &key, HashMap::new(), &metrics, &labels)
        .await
        .expect("backup")
}

fn source(server: &S3Server, bucket: &str, taken: &snapshot::Taken) -> SeedSource {
    SeedSource {
        restore: "drill of nightly-1".into(),
        bucket: bucket.into(),
        key: taken.uploaded.key.clone(),
        sha256: taken.uploaded.sha256.clone(),
        endpoint: Some(server.endpoint.clone()),
        region: "us-east-1".into(),
        path_style: true,
        credentials_secret: None,
        bump_revision: 0,
        replaces: None,
        replay: None,
        encryption_keys: Vec::new(),
    }
}

#[tokio::test]
async fn a_drill_restores_what_the_backup_claims_and_fails_on_a_changed_byte() {
    let tools = support::etcd35();
    let tools = (tools.join("etcdutl"), tools.join("etcd"));
    let cluster = Cluster::start(1).await;
    let server = S3Server::start().await;
    let store = store(&server, "backups").await;
    let taken = backed_up(&cluster, &store, "nightly-1").await;
    let claimed_keys = taken.key_count.expect("the backup counted its keys");
    assert_eq!(claimed_keys, 150, "200 put, 50 deleted");
    // The cluster goes on: what the drill compares is the revision of the backup.
    let mut kv = cluster.kv().await;
    for i in 0..20 {
        kv.put(format!("/registry/pods/default/p{i}"), "later", None).await.expect("put after");
    }

    let dir = tempfile::tempdir().expect("dir");
    let src = source(&server, "backups", &taken);
    let report = drill::run(&src, creds(), vec![key()], &dir.path().join("work"), (&tools.0, &tools.1))
        .await
        .expect("the drill restores the backup");
    assert_eq!(report.revision, taken.revision);
    assert_eq!(report.key_count, claimed_keys);
    let admin = cluster.admin();
    let (hash, compact_revision) = admin.hash_kv(&cluster.endpoints()[0], taken.revision).await.expect("hash kv");
    assert_eq!((report.hash, report.compact_revision), (hash, compact_revision), "HashKV at the backup's revision");
    let claim = Claim { revision: Some(taken.revision), key_count: taken.key_count };
    let live = Live::Hash { member: "m0".into(), hash, compact_revision };
    let (result, message) = plan::verdict(&Outcome::Restored(report.clone()), &claim, &live);
    assert_eq!(result, etcd_pilot::api::schedule::VerificationResult::Passed, "{message}");
    assert!(!dir.path().join("work").exists(), "the scratch space is removed");

    // Without the key the sealed backup does not open.
    let err = drill::run(&src, creds(), Vec::new(), &dir.path().join("work"), (&tools.0, &tools.1))
        .await
        .expect_err("no key");
    assert!(err.to_string().contains("backup-key/k1"), "{err}");

    // One byte changed on the server's disk: the drill fails, naming the object.
    let path = server.object_path("backups", &taken.uploaded.key);
    let mut bytes = std::fs::read(&path).expect("object");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, bytes).expect("damage");
    let err = drill::run(&src, creds(), vec![key()], &dir.path().join("work"), (&tools.0, &tools.1))
        .await
        .expect_err("a changed byte");
    let (result, message) = plan::verdict(&Outcome::Failed(err.to_string()), &claim, &live);
    assert_eq!(result, etcd_pilot::api::schedule::VerificationResult::Failed);
    assert!(message.contains("corrupt") || message.contains("SHA-256"), "{message}");
}

async fn all(store: &BackupStore, key: &str) -> Vec<u8> {
    let mut dl = store.download(key).await.expect("download");
    let mut out = Vec::new();
    while let Some(c) = dl.stream.next().await {
        out.extend_from_slice(&c.expect("verified"));
    }
    out
}

#[tokio::test]
async fn a_copy_is_the_originals_bytes_and_restores_without_it() {
    let cluster = Cluster::start(1).await;
    let server = S3Server::start().await;
    let first = store(&server, "first").await;
    let second = store(&server, "second").await;
    let taken = backed_up(&cluster, &first, "nightly-1").await;
    let plain = all(&first, &taken.uploaded.key).await;

    let copy = first.copy_to(&taken.uploaded.key, &second).await.expect("copy");
    assert_eq!(copy.sha256, taken.uploaded.sha256, "the copy hashes to the original's SHA-256");
    assert_eq!(copy.key, taken.uploaded.key.replacen("first-prefix", "second-prefix", 1));
    let stored = |bucket: &str, key: &str| std::fs::read(server.object_path(bucket, key)).expect("on disk");
    assert_eq!(stored("second", &copy.key), stored("first", &taken.uploaded.key), "byte for byte, sealed");
    assert!(!String::from_utf8_lossy(&stored("second", &copy.key)).contains("/registry/configmaps"), "still sealed");

    // The first store loses the object: the copy still opens, with the original's key.
    first.delete(&taken.uploaded.key).await.expect("delete the original");
    assert_eq!(all(&second, &copy.key).await, plain);

    // A damaged original is never copied: nothing is left in the second store.
    let other = backed_up(&cluster, &first, "nightly-2").await;
    let path = server.object_path("first", &other.uploaded.key);
    let mut bytes = std::fs::read(&path).expect("object");
    bytes[100] ^= 0xff;
    std::fs::write(&path, bytes).expect("damage");
    let err = first.copy_to(&other.uploaded.key, &second).await.expect_err("damaged");
    assert!(err.to_string().contains("corrupt"), "{err}");
    let left = second.list("second-prefix/").await.expect("list");
    let keys: Vec<&str> = left.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(keys, [copy.key.as_str()], "only the first copy");
}

#[tokio::test]
async fn the_test_store_takes_server_side_encryption_headers() {
    // The testbed's S3 server (s3s-fs) takes the headers: backups to it with
    // serverSideEncryption set work (what AWS does with them is unit-tested on the
    // requests, backup_store::tests::server_side_encryption).
    let server = S3Server::start().await;
    server.create_bucket("sse");
    for sse in [
        etcd_pilot::api::ServerSideEncryption { kind: etcd_pilot::api::SseType::Aes256, kms_key_id: None },
        etcd_pilot::api::ServerSideEncryption {
            kind: etcd_pilot::api::SseType::AwsKms,
            kms_key_id: Some("alias/etcd".into()),
        },
    ] {
        let config = StoreConfig {
            sse: Some(sse.clone()),
            ..StoreConfig::s3_compatible(&server.endpoint, "sse", ACCESS_KEY, SECRET_KEY)
        };
        let s = BackupStore::new(config).await.expect("store");
        let body = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"snapshot"))]);
        let up = s.upload("x.db", body, HashMap::new()).await.unwrap_or_else(|e| panic!("{sse:?}: {e}"));
        assert_eq!(all(&s, &up.key).await, b"snapshot");
    }
}
