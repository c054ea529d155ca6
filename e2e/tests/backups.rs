//! Backups on the testbed, with the operator installed from the chart and the testbed's
//! own S3-compatible server: what etcd-pilot wrote is read back from the server's disk,
//! independently of any S3 code.

use std::time::Duration;

use etcd_pilot::api::{EtcdBackup, EtcdRestore, Phase};
use etcd_pilot_e2e::fixtures::*;
use etcd_pilot_e2e::layout::{S3_ACCESS_KEY, S3_SECRET_KEY};
use kube::api::{Api, DeleteParams};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn backup(name: &str, cluster: &str, target: Value) -> Value {
    json!({"apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdBackup", "metadata": {"name": name},
           "spec": {"clusterName": cluster, "target": target}})
}

#[tokio::test]
async fn a_backup_is_a_verified_object_in_s3_and_goes_with_its_resource() {
    let (kit, ns) = setup("backup").await;
    s3_secret(&kit, &ns, "s3", S3_ACCESS_KEY, S3_SECRET_KEY).await;
    create_cluster(&kit, &ns, cluster_manifest("main", 3, "3.4.23", json!({}))).await;
    wait_ready(&kit, &ns, "main", 3).await;
    let mut c = etcd(&kit, &ns, "main").await;
    for i in 0..200 {
        c.put(format!("/registry/pods/default/p{i}"), format!("pod-{i}"), None).await.expect("put");
    }
    let last =
        c.get("/registry/pods/default/p199", None).await.expect("get").header().map(|h| h.revision()).unwrap_or(0);

    let _: EtcdBackup = kit.create(&ns, backup("b1", "main", s3_target(&ns, "s3"))).await;
    let b = wait_backup(&kit, &ns, "b1", WAIT).await;
    let s = b.status.clone().expect("status");
    assert_eq!(s.phase, Phase::Succeeded, "{s:?}");
    assert!(s.etcd_revision.unwrap_or(0) >= last, "the snapshot holds every write before it: {s:?}");
    assert_eq!(s.etcd_version.as_deref(), Some("3.4.23"));
    let leader = clusters(&kit, &ns).get("main").await.expect("cluster").status.and_then(|s| s.leader);
    assert_ne!(s.member, leader, "taken from a follower: {s:?}");

    // The object, read from the S3 server's disk: the recorded size and SHA-256, and
    // etcd's own SHA-256 of the db as its last 32 bytes.
    let key = s.object_key.clone().expect("object key");
    assert!(key.starts_with(&format!("{ns}/{ns}/main/")) && key.ends_with("-b1.db"), "{key}");
    let bytes = std::fs::read(s3_object_file(&kit, &key)).expect("object on the S3 server's disk");
    assert_eq!(Some(bytes.len() as i64), s.size_bytes);
    assert_eq!(Some(hex::encode(Sha256::digest(&bytes))), s.sha256);
    let (db, hash) = bytes.split_at(bytes.len() - 32);
    assert_eq!(Sha256::digest(db).as_slice(), hash, "etcd's appended hash is intact");
    let hash_file = s3_object_file(&kit, &format!("{key}.sha256"));
    let line = std::fs::read_to_string(&hash_file).expect("the hash object beside it");
    let name = key.rsplit('/').next().unwrap_or_default();
    assert_eq!(Some(line), s.sha256.as_ref().map(|h| format!("{h}  {name}\n")), "in sha256sum's format");

    let last_backup = wait_last_backup(&kit, &ns, "main", |l| l.is_some()).await.expect("status.lastBackup");
    assert_eq!((last_backup.name.as_str(), last_backup.object_key.as_str()), ("b1", key.as_str()));
    wait_event(&kit, &ns, "b1", |e| e.starts_with("Normal BackupSucceeded")).await;
    let metrics = operator_metrics(&kit).await;
    assert!(
        metrics.lines().any(|l| l.starts_with("etcdpilot_backups_total{")
            && l.contains(&format!("namespace=\"{ns}\""))
            && l.contains("result=\"succeeded\"")),
        "backups counted"
    );

    // Deleting the EtcdBackup deletes its object (the finalizer), and the cluster no
    // longer names it.
    let api: Api<EtcdBackup> = Api::namespaced(kit.client.clone(), &ns);
    api.delete("b1", &DeleteParams::default()).await.expect("delete backup");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while api.get_opt("b1").await.expect("get").is_some() {
        assert!(std::time::Instant::now() < deadline, "the EtcdBackup was never deleted");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(!s3_object_file(&kit, &key).exists(), "the object went with its EtcdBackup");
    assert!(!hash_file.exists(), "and its hash object");
    wait_last_backup(&kit, &ns, "main", |l| l.is_none()).await;
    kit.delete_namespace(&ns).await;
}

#[tokio::test]
async fn bad_backup_input_fails_clearly_and_writes_nothing() {
    let (kit, ns) = setup("backup-bad").await;
    s3_secret(&kit, &ns, "s3", S3_ACCESS_KEY, S3_SECRET_KEY).await;
    s3_secret(&kit, &ns, "s3-wrong", S3_ACCESS_KEY, "not-the-secret").await;
    let _: k8s_openapi::api::core::v1::Secret = kit
        .create(
            &ns,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-keys"},
                             "stringData": {"access": S3_ACCESS_KEY, "secret": S3_SECRET_KEY}}),
        )
        .await;
    create_cluster(&kit, &ns, cluster_manifest("main", 1, "3.4.23", json!({}))).await;
    wait_ready(&kit, &ns, "main", 1).await;

    let mut no_bucket = s3_target(&ns, "s3");
    no_bucket["bucket"] = json!("no-such-bucket");
    let cases: Vec<(&str, &str, Value, &str)> = vec![
        ("no-secret", "main", s3_target(&ns, "missing"), "S3 credentials Secret \"missing\" does not exist"),
        ("wrong-key", "main", s3_target(&ns, "s3-keys"), "lacks key \"AWS_ACCESS_KEY_ID\""),
        ("bad-creds", "main", s3_target(&ns, "s3-wrong"), "refused the credentials"),
        ("no-bucket", "main", no_bucket, "bucket \"no-such-bucket\" does not exist"),
        ("no-cluster", "ghost", s3_target(&ns, "s3"), "the EtcdCluster does not exist"),
    ];
    for (name, cluster, target, _) in &cases {
        let _: EtcdBackup = kit.create(&ns, backup(name, cluster, target.clone())).await;
    }
    for (name, _, _, want) in &cases {
        let b = wait_backup(&kit, &ns, name, Duration::from_secs(120)).await;
        let s = b.status.expect("status");
        assert_eq!(s.phase, Phase::Failed, "{name}: {s:?}");
        let error = s.error.unwrap_or_default();
        assert!(error.contains(want), "{name}: {error:?} should say {want:?}");
        assert_eq!(s.object_key, None, "{name}");
        wait_event(&kit, &ns, name, |e| e.starts_with("Warning BackupFailed") && e.contains(want)).await;
    }
    assert_eq!(s3_objects(&kit, &ns), Vec::<String>::new(), "nothing written");
    let ec = clusters(&kit, &ns).get("main").await.expect("cluster");
    assert_eq!(ec.status.and_then(|s| s.last_backup), None);
    kit.delete_namespace(&ns).await;
}

