//! Pass-level tests: whole passes (observe -> plan -> act -> status) against an
//! in-memory API server behind kube's mock service, so that a crash between two steps
//! is tested through `act` and the status write, not only through the pure planner.
//! No etcd is reached in these rows (no member answers), which is the state the
//! bootstrap and status-loss rows are about.

use std::sync::Arc;

use serde_json::{Value, json};

use super::*;
use crate::metrics::Metrics;
use crate::runtime::LeaseGuard;
use crate::runtime::Runtime;
use crate::runtime::fake_api::{self, NS, Shared, names_of};
use crate::runtime::runner::PassError;

fn harness(cluster: Value) -> (Arc<Context>, Shared) {
    let (client, store) = fake_api::client(vec![("etcdclusters", "main", cluster)]);
    let rt =
        Arc::new(Runtime::new(client, Arc::new(Metrics::default()), "test-replica".into(), LeaseGuard::unguarded()));
    let settings = Settings {
        etcd_image_repository: "etcd".into(),
        policy_v1: true,
        policy_v1beta1: false,
        cluster_domain: "cluster.local".into(),
        operator_image: "etcd-pilot:test".into(),
    };
    (Arc::new(Context::new(rt, settings)), store)
}

fn cluster(size: i32) -> Value {
    json!({
        "apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdCluster",
        "metadata": {"name": "main", "namespace": NS, "uid": "uid-main", "resourceVersion": "1", "generation": 1},
        "spec": {"size": size, "version": "3.4.23", "tls": {"mode": "Disabled"}},
    })
}

fn current(store: &Shared) -> EtcdCluster {
    serde_json::from_value(store.lock().unwrap().objects[&("etcdclusters".to_string(), "main".to_string())].clone())
        .unwrap()
}

fn pod_args(store: &Shared, name: &str) -> Vec<String> {
    let s = store.lock().unwrap();
    let pod = &s.objects[&("pods".to_string(), name.to_string())];
    serde_json::from_value(pod["spec"]["containers"][0]["args"].clone()).unwrap()
}

