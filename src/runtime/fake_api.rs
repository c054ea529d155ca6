//! An in-memory API server behind kube's mock service, for pass-level tests of every
//! controller: objects by (plural, name), creates, deletes, merge / JSON / apply patches
//! with resourceVersion preconditions, status patches, and a create that fails once (the
//! process "dies" there). Only for unit tests of logic.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use serde_json::{Value, json};
use tower_test::mock;

/// The namespace of every test object.
pub const NS: &str = "prod";

/// One request as the server received it: what tests assert on, body included.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    pub plural: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// The field manager a write named (`?fieldManager=`).
    pub field_manager: Option<String>,
    /// The request body (`null` when it had none).
    pub body: Value,
}

impl std::fmt::Display for Recorded {
    /// `METHOD plural[/name]`, e.g. `PATCH etcdclusters/main`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.plural)?;
        match &self.name {
            Some(n) => write!(f, "/{n}"),
            None => Ok(()),
        }
    }
}

/// Objects by (plural, name); what was asked, in order, with bodies; an object whose
/// next write (create, patch or replace) fails (the process "dies" there).
#[derive(Default)]
pub struct Store {
    pub objects: BTreeMap<(String, String), Value>,
    pub requests: Vec<Recorded>,
    pub fail_create: Option<(String, String)>,
    /// An object whose next write (patch or replace) is refused with a conflict, as when
    /// someone else wrote it since it was read.
    pub conflict_once: Option<(String, String)>,
    rv: u64,
}

pub type Shared = Arc<Mutex<Store>>;

fn response(code: u16, body: Value) -> Response<Body> {
    Response::builder().status(code).body(Body::from(serde_json::to_vec(&body).unwrap())).unwrap()
}

fn status(code: u16, reason: &str) -> Response<Body> {
    response(code, json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code}))
}

/// `(plural, name, subresource)` of a namespaced or cluster-scoped path.
fn parse(path: &str) -> (String, Option<String>, Option<String>) {
    let parts: Vec<&str> = path.split('/').collect();
    // `/api/v1/<plural>` or `/apis/<group>/<version>/<plural>` when cluster-scoped.
    let cluster_scoped = if parts.get(1) == Some(&"api") { 3 } else { 4 };
    let at = parts.iter().position(|p| *p == "namespaces").map_or(cluster_scoped, |i| i + 2);
    (
        parts.get(at).unwrap_or(&"").to_string(),
        parts.get(at + 1).map(|s| s.to_string()),
        parts.get(at + 2).map(|s| s.to_string()),
    )
}

pub async fn serve(mut handle: mock::Handle<Request<Body>, Response<Body>>, store: Shared) {
    while let Some((req, send)) = handle.next_request().await {
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let field_manager = req
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .find_map(|kv| kv.strip_prefix("fieldManager="))
            .map(str::to_string);
        let body = req.into_body().collect_bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let (plural, name, sub) = parse(&path);
        let mut s = store.lock().unwrap();
        s.requests.push(Recorded {
            method: method.clone(),
            plural: plural.clone(),
            name: name.clone(),
            subresource: sub.clone(),
            field_manager,
            body: body.clone(),
        });
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
            (Method::PATCH | Method::PUT, Some(n)) if s.fail_create.as_ref() == Some(&(plural.clone(), n.clone())) => {
                s.fail_create = None;
                status(500, "InternalError")
            }
            (Method::PATCH | Method::PUT, Some(n))
                if s.conflict_once.as_ref() == Some(&(plural.clone(), n.clone())) =>
            {
                s.conflict_once = None;
                status(409, "Conflict")
            }
            // A replace: only over the resourceVersion it carries.
            (Method::PUT, Some(n)) => {
                let key = (plural.clone(), n.clone());
                let stored = s.objects.get(&key).map(|o| o["metadata"]["resourceVersion"].clone());
                match stored {
                    None => status(404, "NotFound"),
                    Some(v) if v != body["metadata"]["resourceVersion"] => status(409, "Conflict"),
                    Some(_) => {
                        let mut obj = body;
                        obj["metadata"]["resourceVersion"] = json!(rv);
                        s.objects.insert(key, obj.clone());
                        response(200, obj)
                    }
                }
            }
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

/// A client of a fresh in-memory API server holding `objects` (plural, name, object).
pub fn client(objects: Vec<(&str, &str, Value)>) -> (Client, Shared) {
    let store: Shared = Arc::default();
    for (plural, name, obj) in objects {
        store.lock().unwrap().objects.insert((plural.into(), name.into()), obj);
    }
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(serve(handle, store.clone()));
    (Client::new(svc, NS), store)
}

/// An object of the store, typed.
pub fn get<K: serde::de::DeserializeOwned>(store: &Shared, plural: &str, name: &str) -> K {
    serde_json::from_value(store.lock().unwrap().objects[&(plural.to_string(), name.to_string())].clone()).unwrap()
}

/// The requests received so far, as `METHOD plural[/name]` lines.
pub fn request_lines(store: &Shared) -> Vec<String> {
    store.lock().unwrap().requests.iter().map(ToString::to_string).collect()
}

/// The status writes to objects of a kind, as `name by manager` lines.
pub fn status_writes(store: &Shared, plural: &str) -> Vec<String> {
    let s = store.lock().unwrap();
    s.requests
        .iter()
        .filter(|r| r.plural == plural && r.subresource.as_deref() == Some("status") && r.method != Method::GET)
        .map(|r| format!("{} by {}", r.name.as_deref().unwrap_or(""), r.field_manager.as_deref().unwrap_or("nobody")))
        .collect()
}

/// Names of the stored objects of a kind.
pub fn names_of(store: &Shared, plural: &str) -> Vec<String> {
    store.lock().unwrap().objects.keys().filter(|(p, _)| p == plural).map(|(_, n)| n.clone()).collect()
}
