//! Restore drills and second copies on the testbed (issue 24), with the operator
//! installed from the chart and the testbed's S3 server:
//!
//! - A schedule with `verify`: a drill passes on a good (encrypted) backup, its HashKV
//!   compared with a live member's, and the drill pod is gone afterwards; the newest
//!   backup's object altered on the server's disk, the next drill fails with a
//!   `VerificationFailed` Event.
//! - A backup with `copyTo` a second bucket: the copy is the original byte for byte; the
//!   first bucket's object deleted, a restore from it fails and a restore from the copy
//!   (`source.copy`) brings every key back.

use etcd_pilot::api::schedule::VerificationResult;
use etcd_pilot::api::{EtcdBackup, EtcdBackupSchedule, Phase};
use etcd_pilot_e2e::fixtures::*;
use etcd_pilot_e2e::kit::Kit;
use etcd_pilot_e2e::layout::{S3_ACCESS_KEY, S3_SECRET_KEY};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

/// Drills run on minute slots; two of them and a backup fit in this.
const DRILL_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

async fn fill(kit: &Kit, ns: &str, cluster: &str, n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut c = etcd(kit, ns, cluster).await;
    for i in 0..n {
        c.put(format!("/registry/configmaps/default/c{i:03}"), format!("value {i}"), None).await.expect("put");
    }
    let all = c.get("/registry/", Some(etcd_client::GetOptions::new().with_prefix())).await.expect("get");
    all.kvs().iter().map(|kv| (kv.key().to_vec(), kv.value().to_vec())).collect()
}

#[tokio::test]
async fn a_drill_passes_on_a_good_backup_and_fails_with_an_event_on_an_altered_one() {
    let (kit, ns) = setup("drills").await;
    s3_secret(&kit, &ns, "s3", S3_ACCESS_KEY, S3_SECRET_KEY).await;
    let _: k8s_openapi::api::core::v1::Secret = kit
        .create(
            &ns,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "backup-keys"},
                   "stringData": {"k1": "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="}}),
        )
        .await;
    let mut target = s3_target(&ns, "s3");
    target["encryption"] = json!({"keys": [{"secretName": "backup-keys", "key": "k1"}]});
    create_cluster(&kit, &ns, cluster_manifest("src", 3, "3.5.30", json!({"backup": target}))).await;
    wait_ready(&kit, &ns, "src", 3).await;
    fill(&kit, &ns, "src", 120).await;
    let _: EtcdBackupSchedule = kit
        .create(
            &ns,
            json!({"apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdBackupSchedule", "metadata": {"name": "often"},
                   "spec": {"clusterName": "src", "schedule": "* * * * *", "retention": {"keepLast": 3},
                            "verify": {"schedule": "* * * * *"}}}),
        )
        .await;
    let schedules: Api<EtcdBackupSchedule> = Api::namespaced(kit.client.clone(), &ns);
    let backups: Api<EtcdBackup> = Api::namespaced(kit.client.clone(), &ns);

    // A drill passes, the live member's HashKV compared.
    let passed = wait_for("a passed drill", DRILL_WAIT, || async {
        let v = schedules.get("often").await.ok()?.status?.last_verification?;
        (v.result == VerificationResult::Passed).then_some(v)
    })
    .await;
    let message = passed.message.clone().unwrap_or_default();
    assert!(message.contains("HashKV at revision") && message.contains("matches member src-"), "{message}");
    let b = backups.get(&passed.backup).await.expect("the drilled backup").status.expect("status");
    assert!(message.contains(&format!("restored at revision {}", b.etcd_revision.expect("revision"))), "{message}");
    assert!(message.contains(&format!("{} keys", b.key_count.expect("key count"))), "{message}");
    let pods: Api<Pod> = Api::namespaced(kit.client.clone(), &ns);
    wait_for("the drill pod gone", WAIT, || async { pods.get_opt("often-drill").await.ok()?.is_none().then_some(()) })
        .await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(kit.client.clone(), &ns);
    let volumes = claims.list(&ListParams::default()).await.expect("claims").items.len();
    assert_eq!(volumes, 3, "the members' volumes only: the drill's went with its pod");

    // No more backups; the newest one's object altered on the server's disk.
    schedules
        .patch("often", &PatchParams::default(), &Patch::Merge(json!({"spec": {"suspend": true}})))
        .await
        .expect("suspend");
    let newest = wait_for("every backup finished", WAIT, || async {
        let all = backups.list(&ListParams::default()).await.ok()?.items;
        if all.iter().any(|b| !b.status.as_ref().is_some_and(|s| s.phase.is_finished())) {
            return None;
        }
        all.into_iter()
            .filter(|b| b.status.as_ref().is_some_and(|s| s.phase == Phase::Succeeded))
            .max_by_key(|b| b.status.as_ref().and_then(|s| s.completion_time.clone()).map(|t| t.0))
    })
    .await;
    let key = newest.status.as_ref().and_then(|s| s.object_key.clone()).expect("object key");
    let path = s3_object_file(&kit, &key);
    let mut bytes = std::fs::read(&path).expect("object on disk");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, bytes).expect("alter one byte");

    let failed = wait_for("a failed drill of the altered backup", DRILL_WAIT, || async {
        let v = schedules.get("often").await.ok()?.status?.last_verification?;
        (v.result == VerificationResult::Failed && v.backup == newest.name_any()).then_some(v)
    })
    .await;
    let why = failed.message.unwrap_or_default();
    assert!(why.contains("corrupt") || why.contains("SHA-256"), "{why}");
    let said = wait_for("a VerificationFailed Event", WAIT, || async {
        let e = events(&kit, &ns, "often").await;
        e.iter().any(|l| l.starts_with("Warning VerificationFailed") && l.contains(&newest.name_any())).then_some(e)
    })
    .await;
    assert!(said.iter().any(|l| l.starts_with("Normal VerificationPassed")), "{said:?}");
    let status = schedules.get("often").await.expect("schedule").status.expect("status");
    let kept = status.last_successful_verification_time.map(|t| t.0);
    assert!(kept.is_some() && kept >= passed.time.map(|t| t.0), "the last pass is kept: {kept:?}");
    kit.delete_namespace(&ns).await;
}