#[tokio::test]
async fn a_new_cluster_bootstraps_one_member_recorded_before_its_pod() {
    let (ctx, store) = harness(cluster(3));
    // The process "dies" creating main-0's pod.
    store.lock().unwrap().fail_create = Some(("pods".into(), "main-0".into()));
    let err = pass(&current(&store), &ctx).await.expect_err("the pass stopped at main-0");
    assert_eq!(err.step(), "act");
    let recorded = current(&store).annotations().get(crate::shared::names::BOOTSTRAP_ANNOTATION).cloned();
    assert_eq!(recorded.as_deref(), Some(r#"["main-0"]"#), "one member, recorded before its pod");
    assert!(names_of(&store, "pods").is_empty());

    // Meanwhile the user asks for 5: the recorded bootstrap is finished as it was begun,
    // one member; the others join later as learners, once etcd answers.
    store.lock().unwrap().fail_create = None;
    let mut ec = current(&store);
    ec.spec.size = 5;
    pass(&ec, &ctx).await.expect("next pass");
    assert_eq!(names_of(&store, "pods"), ["main-0"]);
    let args = pod_args(&store, "main-0");
    assert!(args.contains(&"--initial-cluster-state=new".to_string()), "{args:?}");
    assert!(
        args.iter().any(|a| a.starts_with("--initial-cluster=main-0=") && a.matches('=').count() == 2),
        "an initial cluster of main-0 alone: {args:?}"
    );
    assert_eq!(names_of(&store, "persistentvolumeclaims"), ["data-main-0"]);
}

#[tokio::test]
async fn a_bootstrap_of_several_recorded_by_an_earlier_version_is_finished_as_begun() {
    let mut c = cluster(3);
    c["metadata"]["annotations"] =
        json!({crate::shared::names::BOOTSTRAP_ANNOTATION: r#"["main-0","main-1","main-2"]"#});
    let (ctx, store) = harness(c);
    pass(&current(&store), &ctx).await.expect("pass");
    assert_eq!(names_of(&store, "pods"), ["main-0", "main-1", "main-2"]);
    for m in ["main-0", "main-1", "main-2"] {
        let args = pod_args(&store, m);
        assert!(args.contains(&"--initial-cluster-state=new".to_string()), "{args:?}");
        assert!(
            args.iter().any(|a| a.starts_with("--initial-cluster=main-0=") && a.matches('=').count() == 4),
            "the same three initial members: {args:?}"
        );
    }
}

#[tokio::test]
async fn status_lost_with_volumes_that_formed_a_cluster_never_bootstraps_again() {
    let (ctx, store) = harness(cluster(3));
    {
        let mut s = store.lock().unwrap();
        for m in ["main-0", "main-1", "main-2"] {
            s.objects.insert(
                ("persistentvolumeclaims".into(), format!("data-{m}")),
                json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
                       "metadata": {"name": format!("data-{m}"), "namespace": NS,
                                    "labels": {"etcdpilot.io/member": m},
                                    "annotations": {crate::shared::names::CLUSTER_ID_ANNOTATION: "abc", crate::shared::names::CLUSTER_UID_ANNOTATION: "uid-main"}}}),
            );
        }
    }
    // No status, no annotation on the EtcdCluster, no pod, no member answers.
    pass(&current(&store), &ctx).await.expect("pass");
    let pods = names_of(&store, "pods");
    assert_eq!(pods, ["main-0"], "one member brought back on its volume, nothing bootstrapped");
    let args = pod_args(&store, "main-0");
    assert!(args.contains(&"--initial-cluster-state=existing".to_string()), "{args:?}");
    // What the pass sent to the EtcdCluster itself: never a bootstrap record.
    let requests = store.lock().unwrap().requests.clone();
    let to_cluster: Vec<_> = requests
        .iter()
        .filter(|r| r.plural == "etcdclusters" && r.method != http::Method::GET && r.subresource.is_none())
        .collect();
    assert!(
        !to_cluster
            .iter()
            .any(|r| r.body["metadata"]["annotations"].get(crate::shared::names::BOOTSTRAP_ANNOTATION).is_some()),
        "{to_cluster:?}"
    );
    assert!(
        current(&store).annotations().get(crate::shared::names::BOOTSTRAP_ANNOTATION).is_none(),
        "no bootstrap recorded"
    );
}

#[tokio::test]
async fn member_pods_without_any_record_are_never_bootstrapped_beside() {
    let (ctx, store) = harness(cluster(1));
    store.lock().unwrap().objects.insert(
        ("persistentvolumeclaims".into(), "data-main-0".into()),
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": "data-main-0", "namespace": NS, "annotations": {crate::shared::names::CLUSTER_UID_ANNOTATION: "uid-main"}}}),
    );
    pass(&current(&store), &ctx).await.expect("pass");
    assert!(names_of(&store, "pods").is_empty(), "no pod started beside unexplained data");
    let ec = current(&store);
    let degraded = ec.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == status::DEGRADED)).cloned();
    assert_eq!(degraded.map(|c| c.reason), Some("Blocked".to_string()));
}

#[tokio::test]
async fn a_stale_view_is_fenced_by_the_operation_slot() {
    let (ctx, store) = harness(cluster(3));
    let ec = current(&store);
    // Another replica wrote since this one read (the object's resourceVersion moved).
    store.lock().unwrap().objects.get_mut(&("etcdclusters".to_string(), "main".to_string())).unwrap()["metadata"]["resourceVersion"] =
        json!("999");
    let step = Step::RemoveMember { id: 7, name: "main-2".into(), reason: "test".into() };
    // The fence reads the object afresh, so it is this read's version that must hold.
    let why = act::fence(&ec, &ctx, &step).await.expect("fence");
    assert_eq!(why, None, "a fresh read takes the slot");
    let op = operation::recorded(&current(&store)).expect("recorded");
    assert_eq!(
        (op.kind.as_str(), op.member.as_deref(), op.controller.as_str()),
        ("RemovingMember", Some("main-2"), CONTROLLER)
    );
    // The same step again (etcd said "not yet"): the record stands, the object is not
    // written, so no watch event starts a pass before the planned requeue.
    let version = current(&store).metadata.resource_version;
    assert_eq!(act::fence(&current(&store), &ctx, &step).await.expect("fence"), None, "still ours");
    assert_eq!(current(&store).metadata.resource_version, version, "not written again");
    assert_eq!(operation::recorded(&current(&store)), Some(op.clone()));
    // A write between the fresh read and the take (another replica): a conflict, no slot.
    let api: Api<EtcdCluster> = Api::namespaced(ctx.rt.client.clone(), NS);
    let stale = ec.clone();
    let mine = operation::Operation { holder: "other-replica".into(), ..op.clone() };
    let taken = operation::take(&api, &stale, &mine).await.expect("take");
    assert!(matches!(taken, operation::Taken::Lost(ref w) if w.contains("changed")), "{taken:?}");
    // A replica whose spec view is old does not act.
    let mut old = ec.clone();
    old.metadata.generation = Some(0);
    let why = act::fence(&old, &ctx, &step).await.expect("fence");
    assert!(why.is_some_and(|w| w.contains("spec changed")));
    // Another controller's operation: the slot is busy.
    let other = operation::Operation { controller: "restore".into(), kind: "Restore".into(), ..op };
    let text = serde_json::to_string(&other).unwrap();
    store.lock().unwrap().objects.get_mut(&("etcdclusters".to_string(), "main".to_string())).unwrap()["metadata"]["annotations"]
        [operation::ANNOTATION] = json!(text);
    let why = act::fence(&current(&store), &ctx, &step).await.expect("fence");
    assert!(why.is_some_and(|w| w.contains("restore Restore holds")));
    // ... and the planner stands down for it.
    pass(&current(&store), &ctx).await.expect("pass");
    let progressing =
        current(&store).status.and_then(|s| s.conditions.into_iter().find(|c| c.type_ == status::PROGRESSING));
    assert!(progressing.is_some_and(|c| c.message.contains("restore Restore is under way")));
}

