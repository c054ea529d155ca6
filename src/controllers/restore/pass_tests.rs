//! Pass-level tests of an in-place restore: restore passes and cluster passes in turn
//! against the in-memory API server, through a crash between writing the new records
//! and recording the step. S3 and etcd are not reached: the restore starts with its
//! source snapshotted and verified, as its earlier steps would have left it.

use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::controllers::cluster::{self};
use crate::metrics::Metrics;
use crate::runtime::LeaseGuard;
use crate::runtime::fake_api::{self, NS, Shared, get, names_of};

fn member_labels(m: &str) -> Value {
    json!({"app.kubernetes.io/name": "etcd", "app.kubernetes.io/instance": "main",
           "app.kubernetes.io/component": "member", "etcdpilot.io/member": m})
}

/// A formed 3-member cluster that lost main-1 and main-2 with their volumes: main-0's
/// pod and volume remain.
fn world() -> Vec<(&'static str, &'static str, Value)> {
    let owner =
        json!([{"apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdCluster", "name": "main", "uid": "uid-main"}]);
    vec![
        (
            "etcdclusters",
            "main",
            json!({
                "apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdCluster",
                "metadata": {"name": "main", "namespace": NS, "uid": "uid-main", "resourceVersion": "1", "generation": 1,
                             "annotations": {crate::shared::names::BOOTSTRAP_ANNOTATION: r#"["main-0","main-1","main-2"]"#,
                                             crate::shared::names::CLUSTER_ID_ANNOTATION: "aaa"}},
                "spec": {"size": 3, "version": "3.4.23", "tls": {"mode": "Disabled"},
                         "backup": {"bucket": "bkt", "endpoint": "http://s3:9000"}},
                "status": {"clusterId": "aaa", "highestOrdinal": 2, "conditions": [
                    {"type": "Available", "status": "False", "reason": "NoQuorum", "message": "1 of 3",
                     "lastTransitionTime": "2026-11-23T00:00:00Z"}]},
            }),
        ),
        (
            "pods",
            "main-0",
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "main-0", "namespace": NS, "uid": "uid-pod-0", "labels": member_labels("main-0"),
                                "ownerReferences": owner}}),
        ),
        (
            "persistentvolumeclaims",
            "data-main-0",
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                   "metadata": {"name": "data-main-0", "namespace": NS, "labels": member_labels("main-0"),
                                "annotations": {crate::shared::names::CLUSTER_ID_ANNOTATION: "aaa", crate::shared::names::CLUSTER_UID_ANNOTATION: "uid-main"}}}),
        ),
        (
            "etcdrestores",
            "r1",
            json!({
                "apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdRestore",
                "metadata": {"name": "r1", "namespace": NS, "uid": "uid-r1", "resourceVersion": "1"},
                "spec": {"source": {"member": "main-0"}, "mode": "InPlace", "clusterName": "main"},
                "status": {"phase": "Running", "sourceObject": "s3://bkt/prod/main/x-r1-main-0.db",
                           "sourceSha256": "abc", "sourceRevision": 100, "restoredRevision": 2000100,
                           "steps": [{"name": plan::SURVIVOR, "phase": "Succeeded"}, {"name": plan::VERIFIED, "phase": "Succeeded"}]},
            }),
        ),
    ]
}

fn contexts(client: kube::Client) -> (Arc<Context>, Arc<cluster::Context>) {
    let rt =
        Arc::new(Runtime::new(client, Arc::new(Metrics::default()), "test-replica".into(), LeaseGuard::unguarded()));
    let settings = cluster::Settings {
        etcd_image_repository: "etcd".into(),
        policy_v1: true,
        policy_v1beta1: false,
        cluster_domain: "cluster.local".into(),
        operator_image: "etcd-pilot:test".into(),
    };
    (Arc::new(Context { rt: rt.clone() }), Arc::new(cluster::Context::new(rt, settings)))
}

fn steps(store: &Shared) -> Vec<String> {
    let r: EtcdRestore = get(store, "etcdrestores", "r1");
    r.status.map(|s| s.steps.into_iter().map(|s| s.name).collect()).unwrap_or_default()
}

