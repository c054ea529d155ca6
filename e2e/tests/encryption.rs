//! Encryption at rest on the testbed (issue 24), with the operator installed from the
//! chart and the testbed's S3 server: a backup whose object, read from the server's disk,
//! holds no value known to be in the cluster, restored with its key (every key back);
//! a key rotation (a new key first, the old one kept) after which the backups of both
//! keys restore; and a wrong key, which fails the restore before any member starts, the
//! key named.

use etcd_pilot::api::{EtcdBackup, Phase};
use etcd_pilot_e2e::fixtures::*;
use etcd_pilot_e2e::kit::Kit;
use etcd_pilot_e2e::layout::{S3_ACCESS_KEY, S3_SECRET_KEY};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

const SECRET_VALUE: &str = "hunter2-the-database-password";

fn target(ns: &str, keys: &[&str]) -> Value {
    let mut t = s3_target(ns, "s3");
    t["encryption"] =
        json!({"keys": keys.iter().map(|k| json!({"secretName": "backup-keys", "key": k})).collect::<Vec<_>>()});
    t
}

async fn backup(kit: &Kit, ns: &str, name: &str) -> etcd_pilot::api::EtcdBackupStatus {
    let _: EtcdBackup = kit
        .create(
            ns,
            json!({"apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdBackup", "metadata": {"name": name},
                   "spec": {"clusterName": "src"}}),
        )
        .await;
    let s = wait_backup(kit, ns, name, WAIT).await.status.expect("status");
    assert_eq!(s.phase, Phase::Succeeded, "{s:?}");
    s
}

async fn restore(kit: &Kit, ns: &str, name: &str, from: &str) -> etcd_pilot::api::EtcdRestoreStatus {
    restore_new_cluster(kit, ns, name, json!({"backup": {"name": from}})).await
}

async fn holds_the_value(kit: &Kit, ns: &str, cluster: &str) {
    wait_ready(kit, ns, cluster, 1).await;
    let mut c = etcd(kit, ns, cluster).await;
    let got = c.get("/registry/secrets/default/db", None).await.expect("get");
    assert_eq!(got.kvs().first().map(|kv| kv.value().to_vec()), Some(SECRET_VALUE.as_bytes().to_vec()), "{cluster}");
}

#[tokio::test]
async fn encrypted_backups_hide_the_cluster_restore_with_their_keys_and_refuse_a_wrong_one() {
    let (kit, ns) = setup("encryption").await;
    s3_secret(&kit, &ns, "s3", S3_ACCESS_KEY, S3_SECRET_KEY).await;
    let secrets: Api<Secret> = Api::namespaced(kit.client.clone(), &ns);
    let _: Secret = kit
        .create(
            &ns,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "backup-keys"},
                   "stringData": {"k1": "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
                                  "k2": "0202020202020202020202020202020202020202020202020202020202020202"}}),
        )
        .await;
    create_cluster(&kit, &ns, cluster_manifest("src", 1, "3.5.30", json!({"backup": target(&ns, &["k1"])}))).await;
    wait_ready(&kit, &ns, "src", 1).await;
    let mut c = etcd(&kit, &ns, "src").await;
    c.put("/registry/secrets/default/db", SECRET_VALUE, None).await.expect("put");

    // Sealed with k1: the object on the S3 server's disk holds no trace of the value.
    let b1 = backup(&kit, &ns, "b1").await;
    let stored = std::fs::read(s3_object_file(&kit, b1.object_key.as_deref().expect("key"))).expect("object on disk");
    assert!(!stored.windows(SECRET_VALUE.len()).any(|w| w == SECRET_VALUE.as_bytes()), "the value is not readable");
    assert!(stored.starts_with(b"EPENC1\n"), "sealed by etcd-pilot");
    assert!(stored.windows(14).any(|w| w == b"backup-keys/k1"), "its header names the key");

    // Rotation: k2 first, k1 kept; a new backup is sealed with k2.
    clusters(&kit, &ns)
        .patch("src", &PatchParams::default(), &Patch::Merge(json!({"spec": {"backup": target(&ns, &["k2", "k1"])}})))
        .await
        .expect("rotate");
    let b2 = backup(&kit, &ns, "b2").await;
    let stored = std::fs::read(s3_object_file(&kit, b2.object_key.as_deref().expect("key"))).expect("object on disk");
    assert!(stored.windows(14).any(|w| w == b"backup-keys/k2"), "sealed with the new key");

    // Both restore, side by side.
    let (r1, r2) = tokio::join!(restore(&kit, &ns, "from-k1", "b1"), restore(&kit, &ns, "from-k2", "b2"));
    assert_eq!(r1.phase, Phase::Succeeded, "{r1:?}");
    assert_eq!(r2.phase, Phase::Succeeded, "{r2:?}");
    holds_the_value(&kit, &ns, "from-k1").await;
    holds_the_value(&kit, &ns, "from-k2").await;

    // A wrong key under k1's name: refused before any member starts, the key named.
    secrets
        .patch(
            "backup-keys",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"k1": "CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk="}})),
        )
        .await
        .expect("a wrong k1");
    let wrong = restore(&kit, &ns, "wrong-key", "b1").await;
    assert_eq!(wrong.phase, Phase::Failed, "{wrong:?}");
    let why = wrong.error.unwrap_or_default();
    assert!(why.contains("failed authentication with key backup-keys/k1"), "{why}");
    assert!(clusters(&kit, &ns).get_opt("wrong-key").await.expect("get").is_none(), "no cluster created");
    assert!(member_pods(&kit, &ns, "wrong-key").await.is_empty(), "no member pod");
    kit.delete_namespace(&ns).await;
}
