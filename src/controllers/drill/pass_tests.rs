//! Pass-level tests of the drill controller against the in-memory API server: a due
//! drill starts one pod for the newest backup (never two); an ended pod's verdict is
//! recorded under this controller's field manager with an Event and a count, and the pod
//! is deleted on the next pass (a crash between the two records nothing twice); no
//! `verify`, no pod.

use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::metrics::Metrics;
use crate::runtime::LeaseGuard;
use crate::runtime::fake_api::{self, NS, get, names_of, request_lines, status_writes};

fn cluster() -> Value {
    json!({"apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdCluster",
           "metadata": {"name": "main", "namespace": NS, "uid": "uid-main"},
           "spec": {"size": 1, "version": "3.5.30", "tls": {"mode": "Disabled"},
                    "backup": {"bucket": "bkt", "endpoint": "http://127.0.0.1:9",
                               "credentialsSecret": {"name": "s3"}}}})
}

fn schedule(verify: bool) -> Value {
    let mut s = json!({"apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdBackupSchedule",
           "metadata": {"name": "nightly", "namespace": NS, "uid": "uid-s", "creationTimestamp": "2026-12-01T00:00:00Z"},
           "spec": {"clusterName": "main", "schedule": "@daily"}});
    if verify {
        s["spec"]["verify"] = json!({"schedule": "* * * * *"});
    }
    s
}

fn backup(name: &str, completed: &str) -> Value {
    json!({"apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdBackup",
           "metadata": {"name": name, "namespace": NS, "labels": {SCHEDULE_LABEL: "nightly"},
                        "ownerReferences": [{"apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdBackupSchedule",
                                             "name": "nightly", "uid": "uid-s", "controller": true}]},
           "spec": {"clusterName": "main"},
           "status": {"phase": "Succeeded", "objectKey": format!("ns/main/{name}.db"), "sha256": "ab",
                      "etcdRevision": 100, "keyCount": 40, "completionTime": completed}})
}

fn ended_pod(backup: &str, outcome: &Outcome) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "nightly-drill", "namespace": NS, "uid": "uid-pod",
                        "creationTimestamp": "2026-12-07T10:00:00Z",
                        "labels": {pod::LABEL: "true"}, "annotations": {pod::BACKUP_ANNOTATION: backup},
                        "ownerReferences": [{"apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdBackupSchedule",
                                             "name": "nightly", "uid": "uid-s", "controller": true}]},
           "spec": {"containers": [{"name": "drill"}]},
           "status": {"phase": "Failed", "containerStatuses": [{"name": "drill", "image": "i", "imageID": "",
               "ready": false, "restartCount": 0,
               "state": {"terminated": {"exitCode": 1, "finishedAt": "2026-12-07T10:00:42Z",
                                        "message": outcome.message()}}}]}})
}

fn ctx(client: kube::Client) -> Arc<Context> {
    let rt =
        Arc::new(Runtime::new(client, Arc::new(Metrics::default()), "test-replica".into(), LeaseGuard::unguarded()));
    Arc::new(Context { rt, operator_image: "etcd-pilot:test".into() })
}

#[tokio::test]
async fn a_due_drill_starts_one_pod_for_the_newest_backup_and_never_two() {
    let (client, store) = fake_api::client(vec![
        ("etcdclusters", "main", cluster()),
        ("etcdbackupschedules", "nightly", schedule(true)),
        ("etcdbackups", "nightly-1", backup("nightly-1", "2026-12-06T00:01:00Z")),
        ("etcdbackups", "nightly-2", backup("nightly-2", "2026-12-07T00:01:00Z")),
    ]);
    let ctx = ctx(client);
    pass(&get(&store, "etcdbackupschedules", "nightly"), &ctx).await.expect("pass");
    assert_eq!(names_of(&store, "pods"), ["nightly-drill"]);
    let p: Pod = get(&store, "pods", "nightly-drill");
    assert_eq!(pod::backup_of(&p), "nightly-2", "the newest backup");
    let env = p.spec.as_ref().map(|s| s.containers[0].env.clone().unwrap_or_default()).unwrap_or_default();
    let source: SeedSource = serde_json::from_str(env[0].value.as_deref().unwrap_or_default()).expect("source");
    assert_eq!((source.bucket.as_str(), source.key.as_str()), ("bkt", "ns/main/nightly-2.db"));
    assert_eq!(p.owner_references()[0].uid, "uid-s");
    // The next pass (or one after a crash) finds the pod: no second drill.
    pass(&get(&store, "etcdbackupschedules", "nightly"), &ctx).await.expect("pass");
    assert_eq!(names_of(&store, "pods"), ["nightly-drill"]);
    let creates = request_lines(&store).into_iter().filter(|l| l.starts_with("POST") && l.contains("pods")).count();
    assert_eq!(creates, 1);
}