/// A member claim of `size` in StorageClass `class`, with that capacity.
fn claim(member: &str, size: &str, class: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
           "metadata": {"name": format!("data-{member}"), "namespace": NS,
                        "labels": {"etcdpilot.io/member": member},
                        "annotations": {crate::shared::names::CLUSTER_UID_ANNOTATION: "uid-main"}},
           "spec": {"storageClassName": class, "resources": {"requests": {"storage": size}}},
           "status": {"phase": "Bound", "capacity": {"storage": size}}})
}

fn storage_condition(store: &Shared) -> (String, String, String) {
    let ec = current(store);
    let c = ec.status.unwrap().conditions.into_iter().find(|c| c.type_ == status::STORAGE_AT_SIZE).unwrap();
    (c.status, c.reason, c.message)
}

#[tokio::test]
async fn a_larger_storage_size_grows_the_claims_where_the_class_allows_it() {
    for (allow, grown, reason) in [(true, "8Gi", "Expanding"), (false, "4Gi", "ExpansionNotAllowed")] {
        let mut c = cluster(1);
        c["spec"]["storage"] = json!({"size": "8Gi"});
        let (ctx, store) = harness(c);
        {
            let mut s = store.lock().unwrap();
            s.objects.insert(("persistentvolumeclaims".into(), "data-main-0".into()), claim("main-0", "4Gi", "fast"));
            s.objects.insert(
                ("storageclasses".into(), "fast".into()),
                json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "fast"},
                       "provisioner": "x", "allowVolumeExpansion": allow}),
            );
        }
        pass(&current(&store), &ctx).await.expect("pass");
        let s =
            store.lock().unwrap().objects[&("persistentvolumeclaims".to_string(), "data-main-0".to_string())].clone();
        assert_eq!(s["spec"]["resources"]["requests"]["storage"], grown, "allowVolumeExpansion {allow}");
        let (status, r, msg) = storage_condition(&store);
        assert_eq!((status.as_str(), r.as_str()), ("False", reason), "{msg}");
        let requests = fake_api::request_lines(&store);
        assert!(requests.contains(&"GET storageclasses/fast".to_string()), "{requests:?}");
    }
}

#[tokio::test]
async fn claims_at_size_read_no_storage_class() {
    let mut c = cluster(1);
    c["spec"]["storage"] = json!({"size": "4096Mi"});
    let (ctx, store) = harness(c);
    store
        .lock()
        .unwrap()
        .objects
        .insert(("persistentvolumeclaims".into(), "data-main-0".into()), claim("main-0", "4Gi", "fast"));
    pass(&current(&store), &ctx).await.expect("pass");
    assert_eq!(storage_condition(&store).1, "AtSize");
    let requests = fake_api::request_lines(&store);
    assert!(!requests.iter().any(|r| r.contains("storageclasses")), "{requests:?}");
}

