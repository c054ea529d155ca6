//! Pass-level tests: whole passes (observe -> plan -> act -> status) against an
//! in-memory API server behind kube's mock service, so that a crash between two steps
//! is tested through `act` and the status write, not only through the pure planner.
//! No etcd is reached in these rows (no member answers), which is the state the
//! bootstrap and status-loss rows are about.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock;

use super::*;
use crate::metrics::Metrics;
use crate::runtime::LeaseGuard;

const NS: &str = "prod";

/// Objects by (plural, name); what was asked, in order; a path whose next create fails
/// (the process "dies" there).
#[derive(Default)]
struct Store {
    objects: BTreeMap<(String, String), Value>,
    requests: Vec<String>,
    fail_create: Option<(String, String)>,
    rv: u64,
}

type Shared = Arc<Mutex<Store>>;

fn response(code: u16, body: Value) -> Response<Body> {
    Response::builder().status(code).body(Body::from(serde_json::to_vec(&body).unwrap())).unwrap()
}

fn status(code: u16, reason: &str) -> Response<Body> {
    response(code, json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code}))
}

/// `(plural, name, subresource)` of a namespaced path.
fn parse(path: &str) -> (String, Option<String>, Option<String>) {
    let parts: Vec<&str> = path.split('/').collect();
    let at = parts.iter().position(|p| *p == "namespaces").map_or(parts.len(), |i| i + 2);
    (
        parts.get(at).unwrap_or(&"").to_string(),
        parts.get(at + 1).map(|s| s.to_string()),
        parts.get(at + 2).map(|s| s.to_string()),
    )
}

async fn serve(mut handle: mock::Handle<Request<Body>, Response<Body>>, store: Shared) {
    while let Some((req, send)) = handle.next_request().await {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let body = req.into_body().collect_bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let (plural, name, sub) = parse(&path);
        let mut s = store.lock().unwrap();
        s.requests.push(format!("{method} {plural}{}", name.as_ref().map(|n| format!("/{n}")).unwrap_or_default()));
        s.rv += 1;
        let rv = s.rv.to_string();
        let resp = match (method, name) {
            (Method::GET, None) => {
                let items: Vec<Value> =
                    s.objects.iter().filter(|((p, _), _)| *p == plural).map(|(_, v)| v.clone()).collect();
                response(
                    200,
                    json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": rv}, "items": items}),
                )
            }
            (Method::GET, Some(n)) => match s.objects.get(&(plural, n)) {
                Some(v) => response(200, v.clone()),
                None => status(404, "NotFound"),
            },
            (Method::POST, None) => {
                let mut obj = body;
                let n = obj["metadata"]["name"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{}{rv}", obj["metadata"]["generateName"].as_str().unwrap_or("x")));
                if s.fail_create.as_ref() == Some(&(plural.clone(), n.clone())) {
                    s.fail_create = None;
                    status(500, "InternalError")
                } else if s.objects.contains_key(&(plural.clone(), n.clone())) {
                    status(409, "AlreadyExists")
                } else {
                    obj["metadata"]["name"] = json!(n);
                    obj["metadata"]["uid"] = json!(format!("uid-{n}"));
                    obj["metadata"]["resourceVersion"] = json!(rv);
                    obj["metadata"]["creationTimestamp"] = json!("2026-11-23T00:00:00Z");
                    s.objects.insert((plural, n), obj.clone());
                    response(201, obj)
                }
            }
            (Method::DELETE, Some(n)) => match s.objects.remove(&(plural, n)) {
                Some(v) => response(200, v),
                None => status(404, "NotFound"),
            },
            (Method::PATCH, Some(n)) => {
                let key = (plural.clone(), n.clone());
                let existing = s.objects.get(&key).cloned();
                match (existing, sub.as_deref()) {
                    // A status apply: the status replaces the stored one.
                    (Some(mut obj), Some("status")) => {
                        obj["status"] = body["status"].clone();
                        obj["metadata"]["resourceVersion"] = json!(rv);
                        s.objects.insert(key, obj.clone());
                        response(200, obj)
                    }
                    (Some(mut obj), _) => {
                        let want_rv = body["metadata"]["resourceVersion"].as_str().map(str::to_string);
                        if want_rv.is_some()
                            && want_rv.as_ref()
                                != obj["metadata"]["resourceVersion"].as_str().map(|s| s.to_string()).as_ref()
                        {
                            status(409, "Conflict")
                        } else if body.is_array() {
                            // A JSON patch (the slot's test + remove): applied as asked.
                            let patch: json_patch::Patch = serde_json::from_value(body).unwrap();
                            match json_patch::patch(&mut obj, &patch) {
                                Ok(()) => {
                                    obj["metadata"]["resourceVersion"] = json!(rv);
                                    s.objects.insert(key, obj.clone());
                                    response(200, obj)
                                }
                                Err(_) => status(422, "Invalid"),
                            }
                        } else {
                            let mut patch = body;
                            if let Some(m) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
                                m.remove("resourceVersion");
                            }
                            json_patch::merge(&mut obj, &patch);
                            obj["metadata"]["resourceVersion"] = json!(rv);
                            s.objects.insert(key, obj.clone());
                            response(200, obj)
                        }
                    }
                    // Server-side apply of an object that does not exist yet creates it.
                    (None, _) => {
                        let mut obj = body;
                        obj["metadata"]["resourceVersion"] = json!(rv);
                        s.objects.insert(key, obj.clone());
                        response(200, obj)
                    }
                }
            }
            _ => status(405, "MethodNotAllowed"),
        };
        drop(s);
        send.send_response(resp);
    }
}