fn second_bucket(kit: &Kit, ns: &str) -> Value {
    // The testbed's S3 server keeps a bucket as a directory of its root.
    std::fs::create_dir_all(kit.state.dir.join("s3").join("etcd-copies")).expect("second bucket");
    let mut t = s3_target(&format!("{ns}-dr"), "s3");
    t["bucket"] = json!("etcd-copies");
    t
}

#[tokio::test]
async fn a_copy_in_a_second_bucket_restores_after_the_first_loses_the_object() {
    let (kit, ns) = setup("copies").await;
    s3_secret(&kit, &ns, "s3", S3_ACCESS_KEY, S3_SECRET_KEY).await;
    create_cluster(&kit, &ns, cluster_manifest("src", 1, "3.5.30", json!({"backup": s3_target(&ns, "s3")}))).await;
    wait_ready(&kit, &ns, "src", 1).await;
    let before = fill(&kit, &ns, "src", 150).await;
    let copy_target = second_bucket(&kit, &ns);
    let _: EtcdBackup = kit
        .create(
            &ns,
            json!({"apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdBackup", "metadata": {"name": "b1"},
                   "spec": {"clusterName": "src", "copyTo": [copy_target]}}),
        )
        .await;
    let backups: Api<EtcdBackup> = Api::namespaced(kit.client.clone(), &ns);
    let status = wait_for("the copy written", WAIT, || async {
        let s = backups.get("b1").await.ok()?.status?;
        s.copies.first().is_some_and(|c| c.phase.is_finished()).then_some(s)
    })
    .await;
    let copy = &status.copies[0];
    assert_eq!(copy.phase, Phase::Succeeded, "{copy:?}");
    assert_eq!(copy.sha256, status.sha256, "checked against the original's SHA-256");
    let original = s3_object_file(&kit, status.object_key.as_deref().expect("key"));
    let copied = kit.state.dir.join("s3").join("etcd-copies").join(copy.object_key.as_deref().expect("copy key"));
    assert_eq!(std::fs::read(&copied).expect("copy on disk"), std::fs::read(&original).expect("original"));

    // The first bucket loses the object (and its hash).
    std::fs::remove_file(&original).expect("delete the original");
    let _ = std::fs::remove_file(original.with_extension("db.sha256"));
    let lost = restore_new_cluster(&kit, &ns, "from-original", json!({"backup": {"name": "b1"}})).await;
    assert_eq!(lost.phase, Phase::Failed, "{lost:?}");
    assert!(clusters(&kit, &ns).get_opt("from-original").await.expect("get").is_none(), "nothing created");

    let saved =
        restore_new_cluster(&kit, &ns, "from-copy", json!({"backup": {"name": "b1"}, "copy": "etcd-copies"})).await;
    assert_eq!(saved.phase, Phase::Succeeded, "{saved:?}");
    wait_ready(&kit, &ns, "from-copy", 1).await;
    let after = fill(&kit, &ns, "from-copy", 0).await;
    assert_eq!(after, before, "every key and value back from the copy");
    kit.delete_namespace(&ns).await;
}