/// A volume marked for deletion whose member's pod is gone (a pass died between marking
/// and deleting it) is deleted by the next pass's upkeep, once: the pass after (as after a
/// crash right after the delete) finds nothing more to do. A volume set aside is kept.
#[tokio::test]
async fn a_volume_marked_for_deletion_is_swept_once_and_one_set_aside_is_kept() {
    use crate::shared::names::{REMOVED_ANNOTATION, REMOVED_TO_DELETE};
    let (ctx, store) = harness(cluster(1));
    let marked = |member: &str, how: &str| {
        let mut c = claim(member, "4Gi", "fast");
        c["metadata"]["annotations"][REMOVED_ANNOTATION] = json!(how);
        c
    };
    {
        let mut s = store.lock().unwrap();
        s.objects.insert(("persistentvolumeclaims".into(), "data-main-1".into()), marked("main-1", REMOVED_TO_DELETE));
        s.objects.insert(("persistentvolumeclaims".into(), "data-main-2".into()), marked("main-2", "retain"));
    }
    pass(&current(&store), &ctx).await.expect("pass");
    let deletes = |store: &Shared| -> Vec<String> {
        fake_api::request_lines(store).into_iter().filter(|r| r.starts_with("DELETE persistentvolumeclaims")).collect()
    };
    assert_eq!(deletes(&store), ["DELETE persistentvolumeclaims/data-main-1"]);
    let left = names_of(&store, "persistentvolumeclaims");
    assert!(left.contains(&"data-main-2".to_string()) && !left.contains(&"data-main-1".to_string()), "{left:?}");
    pass(&current(&store), &ctx).await.expect("the pass after");
    assert_eq!(deletes(&store).len(), 1, "nothing deleted twice");
}

fn secret_data(store: &Shared, name: &str, key: &str) -> Option<String> {
    let s = store.lock().unwrap();
    let v = s.objects.get(&("secrets".to_string(), name.to_string()))?;
    let b: k8s_openapi::ByteString = serde_json::from_value(v["data"].get(key)?.clone()).ok()?;
    String::from_utf8(b.0).ok()
}

fn secret_annotation(store: &Shared, name: &str, key: &str) -> Option<String> {
    let s = store.lock().unwrap();
    s.objects.get(&("secrets".to_string(), name.to_string()))?["metadata"]["annotations"][key]
        .as_str()
        .map(str::to_string)
}

fn event_reasons(store: &Shared) -> Vec<String> {
    let s = store.lock().unwrap();
    s.objects
        .iter()
        .filter(|((p, _), _)| p == "events")
        .filter_map(|(_, e)| e["reason"].as_str().map(str::to_string))
        .collect()
}

fn operator_tls_cluster() -> Value {
    let mut c = cluster(1);
    c["spec"]["tls"] = json!({});
    c
}

/// The CA rotation's first step is written ahead in the CA Secret: a pass that dies
/// before the leaves are re-trusted is resumed from it, with the same new CA.
#[tokio::test]
async fn a_ca_rotation_written_ahead_survives_a_crash_before_the_leaves() {
    use super::ca_rotation::{GENERATION_ANNOTATION, PHASE_ANNOTATION, TRUST_ANNOTATION, fingerprint};
    let (ctx, store) = harness(operator_tls_cluster());
    pass(&current(&store), &ctx).await.expect("bootstrap pass");
    assert_eq!(names_of(&store, "pods"), ["main-0"]);
    let ca0 = secret_data(&store, "main-ca", "tls.crt").expect("CA made");
    let trust0 = store.lock().unwrap().objects[&("pods".to_string(), "main-0".to_string())]["metadata"]["annotations"]
        [TRUST_ANNOTATION]
        .as_str()
        .map(str::to_string);
    assert_eq!(trust0, Some(fingerprint(&ca0)), "a new member records the CAs it trusts");

    let mut ec = current(&store);
    ec.spec.tls.ca_generation = 1;
    store.lock().unwrap().fail_create = Some(("secrets".into(), "main-peer-tls".into()));
    let err = pass(&ec, &ctx).await.expect_err("dies writing the first leaf");
    assert_eq!(err.step(), "objects");
    assert_eq!(secret_annotation(&store, "main-ca", PHASE_ANNOTATION).as_deref(), Some("TrustBoth"));
    assert_eq!(secret_annotation(&store, "main-ca", GENERATION_ANNOTATION).as_deref(), Some("1"));
    assert_eq!(secret_data(&store, "main-ca", "tls.crt"), Some(ca0.clone()), "the old CA still signs");
    let next = secret_data(&store, "main-ca", "next.crt").expect("the new CA, written ahead");
    assert_eq!(secret_data(&store, "main-peer-tls", "ca.crt"), Some(ca0.clone()), "not reached");

    let mut ec = current(&store);
    ec.spec.tls.ca_generation = 1;
    pass(&ec, &ctx).await.expect("the next pass resumes");
    assert_eq!(secret_data(&store, "main-ca", "next.crt"), Some(next.clone()), "no second new CA");
    for leaf in ["main-peer-tls", "main-server-tls", "main-client-tls"] {
        let trusted = secret_data(&store, leaf, "ca.crt").unwrap();
        assert!(trusted.contains(ca0.trim_end()) && trusted.contains(next.trim_end()), "{leaf} trusts both");
    }
    assert_eq!(event_reasons(&store).iter().filter(|r| *r == "CARotation").count(), 1);
    let ec = current(&store);
    let c = ec.status.unwrap().conditions.into_iter().find(|c| c.type_ == status::CERTIFICATES_READY).unwrap();
    assert_eq!(c.reason, "Rotating");
    assert!(c.message.contains("(1/3)"), "{}", c.message);
}

