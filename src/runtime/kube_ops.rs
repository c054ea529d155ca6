//! Server-side apply, create-if-absent and delete-if-present: the writes every
//! controller makes, each under the caller's field manager.

use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Server-side apply of `obj` (forced: the controller owns these fields).
pub async fn apply<K>(api: &Api<K>, manager: &str, obj: &K) -> Result<K, kube::Error>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    api.patch(&obj.name_any(), &PatchParams::apply(manager).force(), &Patch::Apply(obj)).await
}

/// Server-side apply of a status: only the fields in `status`, under `manager`, so
/// controllers sharing a status never undo each other's fields.
pub async fn apply_status<K>(
    api: &Api<K>,
    manager: &str,
    name: &str,
    status: serde_json::Value,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(name, &PatchParams::apply(manager).force(), &Patch::Apply(&patch)).await.map(|_| ())
}

/// Creates `obj` unless an object of its name exists. Returns whether it created it.
pub async fn create_if_absent<K>(api: &Api<K>, manager: &str, obj: &K) -> Result<bool, kube::Error>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    let pp = PostParams { field_manager: Some(manager.into()), ..PostParams::default() };
    match api.create(&pp, obj).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Deletes `name` if it exists; with `uid`, only that very object (a newer object of the
/// same name is left alone).
pub async fn delete_if_present<K>(api: &Api<K>, name: &str, uid: Option<String>) -> Result<(), kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let dp = DeleteParams {
        preconditions: uid.map(|uid| Preconditions { uid: Some(uid), resource_version: None }),
        ..DeleteParams::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Sets one annotation, provided the object is still at the `resourceVersion` it was
/// read at (optimistic concurrency). Returns false when it changed meanwhile.
pub async fn annotate_if_unchanged<K>(api: &Api<K>, read: &K, key: &str, value: &str) -> Result<bool, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let patch = serde_json::json!({"metadata": {
        "resourceVersion": read.resource_version(),
        "annotations": {key: value},
    }});
    match api.patch(&read.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => Ok(true),
        Err(e) if is_conflict(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A 409 Conflict: an optimistic-concurrency precondition failed.
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}