fn harness(cluster: Value) -> (Arc<Context>, Shared) {
    let store: Shared = Arc::default();
    store.lock().unwrap().objects.insert(("etcdclusters".into(), "main".into()), cluster);
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(serve(handle, store.clone()));
    let client = Client::new(svc, NS);
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

fn names_of(store: &Shared, plural: &str) -> Vec<String> {
    store.lock().unwrap().objects.keys().filter(|(p, _)| p == plural).map(|(_, n)| n.clone()).collect()
}

fn pod_args(store: &Shared, name: &str) -> Vec<String> {
    let s = store.lock().unwrap();
    let pod = &s.objects[&("pods".to_string(), name.to_string())];
    serde_json::from_value(pod["spec"]["containers"][0]["args"].clone()).unwrap()
}

#[tokio::test]
async fn a_crash_in_the_middle_of_a_bootstrap_is_finished_with_the_recorded_members() {
    let (ctx, store) = harness(cluster(3));
    // The process "dies" creating main-1's pod: main-0 exists, main-1 and main-2 do not.
    store.lock().unwrap().fail_create = Some(("pods".into(), "main-1".into()));
    let err = pass(&current(&store), &ctx).await.expect_err("the pass stopped at main-1");
    assert_eq!(err.step(), "act");
    let recorded = current(&store).annotations().get(build::BOOTSTRAP_ANNOTATION).cloned();
    assert_eq!(recorded.as_deref(), Some(r#"["main-0","main-1","main-2"]"#), "recorded before the first pod");
    assert_eq!(names_of(&store, "pods"), ["main-0"]);

    // Meanwhile the user asks for 5: the recorded bootstrap is finished as it was begun.
    let mut ec = current(&store);
    ec.spec.size = 5;
    pass(&ec, &ctx).await.expect("next pass");
    assert_eq!(names_of(&store, "pods"), ["main-0", "main-1", "main-2"]);
    for m in ["main-1", "main-2"] {
        let args = pod_args(&store, m);
        assert!(args.contains(&"--initial-cluster-state=new".to_string()), "{args:?}");
        assert!(
            args.iter().any(|a| a.starts_with("--initial-cluster=main-0=") && a.matches('=').count() == 4),
            "the same three initial members: {args:?}"
        );
    }
    assert_eq!(names_of(&store, "persistentvolumeclaims"), ["data-main-0", "data-main-1", "data-main-2"]);
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
                                    "annotations": {build::CLUSTER_ID_ANNOTATION: "abc", build::CLUSTER_UID_ANNOTATION: "uid-main"}}}),
            );
        }
    }
    // No status, no annotation on the EtcdCluster, no pod, no member answers.
    pass(&current(&store), &ctx).await.expect("pass");
    let pods = names_of(&store, "pods");
    assert_eq!(pods, ["main-0"], "one member brought back on its volume, nothing bootstrapped");
    let args = pod_args(&store, "main-0");
    assert!(args.contains(&"--initial-cluster-state=existing".to_string()), "{args:?}");
    let requests = store.lock().unwrap().requests.clone();
    assert!(
        !requests.iter().any(|r| r.starts_with("PATCH etcdclusters/main") && r.contains("bootstrap")),
        "{requests:?}"
    );
    assert!(current(&store).annotations().get(build::BOOTSTRAP_ANNOTATION).is_none(), "no bootstrap recorded");
}

#[tokio::test]
async fn member_pods_without_any_record_are_never_bootstrapped_beside() {
    let (ctx, store) = harness(cluster(1));
    store.lock().unwrap().objects.insert(
        ("persistentvolumeclaims".into(), "data-main-0".into()),
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": "data-main-0", "namespace": NS, "annotations": {build::CLUSTER_UID_ANNOTATION: "uid-main"}}}),
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