/// A CA rotation's step that finds the CA Secret changed since it was read is not made,
/// and neither is anything planned after it: no leaf, no step; the next pass reads again.
#[tokio::test]
async fn a_ca_secret_changed_since_read_stops_the_pass_at_the_rotation_step() {
    use super::ca_rotation::PHASE_ANNOTATION;
    let (ctx, store) = harness(operator_tls_cluster());
    pass(&current(&store), &ctx).await.expect("bootstrap pass");
    let ca0 = secret_data(&store, "main-ca", "tls.crt").expect("CA made");
    let mut ec = current(&store);
    ec.spec.tls.ca_generation = 1;
    let before = store.lock().unwrap().requests.len();
    store.lock().unwrap().conflict_once = Some(("secrets".into(), "main-ca".into()));
    pass(&ec, &ctx).await.expect("a conflict is not a failure");
    assert_eq!(secret_annotation(&store, "main-ca", PHASE_ANNOTATION), None, "the step was not made");
    assert_eq!(secret_data(&store, "main-peer-tls", "ca.crt"), Some(ca0.clone()), "no leaf re-trusted");
    let writes: Vec<String> = store.lock().unwrap().requests[before..]
        .iter()
        .filter(|r| r.method != http::Method::GET)
        .map(|r| r.to_string())
        .collect();
    assert_eq!(writes, ["PUT secrets/main-ca", "PATCH etcdclusters/main"], "the refused CA write, then the status");
    let c = current(&store).status.unwrap().conditions.into_iter().find(|c| c.type_ == status::CERTIFICATES_READY);
    assert!(c.unwrap().message.contains("changed since it was read"));

    // The next pass reads the CA Secret again and makes the step.
    let mut ec = current(&store);
    ec.spec.tls.ca_generation = 1;
    pass(&ec, &ctx).await.expect("pass");
    assert_eq!(secret_annotation(&store, "main-ca", PHASE_ANNOTATION).as_deref(), Some("TrustBoth"));
}

/// A CA another cluster shares is not rotated: a Warning and a condition, nothing written.
#[tokio::test]
async fn a_shared_ca_is_not_rotated() {
    use super::ca_rotation::PHASE_ANNOTATION;
    let (ctx, store) = harness(operator_tls_cluster());
    pass(&current(&store), &ctx).await.expect("bootstrap pass");
    let mut events_cluster = operator_tls_cluster();
    events_cluster["metadata"]["name"] = json!("events");
    events_cluster["spec"]["tls"] = json!({"caFrom": {"cluster": "main"}});
    store.lock().unwrap().objects.insert(("etcdclusters".into(), "events".into()), events_cluster);
    let ca0 = secret_data(&store, "main-ca", "tls.crt");
    let mut ec = current(&store);
    ec.spec.tls.ca_generation = 1;
    pass(&ec, &ctx).await.expect("pass");
    assert_eq!(secret_data(&store, "main-ca", "tls.crt"), ca0);
    assert_eq!(secret_data(&store, "main-ca", "next.crt"), None);
    assert_eq!(secret_annotation(&store, "main-ca", PHASE_ANNOTATION), None);
    assert!(event_reasons(&store).contains(&"CARotationRefused".to_string()));
    let c = current(&store).status.unwrap().conditions.into_iter().find(|c| c.type_ == status::CERTIFICATES_READY);
    let c = c.unwrap();
    assert_eq!(c.reason, "RotationRefused");
    assert!(c.message.contains("events"), "{}", c.message);
}