#[tokio::test]
async fn an_in_place_restore_stops_the_members_and_the_cluster_bootstraps_seeded_ones() {
    let (client, store) = fake_api::client(world());
    let (ctx, cluster_ctx) = contexts(client);

    // The restore takes the slot, stops main-0 and sets its volume aside.
    pass(&get(&store, "etcdrestores", "r1"), &ctx).await.expect("restore pass");
    let ec: EtcdCluster = get(&store, "etcdclusters", "main");
    let op = operation::recorded(&ec).expect("the slot is taken");
    assert_eq!((op.controller.as_str(), op.kind.as_str()), ("restore/r1", "Restore"));
    assert!(names_of(&store, "pods").is_empty(), "main-0 stopped");
    let pvc: k8s_openapi::api::core::v1::PersistentVolumeClaim = get(&store, "persistentvolumeclaims", "data-main-0");
    assert_eq!(
        pvc.metadata.annotations.unwrap_or_default().get(crate::shared::names::REMOVED_ANNOTATION).map(String::as_str),
        Some("replaced-by-restore/r1"),
        "set aside, kept"
    );

    // Meanwhile the cluster controller stands down: nothing recreated on the volume.
    cluster::reconcile(Arc::new(get(&store, "etcdclusters", "main")), cluster_ctx.clone()).await.expect("cluster pass");
    assert!(names_of(&store, "pods").is_empty(), "the planner stood down");

    // Members gone: the step is recorded; then the data is replaced and the slot given back.
    pass(&get(&store, "etcdrestores", "r1"), &ctx).await.expect("restore pass");
    assert_eq!(steps(&store), [plan::SURVIVOR, plan::VERIFIED, plan::STOPPED]);
    let before_replace: EtcdRestore = get(&store, "etcdrestores", "r1");
    pass(&before_replace, &ctx).await.expect("restore pass");
    let ec: EtcdCluster = get(&store, "etcdclusters", "main");
    let seed = SeedSource::from_cluster(&ec).expect("seed annotation");
    assert_eq!((seed.restore.as_str(), seed.replaces.as_deref(), seed.bump_revision), ("r1", Some("aaa"), 2_000_000));
    assert_eq!(seed.key, "prod/main/x-r1-main-0.db");
    assert!(
        !ec.annotations().contains_key(crate::shared::names::BOOTSTRAP_ANNOTATION),
        "the old bootstrap record is gone"
    );
    assert_eq!(operation::recorded(&ec), None, "the slot is given back");

    // A crash after those writes, before the step was recorded: the next pass replaces
    // again, keeping the id of the cluster replaced.
    let mut replayed = before_replace.clone();
    replayed.metadata.resource_version = None;
    pass(&replayed, &ctx).await.expect("replayed pass");
    let seed = SeedSource::from_cluster(&get::<EtcdCluster>(&store, "etcdclusters", "main")).expect("seed");
    assert_eq!(seed.replaces.as_deref(), Some("aaa"));
    assert_eq!(steps(&store), [plan::SURVIVOR, plan::VERIFIED, plan::STOPPED, plan::REPLACED]);

    // The cluster controller bootstraps one new member seeded from the snapshot (the
    // others join it as learners once it answers, taking its data from it).
    cluster::reconcile(Arc::new(get(&store, "etcdclusters", "main")), cluster_ctx).await.expect("cluster pass");
    assert_eq!(names_of(&store, "pods"), ["main-3"], "a new ordinal");
    {
        let pod: k8s_openapi::api::core::v1::Pod = get(&store, "pods", "main-3");
        let spec = pod.spec.expect("spec");
        let init = spec.init_containers.expect("init containers");
        assert_eq!(init[0].name, "seed");
        let env = init[0].env.clone().unwrap_or_default();
        let source =
            env.iter().find(|e| e.name == "ETCD_PILOT_SEED_SOURCE").and_then(|e| e.value.clone()).expect("source");
        assert!(source.contains("\"bumpRevision\":2000000"), "{source}");
        let args = spec.containers[0].args.clone().unwrap_or_default();
        assert!(args.contains(&"--initial-cluster-state=new".to_string()), "{args:?}");
        assert!(args.iter().any(|a| a.starts_with("--initial-cluster=main-3=")), "{args:?}");
    }
    // Not Available yet (no member answers): the restore waits.
    pass(&get(&store, "etcdrestores", "r1"), &ctx).await.expect("restore pass");
    let r: EtcdRestore = get(&store, "etcdrestores", "r1");
    assert_eq!(r.status.map(|s| s.phase), Some(Phase::Running));
}

#[tokio::test]
async fn an_in_place_restore_of_a_cluster_with_quorum_is_refused_and_touches_nothing() {
    let mut objects = world();
    objects[0].2["status"]["conditions"][0]["status"] = json!("True");
    let (client, store) = fake_api::client(objects);
    let (ctx, _) = contexts(client);
    pass(&get(&store, "etcdrestores", "r1"), &ctx).await.expect("restore pass");
    let r: EtcdRestore = get(&store, "etcdrestores", "r1");
    let s = r.status.expect("status");
    assert_eq!(s.phase, Phase::Failed);
    assert!(s.error.unwrap_or_default().contains("the cluster has quorum"));
    assert_eq!(names_of(&store, "pods"), ["main-0"]);
    assert_eq!(operation::recorded(&get::<EtcdCluster>(&store, "etcdclusters", "main")), None);
    let requests = fake_api::request_lines(&store);
    assert!(!requests.iter().any(|r| r.starts_with("DELETE") || r.starts_with("PATCH etcdclusters")), "{requests:?}");
}
