//! Pass-level tests of the schedule controller against the in-memory API server: the
//! due slot's backup created once, owned and named by the slot; retention pruning.

use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::metrics::Metrics;
use crate::runtime::LeaseGuard;
use crate::runtime::fake_api::{self, NS, get, names_of};

fn cluster() -> Value {
    json!({"apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdCluster",
           "metadata": {"name": "main", "namespace": NS, "uid": "uid-main"},
           "spec": {"size": 1, "version": "3.4.23"}})
}

fn schedule(created: &str, keep_last: i32) -> Value {
    json!({"apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdBackupSchedule",
           "metadata": {"name": "nightly", "namespace": NS, "uid": "uid-nightly", "creationTimestamp": created},
           "spec": {"clusterName": "main", "schedule": "*/5 * * * *", "retention": {"keepLast": keep_last}}})
}

fn made(name: &str, completed: &str) -> Value {
    json!({"apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdBackup",
           "metadata": {"name": name, "namespace": NS, "labels": {SCHEDULE_LABEL: "nightly"},
                        "creationTimestamp": completed,
                        "ownerReferences": [{"apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdBackupSchedule",
                                             "name": "nightly", "uid": "uid-nightly", "controller": true}]},
           "spec": {"clusterName": "main"},
           "status": {"phase": "Succeeded", "completionTime": completed, "objectKey": format!("k/{name}")}})
}

fn ctx(client: kube::Client) -> Arc<Context> {
    let rt =
        Arc::new(Runtime::new(client, Arc::new(Metrics::default()), "test-replica".into(), LeaseGuard::unguarded()));
    Arc::new(Context { rt })
}

#[tokio::test]
async fn a_due_slot_makes_one_owned_backup_named_by_the_slot() {
    let (client, store) = fake_api::client(vec![
        ("etcdclusters", "main", cluster()),
        ("etcdbackupschedules", "nightly", schedule("2026-01-01T00:00:00Z", 3)),
    ]);
    let ctx = ctx(client);
    pass(&get(&store, "etcdbackupschedules", "nightly"), &ctx).await.expect("pass");
    let made = names_of(&store, "etcdbackups");
    assert_eq!(made.len(), 1, "months of missed slots: one catch-up backup");
    let b: EtcdBackup = get(&store, "etcdbackups", &made[0]);
    assert!(made[0].starts_with("nightly-"));
    assert_eq!(b.owner_references()[0].uid, "uid-nightly");
    assert_eq!(b.labels().get(SCHEDULE_LABEL).map(String::as_str), Some("nightly"));
    let s: EtcdBackupSchedule = get(&store, "etcdbackupschedules", "nightly");
    let status = s.status.clone().expect("status");
    assert!(status.last_schedule_time.is_some() && status.next_schedule_time.is_some(), "{status:?}");
    // The next pass (same slot) makes none: the slot ran, and its backup still runs.
    pass(&s, &ctx).await.expect("pass");
    assert_eq!(names_of(&store, "etcdbackups").len(), 1);
    // A crash after the create, before the status said so (and the backup finished
    // meanwhile): the slot's name exists, no second backup.
    store.lock().unwrap().objects.get_mut(&("etcdbackups".to_string(), made[0].clone())).unwrap()["status"] =
        json!({"phase": "Succeeded", "completionTime": "2026-11-23T00:00:00Z"});
    let mut lost = get::<EtcdBackupSchedule>(&store, "etcdbackupschedules", "nightly");
    lost.status = None;
    pass(&lost, &ctx).await.expect("pass");
    assert_eq!(names_of(&store, "etcdbackups").len(), 1, "a slot never runs twice");
}

#[tokio::test]
async fn retention_deletes_the_oldest_successes_beyond_keep_last() {
    let (client, store) = fake_api::client(vec![
        ("etcdclusters", "main", cluster()),
        ("etcdbackupschedules", "nightly", schedule("2099-01-01T00:00:00Z", 2)),
        ("etcdbackups", "nightly-1", made("nightly-1", "2026-11-20T00:00:00Z")),
        ("etcdbackups", "nightly-2", made("nightly-2", "2026-11-21T00:00:00Z")),
        ("etcdbackups", "nightly-3", made("nightly-3", "2026-11-22T00:00:00Z")),
    ]);
    let ctx = ctx(client);
    pass(&get(&store, "etcdbackupschedules", "nightly"), &ctx).await.expect("pass");
    assert_eq!(names_of(&store, "etcdbackups"), ["nightly-2", "nightly-3"], "the oldest pruned, no new slot due");
}

#[tokio::test]
async fn an_invalid_schedule_runs_nothing_and_says_why() {
    let mut s = schedule("2026-01-01T00:00:00Z", 2);
    s["spec"]["schedule"] = json!("61 * * * *");
    let (client, store) =
        fake_api::client(vec![("etcdclusters", "main", cluster()), ("etcdbackupschedules", "nightly", s)]);
    let ctx = ctx(client);
    pass(&get(&store, "etcdbackupschedules", "nightly"), &ctx).await.expect("pass");
    assert!(names_of(&store, "etcdbackups").is_empty());
    let s: EtcdBackupSchedule = get(&store, "etcdbackupschedules", "nightly");
    assert!(s.status.and_then(|s| s.error).unwrap_or_default().contains("is not a valid cron expression"));
    assert_eq!(names_of(&store, "events").len(), 1, "one Warning");
}