/// The exact writes of a new cluster's first pass, in order, with what each carries.
#[tokio::test]
async fn a_new_clusters_first_pass_sends_exactly_these_writes() {
    let (ctx, store) = harness(cluster(3));
    pass(&current(&store), &ctx).await.expect("first pass");
    let writes: Vec<fake_api::Recorded> =
        store.lock().unwrap().requests.iter().filter(|r| r.method != http::Method::GET).cloned().collect();
    let lines: Vec<String> = writes
        .iter()
        .map(|r| format!("{r}{}", r.subresource.as_ref().map(|s| format!("/{s}")).unwrap_or_default()))
        .collect();
    assert_eq!(lines, WANT_FIRST_PASS, "{lines:#?}");
    let body = |line: &str| &writes[lines.iter().position(|l| l == line).expect(line)].body;
    let record = body("PATCH etcdclusters/main");
    assert_eq!(
        record["metadata"]["annotations"][crate::shared::names::BOOTSTRAP_ANNOTATION],
        json!(r#"["main-0"]"#),
        "the bootstrap is recorded, one member, before its first object"
    );
    assert_eq!(record["metadata"]["resourceVersion"], json!("1"), "against the version it read");
    let pod = body("POST pods");
    assert_eq!(pod["metadata"]["name"], json!("main-0"));
    let args: Vec<String> = serde_json::from_value(pod["spec"]["containers"][0]["args"].clone()).unwrap();
    assert!(args.contains(&"--initial-cluster-state=new".to_string()), "{args:?}");
    let pvc = body("POST persistentvolumeclaims");
    assert_eq!(pvc["metadata"]["name"], json!("data-main-0"));
    assert_eq!(pvc["metadata"]["annotations"][crate::shared::names::CLUSTER_UID_ANNOTATION], json!("uid-main"));
    let reasons: Vec<&Value> = writes.iter().filter(|r| r.plural == "events").map(|r| &r.body["reason"]).collect();
    assert_eq!(
        reasons,
        [&json!("Bootstrapping"), &json!("EndOfLife")],
        "the bootstrap, and etcd 3.4 past its end of life"
    );
    let status = body("PATCH etcdclusters/main/status");
    let reconciled = status["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Reconciled");
    assert_eq!(reconciled.map(|c| c["status"].clone()), Some(json!("True")));
}

/// The fixed objects, the bootstrap record, the first member's volume and pod, Events
/// (the bootstrap, etcd 3.4 past its end of life), the status.
const WANT_FIRST_PASS: &[&str] = &[
    "PATCH services/main-peers",
    "PATCH services/main-client",
    "PATCH poddisruptionbudgets/main",
    "PATCH etcdclusters/main",
    "POST persistentvolumeclaims",
    "POST pods",
    "POST events",
    "POST events",
    "PATCH etcdclusters/main/status",
];

/// A pass that fails says so in the status: `Reconciled=False` with its step and what it
/// failed on; the next pass that succeeds sets it back.
#[tokio::test]
async fn a_failed_pass_is_reported_in_the_status() {
    let (ctx, store) = harness(cluster(1));
    store.lock().unwrap().fail_create = Some(("pods".into(), "main-0".into()));
    reconcile(Arc::new(current(&store)), ctx.clone()).await.expect_err("the pass fails creating main-0's pod");
    let reconciled = |store: &Shared| {
        current(store).status.unwrap_or_default().conditions.into_iter().find(|c| c.type_ == status::RECONCILED)
    };
    let c = reconciled(&store).expect("reported");
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "KubernetesError"));
    assert!(c.message.starts_with("act: create pod main-0"), "{}", c.message);
    // The same failure again is not written again (its watch event would skip the backoff).
    let writes = |store: &Shared| {
        store.lock().unwrap().requests.iter().filter(|r| r.subresource.as_deref() == Some("status")).count()
    };
    for _ in 0..2 {
        store.lock().unwrap().fail_create = Some(("pods".into(), "main-0".into()));
        reconcile(Arc::new(current(&store)), ctx.clone()).await.expect_err("fails the same way");
    }
    let before = writes(&store);
    store.lock().unwrap().fail_create = Some(("pods".into(), "main-0".into()));
    reconcile(Arc::new(current(&store)), ctx.clone()).await.expect_err("fails the same way");
    assert_eq!(writes(&store), before, "the same failure is not written again");
    assert_eq!(reconciled(&store).map(|c| c.status), Some("False".to_string()), "still reported");
    reconcile(Arc::new(current(&store)), ctx).await.expect("the next pass succeeds");
    assert_eq!(reconciled(&store).map(|c| c.status), Some("True".to_string()));
}
