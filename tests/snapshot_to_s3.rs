//! The whole backup path with real parts: a snapshot streamed from a real etcd member
//! into a real S3-compatible store, downloaded verified, restored with etcdctl, and
//! served by a new etcd with the data intact.

mod support;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use etcd_pilot::backup_store::{BackupStore, StoreConfig};
use etcd_pilot::etcd::{AdminConfig, EtcdAdmin};
use support::etcd::Cluster;
use support::s3::{ACCESS_KEY, S3Server, SECRET_KEY};

#[tokio::test]
async fn snapshot_to_s3_and_back_into_a_new_etcd() {
    let cluster = Cluster::start(3).await;
    let mut kv = cluster.kv().await;
    for i in 0..300 {
        kv.put(format!("/registry/secrets/default/s{i}"), format!("value-{i}"), None).await.unwrap();
    }
    let admin = cluster.admin();
    let server = S3Server::start().await;
    server.create_bucket("backups");
    let store = BackupStore::new(StoreConfig {
        part_size: 5 * 1024 * 1024,
        ..StoreConfig::s3_compatible(&server.endpoint, "backups", ACCESS_KEY, SECRET_KEY)
    })
    .await
    .unwrap();

    let snap = admin.snapshot(&cluster.endpoints()[1]).await.expect("snapshot");
    let meta = HashMap::from([("etcd-version".to_string(), snap.version.clone())]);
    let key = store.backup_key("default", "main", "20261122T120000Z", "b1");
    let up = store.upload(&key, snap.stream, meta).await.expect("upload the snapshot stream");
    assert!(up.size > 0);

    let file = cluster.dir.path().join("restored.db");
    store.download_to_file(&key, &file).await.expect("verified download");
    let data_dir = cluster.dir.path().join("restored.etcd");
    let port = support::ports::free_port();
    let peer = support::ports::free_port();
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "restore", file.to_str().unwrap(), "--data-dir", data_dir.to_str().unwrap()])
        .args(["--name", "r0", "--initial-cluster", &format!("r0=http://127.0.0.1:{peer}")])
        .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args(["--initial-cluster-token", "restored"])
        .output()
        .unwrap();
    assert!(out.status.success(), "restore: {}", String::from_utf8_lossy(&out.stderr));

    let url = format!("http://127.0.0.1:{port}");
    let log = std::fs::File::create(cluster.dir.path().join("r0.log")).unwrap();
    let _etcd = support::KillOnDrop(
        Command::new("etcd")
            .args(["--name", "r0", "--data-dir", data_dir.to_str().unwrap()])
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let restored = EtcdAdmin::new(vec![url.clone()], AdminConfig::default());
    let mut ready = false;
    for _ in 0..100 {
        if restored.has_quorum().await {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "restored etcd never served");
    let mut c = etcd_client::Client::connect([url.as_str()], None).await.unwrap();
    let got = c
        .get("/registry/secrets/default/", Some(etcd_client::GetOptions::new().with_prefix().with_count_only()))
        .await
        .unwrap();
    assert_eq!(got.count(), 300, "every key is back");
    let one = c.get("/registry/secrets/default/s299", None).await.unwrap();
    assert_eq!(one.kvs()[0].value(), b"value-299");
}