fn restore(name: &str, backup: &str, cluster: &str, new_cluster: Value) -> Value {
    json!({"apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdRestore", "metadata": {"name": name},
           "spec": {"source": {"backup": {"name": backup}}, "mode": "NewCluster", "clusterName": cluster,
                    "newCluster": new_cluster}})
}

async fn wait_restore(kit: &etcd_pilot_e2e::kit::Kit, ns: &str, name: &str) -> EtcdRestore {
    let api: Api<EtcdRestore> = Api::namespaced(kit.client.clone(), ns);
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        if let Ok(r) = api.get(name).await
            && r.status.as_ref().is_some_and(|s| s.phase.is_finished())
        {
            return r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "restore {ns}/{name} did not finish: {:?}",
            api.get(name).await.ok().and_then(|r| r.status)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A backup of a `src_size` cluster restored into a new `dst_size` cluster of the same
/// version: every key back, new writes above every revision the source served, and a
/// watch from an old revision told it was compacted.
async fn restore_into_a_new_cluster(prefix: &str, version: &str, src_size: i32, dst_size: i32) {
    let (kit, ns) = setup(prefix).await;
    s3_secret(&kit, &ns, "s3", S3_ACCESS_KEY, S3_SECRET_KEY).await;
    create_cluster(&kit, &ns, cluster_manifest("src", src_size, version, json!({"backup": s3_target(&ns, "s3")})))
        .await;
    wait_ready(&kit, &ns, "src", src_size as usize).await;
    let mut c = etcd(&kit, &ns, "src").await;
    for i in 0..100 {
        c.put(format!("/registry/configmaps/default/c{i}"), format!("v{i}"), None).await.expect("put");
    }
    // No target: the cluster's spec.backup.
    let _: EtcdBackup = kit
        .create(
            &ns,
            json!({"apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdBackup", "metadata": {"name": "b1"},
                             "spec": {"clusterName": "src"}}),
        )
        .await;
    let b = wait_backup(&kit, &ns, "b1", WAIT).await;
    assert_eq!(b.status.as_ref().map(|s| s.phase), Some(Phase::Succeeded), "{:?}", b.status);
    // Writes after the backup: not in the restore, but their revisions must never be
    // handed out again.
    let mut last = 0;
    for i in 0..50 {
        let r = c.put(format!("/after/{i}"), "x", None).await.expect("put");
        last = r.header().map(|h| h.revision()).unwrap_or(0);
    }

    let _: EtcdRestore =
        kit.create(&ns, restore("r1", "b1", "restored", json!({"size": dst_size, "version": version}))).await;
    let r = wait_restore(&kit, &ns, "r1").await;
    let s = r.status.clone().expect("status");
    assert_eq!(s.phase, Phase::Succeeded, "{s:?}");
    let steps: Vec<&str> = s.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(steps, ["SourceVerified", "ClusterCreated", "ClusterAvailable"]);
    assert_eq!(s.source_sha256, b.status.as_ref().and_then(|s| s.sha256.clone()));
    let restored_from = s.restored_revision.expect("restoredRevision");
    assert!(restored_from > last, "restored revisions start above the source's last ({restored_from} > {last})");
    let ec = wait_ready(&kit, &ns, "restored", dst_size as usize).await;
    let pods = member_pods(&kit, &ns, "restored").await;
    assert_eq!(pods.len(), dst_size as usize);
    // The first member was seeded from the snapshot; the others joined it as learners
    // and took its data from it (none is a voter before it runs).
    let mut seeded: Vec<String> = pods
        .iter()
        .filter(|p| {
            p.spec.as_ref().and_then(|s| s.init_containers.as_ref()).is_some_and(|i| i.iter().any(|c| c.name == "seed"))
        })
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    seeded.sort();
    assert_eq!(seeded, ["restored-0"], "one member seeded from the snapshot");
    assert_ne!(ec.status.as_ref().and_then(|s| s.cluster_id.clone()), None);

    let mut n = etcd(&kit, &ns, "restored").await;
    let got =
        n.get("/registry/configmaps/default/", Some(etcd_client::GetOptions::new().with_prefix())).await.expect("get");
    assert_eq!(got.kvs().len(), 100, "every key of the backup is back");
    for kv in got.kvs() {
        let k = kv.key_str().expect("key");
        let i = k.rsplit('c').next().unwrap_or_default();
        assert_eq!(kv.value_str().expect("value"), format!("v{i}"), "{k}");
    }
    let after =
        n.get("/after/", Some(etcd_client::GetOptions::new().with_prefix().with_count_only())).await.expect("get");
    assert_eq!(after.count(), 0, "writes after the backup are not in it");
    let put = n.put("/registry/configmaps/default/new", "n", None).await.expect("put");
    let rev = put.header().map(|h| h.revision()).unwrap_or(0);
    assert!(rev > last, "a new write gets a revision above the source's last: {rev} > {last}");
    // An informer resuming from a revision it saw on the old cluster is told to relist.
    let mut stream = n
        .watch("/registry/", Some(etcd_client::WatchOptions::new().with_prefix().with_start_revision(last)))
        .await
        .expect("watch");
    let mut told = None;
    for _ in 0..5 {
        let m = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("a watch answer in time")
            .expect("watch answer")
            .expect("a message");
        if m.canceled() || m.compact_revision() > 0 {
            told = Some(m);
            break;
        }
    }
    let told = told.expect("the watch was cancelled as compacted");
    assert!(told.compact_revision() > last, "compacted up to the restored revision: {told:?}");
    kit.delete_namespace(&ns).await;
}

#[tokio::test]
async fn restore_of_a_3_4_backup_into_a_new_3_member_cluster() {
    restore_into_a_new_cluster("restore34", "3.4.23", 1, 3).await;
}

#[tokio::test]
async fn restore_of_a_3_5_backup_into_a_new_cluster() {
    restore_into_a_new_cluster("restore35", "3.5.30", 1, 1).await;
}

#[tokio::test]
async fn a_corrupt_object_fails_the_restore_and_creates_nothing() {
    let (kit, ns) = setup("restore-bad").await;
    s3_secret(&kit, &ns, "s3", S3_ACCESS_KEY, S3_SECRET_KEY).await;
    create_cluster(&kit, &ns, cluster_manifest("src", 1, "3.4.23", json!({}))).await;
    wait_ready(&kit, &ns, "src", 1).await;
    let mut c = etcd(&kit, &ns, "src").await;
    c.put("/registry/a", "b", None).await.expect("put");
    let _: EtcdBackup = kit.create(&ns, backup("b1", "src", s3_target(&ns, "s3"))).await;
    let b = wait_backup(&kit, &ns, "b1", WAIT).await;
    let key = b.status.and_then(|s| s.object_key).expect("object key");
    // One bit flipped in the stored object, on the S3 server's disk.
    let file = s3_object_file(&kit, &key);
    let mut bytes = std::fs::read(&file).expect("object");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x10;
    std::fs::write(&file, &bytes).expect("flip a bit");

    let _: EtcdRestore =
        kit.create(&ns, restore("r1", "b1", "restored", json!({"size": 1, "version": "3.4.23"}))).await;
    let r = wait_restore(&kit, &ns, "r1").await;
    let s = r.status.expect("status");
    assert_eq!(s.phase, Phase::Failed, "{s:?}");
    let error = s.error.unwrap_or_default();
    assert!(error.contains("is corrupt: its SHA-256 is"), "{error}");
    wait_event(&kit, &ns, "r1", |e| e.starts_with("Warning RestoreFailed") && e.contains("corrupt")).await;
    assert!(clusters(&kit, &ns).get_opt("restored").await.expect("get").is_none(), "no EtcdCluster created");
    assert!(member_pods(&kit, &ns, "restored").await.is_empty(), "no pod created");
    kit.delete_namespace(&ns).await;
}

fn schedule(name: &str, cluster: &str, cron: &str, extra: Value) -> Value {
    let mut spec = json!({"clusterName": cluster, "schedule": cron});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdBackupSchedule", "metadata": {"name": name}, "spec": spec})
}

#[tokio::test]
async fn a_schedule_every_minute_keeps_the_two_newest_backups() {
    use etcd_pilot::api::EtcdBackupSchedule;
    use std::collections::BTreeSet;
    let (kit, ns) = setup("schedule").await;
    s3_secret(&kit, &ns, "s3", S3_ACCESS_KEY, S3_SECRET_KEY).await;
    create_cluster(&kit, &ns, cluster_manifest("main", 1, "3.4.23", json!({"backup": s3_target(&ns, "s3")}))).await;
    wait_ready(&kit, &ns, "main", 1).await;
    let _: EtcdBackupSchedule =
        kit.create(&ns, schedule("every-minute", "main", "* * * * *", json!({"retention": {"keepLast": 2}}))).await;
    let backups: Api<EtcdBackup> = Api::namespaced(kit.client.clone(), &ns);
    let lp = kube::api::ListParams::default().labels("etcdpilot.io/schedule=every-minute");
    let mut seen = BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(420);
    let (kept, keys) = loop {
        let list = backups.list(&lp).await.expect("list").items;
        seen.extend(list.iter().filter_map(|b| b.metadata.name.clone()));
        let live: Vec<&EtcdBackup> = list.iter().filter(|b| b.metadata.deletion_timestamp.is_none()).collect();
        let all_done = live.iter().all(|b| b.status.as_ref().is_some_and(|s| s.phase == Phase::Succeeded));
        let keys: BTreeSet<String> = live
            .iter()
            .filter_map(|b| b.status.as_ref().and_then(|s| s.object_key.clone()))
            .flat_map(|k| [format!("{k}.sha256"), k])
            .collect();
        let on_disk: BTreeSet<String> = s3_objects(&kit, &ns).into_iter().collect();
        // Several runs, pruning seen, and a quiet moment: exactly two kept, and the
        // bucket holds exactly their objects and their hash objects.
        if seen.len() >= 4 && live.len() == 2 && all_done && keys == on_disk {
            break (live.iter().filter_map(|b| b.metadata.name.clone()).collect::<BTreeSet<String>>(), keys);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "seen {seen:?}; live {:?}; objects {on_disk:?}",
            live.iter().map(|b| (b.metadata.name.clone(), b.status.as_ref().map(|s| s.phase))).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let newest: BTreeSet<String> = seen.iter().rev().take(2).cloned().collect();
    assert_eq!(kept, newest, "the two newest are kept (names follow the slot)");
    assert_eq!(keys.len(), 4);
    let s: EtcdBackupSchedule = Api::namespaced(kit.client.clone(), &ns).get("every-minute").await.expect("schedule");
    let st = s.status.expect("status");
    assert!(st.next_schedule_time.is_some() && st.last_successful_time.is_some(), "{st:?}");
    // `kubectl get` shows the next run as a time, not `<invalid>` (a future `date`).
    let table = kit.kubectl(&["get", "etcdbackupschedule", "every-minute", "-n", &ns]);
    let next = st.next_schedule_time.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
    assert!(table.contains("NEXT") && !table.contains("<invalid>"), "{table}");
    assert!(table.contains(&next[..11]), "the next run's time (about {next}) in: {table}");
    wait_event(&kit, &ns, "every-minute", |e| e.starts_with("Normal BackupPruned")).await;

    // Bad input: nothing runs, and the schedule says why.
    let _: EtcdBackupSchedule = kit.create(&ns, schedule("bad-cron", "main", "61 * * * *", json!({}))).await;
    let _: EtcdBackupSchedule =
        kit.create(&ns, schedule("bad-zone", "main", "* * * * *", json!({"timeZone": "Mars/Olympus"}))).await;
    for (name, want) in [("bad-cron", "is not a valid cron expression"), ("bad-zone", "is not a known IANA time zone")]
    {
        let api: Api<EtcdBackupSchedule> = Api::namespaced(kit.client.clone(), &ns);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let error = api.get(name).await.expect("schedule").status.and_then(|s| s.error).unwrap_or_default();
            if error.contains(want) {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{name}: {error:?}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        wait_event(&kit, &ns, name, |e| e.starts_with("Warning InvalidSchedule") && e.contains(want)).await;
    }
    // Once a slot has passed (the valid schedule made its next backup), still nothing
    // ran for them.
    let before = seen.len();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let list = backups.list(&lp).await.expect("list").items;
        seen.extend(list.iter().filter_map(|b| b.metadata.name.clone()));
        if seen.len() > before {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no slot passed");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for name in ["bad-cron", "bad-zone"] {
        let lp = kube::api::ListParams::default().labels(&format!("etcdpilot.io/schedule={name}"));
        assert!(backups.list(&lp).await.expect("list").items.is_empty(), "{name} made no backup");
    }
    kit.delete_namespace(&ns).await;
}

#[tokio::test]
async fn a_backup_during_a_scale_up_waits_for_the_operation_slot() {
    let (kit, ns) = setup("backup-scale").await;
    s3_secret(&kit, &ns, "s3", S3_ACCESS_KEY, S3_SECRET_KEY).await;
    create_cluster(&kit, &ns, cluster_manifest("main", 3, "3.4.23", json!({"backup": s3_target(&ns, "s3")}))).await;
    wait_ready(&kit, &ns, "main", 3).await;
    patch_spec(&kit, &ns, "main", json!({"size": 5})).await;
    // The scale-up holds the cluster's operation slot.
    let slot = |ec: &etcd_pilot::api::EtcdCluster| {
        ec.metadata.annotations.as_ref().and_then(|a| a.get("etcdpilot.io/operation")).cloned().unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let ec = clusters(&kit, &ns).get("main").await.expect("cluster");
        if slot(&ec).contains("\"controller\":\"cluster\"") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the scale-up never took the slot");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _: EtcdBackup = kit
        .create(
            &ns,
            json!({"apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdBackup",
        "metadata": {"name": "b1"}, "spec": {"clusterName": "main"}}),
        )
        .await;
    // Sampled until both are done: the backup never runs while the cluster's own
    // operation holds the slot, and it says it waits.
    let api: Api<EtcdBackup> = Api::namespaced(kit.client.clone(), &ns);
    let (mut waited, mut overlaps) = (false, Vec::new());
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let b = api.get("b1").await.expect("backup");
        let ec = clusters(&kit, &ns).get("main").await.expect("cluster");
        let s = b.status.clone().unwrap_or_default();
        waited |= s.error.as_deref().is_some_and(|e| e.contains("waiting for the cluster's operation slot (cluster"));
        if s.phase == Phase::Running && slot(&ec).contains("\"controller\":\"cluster\"") {
            overlaps.push(slot(&ec));
        }
        let ready = ec.status.as_ref().map(|s| s.ready_members).unwrap_or(0);
        if s.phase.is_finished() && ready == 5 {
            assert_eq!(s.phase, Phase::Succeeded, "{s:?}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "backup {s:?}, {ready} ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(waited, "the backup waited for the scale-up's slot");
    assert!(overlaps.is_empty(), "a snapshot ran during a membership change: {overlaps:?}");
    wait_ready(&kit, &ns, "main", 5).await;
    kit.delete_namespace(&ns).await;
}

fn in_place(name: &str, source: Value, force: bool) -> Value {
    json!({"apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdRestore", "metadata": {"name": name},
           "spec": {"source": source, "mode": "InPlace", "clusterName": "main", "force": force}})
}

async fn count(c: &mut etcd_client::Client, prefix: &str) -> i64 {
    c.get(prefix, Some(etcd_client::GetOptions::new().with_prefix().with_count_only())).await.expect("count").count()
}

#[tokio::test]
async fn quorum_loss_is_recovered_in_place_from_the_survivor_and_from_a_backup() {
    use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
    let (kit, ns) = setup("quorum-loss").await;
    s3_secret(&kit, &ns, "s3", S3_ACCESS_KEY, S3_SECRET_KEY).await;
    create_cluster(&kit, &ns, cluster_manifest("main", 3, "3.4.23", json!({"backup": s3_target(&ns, "s3")}))).await;
    wait_ready(&kit, &ns, "main", 3).await;
    let mut c = etcd(&kit, &ns, "main").await;
    for i in 0..100 {
        c.put(format!("/registry/k1/{i}"), "before the backup", None).await.expect("put");
    }
    let _: EtcdBackup = kit.create(&ns, backup("b1", "main", s3_target(&ns, "s3"))).await;
    assert_eq!(wait_backup(&kit, &ns, "b1", WAIT).await.status.map(|s| s.phase), Some(Phase::Succeeded));
    let mut last = 0;
    for i in 0..50 {
        let r = c.put(format!("/registry/k2/{i}"), "after the backup", None).await.expect("put");
        last = r.header().map(|h| h.revision()).unwrap_or(0);
    }

    // A healthy cluster is not restored in place without force, and nothing changes.
    let uids = |pods: &[Pod]| pods.iter().filter_map(|p| p.metadata.uid.clone()).collect::<Vec<_>>();
    let before = uids(&member_pods(&kit, &ns, "main").await);
    let _: EtcdRestore = kit.create(&ns, in_place("r0", json!({"backup": {"name": "b1"}}), false)).await;
    let s = wait_restore(&kit, &ns, "r0").await.status.expect("status");
    assert_eq!(s.phase, Phase::Failed);
    assert!(s.error.unwrap_or_default().contains("the cluster has quorum"), "refused");
    assert_eq!(uids(&member_pods(&kit, &ns, "main").await), before, "no member touched");
    assert_eq!(count(&mut c, "/registry/k2/").await, 50);

    // Two of three members lost with their volumes, at once: paused meanwhile, so that
    // the operator does not heal the first loss (a member gone with its volume is
    // replaced while quorum holds) before the second.
    patch_spec(&kit, &ns, "main", json!({"paused": true})).await;
    wait_passes(&kit, &ns, "main", 2).await;
    let pods: Api<Pod> = Api::namespaced(kit.client.clone(), &ns);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(kit.client.clone(), &ns);
    for m in ["main-1", "main-2"] {
        pvcs.delete(&format!("data-{m}"), &DeleteParams::default()).await.expect("delete PVC");
        pods.delete(m, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() })
            .await
            .expect("delete pod");
    }
    for m in ["main-1", "main-2"] {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while pvcs.get_opt(&format!("data-{m}")).await.expect("get").is_some()
            || pods.get_opt(m).await.expect("get").is_some()
        {
            assert!(std::time::Instant::now() < deadline, "{m} and its volume never went");
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
    patch_spec(&kit, &ns, "main", json!({"paused": false})).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let ec = clusters(&kit, &ns).get("main").await.expect("cluster");
        let degraded = condition(&ec, "Degraded").map(|c| c.2).unwrap_or_default();
        let available = condition(&ec, "Available").map(|c| c.0).unwrap_or_default();
        if degraded.contains("quorum lost for good") && available == "False" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the cluster never said it lost quorum: {degraded}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Nothing destructive on its own: after passes that could have acted, the survivor
    // is the only member pod and no member was added or removed.
    wait_passes(&kit, &ns, "main", 5).await;
    let left: Vec<String> =
        member_pods(&kit, &ns, "main").await.iter().filter_map(|p| p.metadata.name.clone()).collect();
    assert_eq!(left, ["main-0"]);
    let ec = clusters(&kit, &ns).get("main").await.expect("cluster");
    let known: Vec<String> = ec
        .status
        .map(|s| s.members.iter().filter(|m| !m.id.is_empty()).map(|m| m.name.clone()).collect())
        .unwrap_or_default();
    assert_eq!(known, ["main-0", "main-1", "main-2"], "etcd still knows all three");

    // From the survivor: every write it had, the ones after the backup included.
    let _: EtcdRestore = kit.create(&ns, in_place("r1", json!({"member": "main-0"}), false)).await;
    let s = wait_restore(&kit, &ns, "r1").await.status.expect("status");
    assert_eq!(s.phase, Phase::Succeeded, "{s:?}");
    let steps: Vec<&str> = s.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(steps, ["SurvivorSnapshotted", "SourceVerified", "MembersStopped", "DataReplaced", "ClusterAvailable"]);
    assert!(s.restored_revision.unwrap_or(0) > last, "{s:?}");
    wait_ready(&kit, &ns, "main", 3).await;
    let names: Vec<String> =
        member_pods(&kit, &ns, "main").await.iter().filter_map(|p| p.metadata.name.clone()).collect();
    assert_eq!(names, ["main-3", "main-4", "main-5"], "new members, new names");
    let mut c = etcd(&kit, &ns, "main").await;
    assert_eq!(count(&mut c, "/registry/k1/").await, 100);
    assert_eq!(count(&mut c, "/registry/k2/").await, 50, "writes after the backup recovered from the survivor");
    let rev = c.put("/registry/k3/x", "y", None).await.expect("put").header().map(|h| h.revision()).unwrap_or(0);
    assert!(rev > last, "revisions move forward: {rev} > {last}");

    // From the backup (the cluster is healthy again: forced): the backup's keys only.
    let _: EtcdRestore = kit.create(&ns, in_place("r2", json!({"backup": {"name": "b1"}}), true)).await;
    let s = wait_restore(&kit, &ns, "r2").await.status.expect("status");
    assert_eq!(s.phase, Phase::Succeeded, "{s:?}");
    assert!(s.restored_revision.unwrap_or(0) > rev, "{s:?}");
    wait_ready(&kit, &ns, "main", 3).await;
    let mut c = etcd(&kit, &ns, "main").await;
    assert_eq!(count(&mut c, "/registry/k1/").await, 100);
    assert_eq!(count(&mut c, "/registry/k2/").await, 0, "the backup's keys, no more");
    let after = c.put("/registry/k3/z", "y", None).await.expect("put").header().map(|h| h.revision()).unwrap_or(0);
    assert!(after > rev, "revisions move forward again: {after} > {rev}");
    kit.delete_namespace(&ns).await;
}

#[tokio::test]
async fn opt_in_recovery_from_quorum_loss_starts_by_itself() {
    use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
    let (kit, ns) = setup("auto-recovery").await;
    s3_secret(&kit, &ns, "s3", S3_ACCESS_KEY, S3_SECRET_KEY).await;
    let spec = json!({"backup": s3_target(&ns, "s3"), "healing": {"recoverQuorumLossAfterSeconds": 30}});
    create_cluster(&kit, &ns, cluster_manifest("main", 3, "3.4.23", spec)).await;
    wait_ready(&kit, &ns, "main", 3).await;
    let mut c = etcd(&kit, &ns, "main").await;
    for i in 0..30 {
        c.put(format!("/registry/k/{i}"), "v", None).await.expect("put");
    }
    let pods: Api<Pod> = Api::namespaced(kit.client.clone(), &ns);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(kit.client.clone(), &ns);
    for m in ["main-0", "main-2"] {
        pvcs.delete(&format!("data-{m}"), &DeleteParams::default()).await.expect("delete PVC");
        pods.delete(m, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() })
            .await
            .expect("delete pod");
    }
    // etcd-pilot starts the recovery itself, from the survivor, and it succeeds.
    let restores: Api<EtcdRestore> = Api::namespaced(kit.client.clone(), &ns);
    let lp = kube::api::ListParams::default().labels("etcdpilot.io/auto-recovery=main");
    let deadline = std::time::Instant::now() + WAIT;
    let name = loop {
        if let Some(r) = restores.list(&lp).await.expect("list").items.first() {
            break r.metadata.name.clone().expect("name");
        }
        assert!(std::time::Instant::now() < deadline, "no recovery started");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let r = wait_restore(&kit, &ns, &name).await;
    assert_eq!(r.spec.source.member.as_deref(), Some("main-1"), "from the survivor");
    assert_eq!(r.status.as_ref().map(|s| s.phase), Some(Phase::Succeeded), "{:?}", r.status);
    wait_event(&kit, &ns, "main", |e| e.starts_with("Warning QuorumRecoveryStarted") && e.contains("main-1")).await;
    wait_ready(&kit, &ns, "main", 3).await;
    let mut c = etcd(&kit, &ns, "main").await;
    assert_eq!(count(&mut c, "/registry/k/").await, 30, "every write recovered");
    assert_eq!(restores.list(&lp).await.expect("list").items.len(), 1, "one recovery, not one per pass");
    kit.delete_namespace(&ns).await;
}