#[tokio::test]
async fn an_ended_drill_is_recorded_once_then_its_pod_goes() {
    let outcome = Outcome::Failed("download: object \"ns/main/nightly-2.db\" is corrupt".into());
    let (client, store) = fake_api::client(vec![
        ("etcdclusters", "main", cluster()),
        ("etcdbackupschedules", "nightly", schedule(true)),
        ("etcdbackups", "nightly-2", backup("nightly-2", "2026-12-07T00:01:00Z")),
        ("pods", "nightly-drill", ended_pod("nightly-2", &outcome)),
    ]);
    let ctx = ctx(client);
    pass(&get(&store, "etcdbackupschedules", "nightly"), &ctx).await.expect("pass");
    let s: EtcdBackupSchedule = get(&store, "etcdbackupschedules", "nightly");
    let v = s.status.as_ref().and_then(|s| s.last_verification.clone()).expect("recorded");
    assert_eq!((v.backup.as_str(), v.result), ("nightly-2", VerificationResult::Failed));
    assert!(v.message.as_deref().unwrap_or_default().contains("is corrupt"), "{v:?}");
    assert_eq!(v.duration_seconds, Some(42));
    assert!(s.status.as_ref().and_then(|s| s.last_successful_verification_time.clone()).is_none());
    let events: Vec<Value> = names_of(&store, "events").iter().map(|n| get(&store, "events", n)).collect();
    assert!(events.iter().any(|e| e["reason"] == "VerificationFailed"), "{events:?}");
    let l = VerificationLabels {
        namespace: NS.into(),
        schedule: "nightly".into(),
        cluster: "main".into(),
        result: "failed".into(),
    };
    assert_eq!(ctx.rt.metrics.verifications.get_or_create(&l).get(), 1);
    let applied = status_writes(&store, "etcdbackupschedules");
    assert!(!applied.is_empty() && applied.iter().all(|l| l.ends_with(FIELD_MANAGER)), "{applied:?}");

    // The pod is still there (a crash here): the verdict is not recorded twice, the pod goes.
    pass(&get(&store, "etcdbackupschedules", "nightly"), &ctx).await.expect("pass");
    assert!(names_of(&store, "pods").is_empty());
    assert_eq!(ctx.rt.metrics.verifications.get_or_create(&l).get(), 1, "counted once");
}

#[tokio::test]
async fn a_restored_backup_without_a_live_member_passes_and_says_so() {
    let report = crate::drill::Report { revision: 100, key_count: 40, hash: 7, compact_revision: 1, seconds: 3.0 };
    let (client, store) = fake_api::client(vec![
        ("etcdclusters", "main", cluster()),
        ("etcdbackupschedules", "nightly", schedule(true)),
        ("etcdbackups", "nightly-2", backup("nightly-2", "2026-12-07T00:01:00Z")),
        ("pods", "nightly-drill", ended_pod("nightly-2", &Outcome::Restored(report))),
    ]);
    let ctx = ctx(client);
    pass(&get(&store, "etcdbackupschedules", "nightly"), &ctx).await.expect("pass");
    let s: EtcdBackupSchedule = get(&store, "etcdbackupschedules", "nightly");
    let status = s.status.expect("status");
    let v = status.last_verification.expect("recorded");
    assert_eq!(v.result, VerificationResult::Passed, "{v:?}");
    assert!(
        v.message.as_deref().unwrap_or_default().contains("HashKV not compared: no healthy voting member"),
        "{v:?}"
    );
    assert_eq!(status.last_successful_verification_time, v.time);
    assert!(status.next_verification_time.is_some());
}

#[tokio::test]
async fn no_verify_no_drill() {
    let (client, store) = fake_api::client(vec![
        ("etcdclusters", "main", cluster()),
        ("etcdbackupschedules", "nightly", schedule(false)),
        ("etcdbackups", "nightly-2", backup("nightly-2", "2026-12-07T00:01:00Z")),
    ]);
    let ctx = ctx(client);
    pass(&get(&store, "etcdbackupschedules", "nightly"), &ctx).await.expect("pass");
    assert!(names_of(&store, "pods").is_empty());
    let s: EtcdBackupSchedule = get(&store, "etcdbackupschedules", "nightly");
    assert!(s.status.and_then(|s| s.last_verification).is_none());
}
