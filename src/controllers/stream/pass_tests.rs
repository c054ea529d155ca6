//! Pass-level tests of the stream controller against the in-memory API server: a base
//! taken at once (owned, labelled, never twice), the stream registered; nothing for a
//! schedule without `continuous`; a schedule with no target blocked with a reason; a
//! suspended one keeps its window; status written under this controller's field manager
//! only.

use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::metrics::Metrics;
use crate::runtime::LeaseGuard;
use crate::runtime::fake_api::{self, NS, get, names_of, status_writes};

fn cluster(backup: bool) -> Value {
    // A store nothing listens on: the stream task only retries in the background.
    let target = json!({"bucket": "bkt", "endpoint": "http://127.0.0.1:9"});
    let mut c = json!({"apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdCluster",
           "metadata": {"name": "main", "namespace": NS, "uid": "uid-main"},
           "spec": {"size": 1, "version": "3.5.30"}});
    if backup {
        c["spec"]["backup"] = target;
    }
    c
}

fn schedule(continuous: Value) -> Value {
    json!({"apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdBackupSchedule",
           "metadata": {"name": "every-6h", "namespace": NS, "uid": "uid-s", "creationTimestamp": "2026-12-07T00:00:00Z"},
           "spec": {"clusterName": "main", "schedule": "0 */6 * * *", "continuous": continuous}})
}

fn ctx(client: kube::Client) -> Arc<Context> {
    let rt =
        Arc::new(Runtime::new(client, Arc::new(Metrics::default()), "test-replica".into(), LeaseGuard::unguarded()));
    Arc::new(Context::new(rt))
}

#[tokio::test]
async fn a_streaming_schedule_without_a_base_takes_one_at_once_and_only_once() {
    let (client, store) = fake_api::client(vec![
        ("etcdclusters", "main", cluster(true)),
        ("etcdbackupschedules", "every-6h", schedule(json!({"enabled": true, "flushSeconds": 2}))),
    ]);
    let ctx = ctx(client);
    pass(&get(&store, "etcdbackupschedules", "every-6h"), &ctx).await.expect("pass");
    let made = names_of(&store, "etcdbackups");
    assert_eq!(made.len(), 1, "{made:?}");
    assert!(made[0].starts_with("every-6h-base-"), "{made:?}");
    let b: EtcdBackup = get(&store, "etcdbackups", &made[0]);
    assert_eq!(b.owner_references()[0].uid, "uid-s");
    assert_eq!(b.labels().get(SCHEDULE_LABEL).map(String::as_str), Some("every-6h"));
    assert!(ctx.streams().contains_key(&(NS.to_string(), "every-6h".to_string())), "the stream runs");
    let s: EtcdBackupSchedule = get(&store, "etcdbackupschedules", "every-6h");
    assert!(s.status.as_ref().and_then(|s| s.continuous.as_ref()).is_some(), "{:?}", s.status);
    let applied = status_writes(&store, "etcdbackupschedules");
    assert!(
        !applied.is_empty() && applied.iter().all(|l| l.ends_with("by etcd-pilot-stream")),
        "its own field manager: {applied:?}"
    );
    // The base runs (a crash right after creating it looks the same): no second one.
    pass(&s, &ctx).await.expect("pass");
    assert_eq!(names_of(&store, "etcdbackups").len(), 1);
    ctx.stop_all_but(&[]).await;
}

#[tokio::test]
async fn a_schedule_without_continuous_streams_nothing() {
    let mut s = schedule(json!(null));
    s["spec"].as_object_mut().unwrap().remove("continuous");
    let (client, store) =
        fake_api::client(vec![("etcdclusters", "main", cluster(true)), ("etcdbackupschedules", "every-6h", s)]);
    let ctx = ctx(client);
    pass(&get(&store, "etcdbackupschedules", "every-6h"), &ctx).await.expect("pass");
    assert!(names_of(&store, "etcdbackups").is_empty());
    assert!(ctx.streams().is_empty());
    let s: EtcdBackupSchedule = get(&store, "etcdbackupschedules", "every-6h");
    assert!(s.status.and_then(|s| s.continuous).is_none());
}

#[tokio::test]
async fn no_target_blocks_the_stream_with_a_reason() {
    let (client, store) = fake_api::client(vec![
        ("etcdclusters", "main", cluster(false)),
        ("etcdbackupschedules", "every-6h", schedule(json!({"enabled": true}))),
    ]);
    let ctx = ctx(client);
    pass(&get(&store, "etcdbackupschedules", "every-6h"), &ctx).await.expect("pass");
    assert!(names_of(&store, "etcdbackups").is_empty(), "no base without a place for it");
    assert!(ctx.streams().is_empty());
    let s: EtcdBackupSchedule = get(&store, "etcdbackupschedules", "every-6h");
    let c = s.status.and_then(|s| s.continuous).expect("status.continuous");
    assert_eq!(c.state.as_deref(), Some("Blocked"));
    assert!(c.message.unwrap_or_default().contains("no target"));
}

#[tokio::test]
async fn a_suspended_stream_keeps_its_window() {
    let mut s = schedule(json!({"enabled": true}));
    s["spec"]["suspend"] = json!(true);
    s["status"] = json!({"continuous": {"state": "Streaming", "lastRevision": 450, "lagSeconds": 1,
                                        "windowStart": {"revision": 100}, "windowEnd": {"revision": 450}}});
    let (client, store) =
        fake_api::client(vec![("etcdclusters", "main", cluster(true)), ("etcdbackupschedules", "every-6h", s)]);
    let ctx = ctx(client);
    pass(&get(&store, "etcdbackupschedules", "every-6h"), &ctx).await.expect("pass");
    assert!(ctx.streams().is_empty());
    let s: EtcdBackupSchedule = get(&store, "etcdbackupschedules", "every-6h");
    let c = s.status.and_then(|s| s.continuous).expect("status.continuous");
    assert_eq!(c.state.as_deref(), Some("Suspended"));
    assert_eq!((c.window_start.map(|w| w.revision), c.window_end.map(|w| w.revision)), (Some(100), Some(450)));
    assert_eq!(c.lag_seconds, None);
}
