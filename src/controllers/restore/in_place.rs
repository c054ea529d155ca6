//! The IO of an in-place restore: the survivor's snapshot, the members stopped under
//! the cluster's operation slot, the cluster told to start again from the snapshot.

use std::collections::HashMap;

use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use super::Error;
use crate::api::{EtcdCluster, EtcdRestore, S3Target};
use crate::metrics::ClusterLabels;
use crate::runtime::kube_ops::delete_if_present;
use crate::runtime::operation::{self, Operation, Slot, Taken};
use crate::runtime::s3;
use crate::seed::{self, SeedSource};
use crate::shared::names::REMOVED_ANNOTATION;
use crate::shared::names::{BOOTSTRAP_ANNOTATION, Names};
use crate::shared::snapshot::{Candidate, Failure, snapshot_to_store, stamp};

/// How long the slot is held past its last refresh while members are stopped.
const SLOT_SECS: i64 = 600;

pub enum Stopped {
    Done(String),
    NotYet(String),
}

fn act(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Act { what, source }
}

/// Snapshots the surviving member into the cluster's target. Ok: (`s3://bucket/key`,
/// what was done). Err: (why, permanent).
pub async fn snapshot_survivor(
    r: &EtcdRestore,
    ctx: &super::Context,
    ns: &str,
    ec: &EtcdCluster,
    target: &S3Target,
) -> Result<(String, String), Failure> {
    let member = r.spec.source.member.clone().unwrap_or_default();
    let names = Names::of(ec);
    let store = s3::open(&ctx.rt.client, ns, target).await?;
    let config = crate::shared::secrets::etcd_config(&ctx.rt.client, ec, None)
        .await
        .map_err(|e| Failure::transient(e.to_string()))?;
    let key =
        store.backup_key(ns, &ec.name_any(), &stamp(jiff::Timestamp::now()), &format!("{}-{member}", r.name_any()));
    let candidate = Candidate { name: member.clone(), endpoint: names.client_url(&member), leader: false };
    let labels = HashMap::from([
        ("namespace".to_string(), ns.to_string()),
        ("cluster".to_string(), ec.name_any()),
        ("restore".to_string(), r.name_any()),
    ]);
    let metric = ClusterLabels { namespace: ns.into(), cluster: ec.name_any() };
    let taken = snapshot_to_store(&candidate, config, &store, &key, labels, &ctx.rt.metrics, &metric).await?;
    let object = format!("s3://{}/{key}", store.bucket());
    let message = format!(
        "surviving member {member} at revision {}: {} bytes, sha256 {}, staged as {object}",
        taken.revision, taken.uploaded.size, taken.uploaded.sha256
    );
    Ok((object, message))
}

/// Takes (or keeps) the operation slot, stops every member pod and sets every member
/// volume aside: kept, never reused, never deleted by etcd-pilot (the old data stays
/// until the user deletes the volumes).
pub async fn stop_members(
    r: &EtcdRestore,
    ctx: &super::Context,
    ns: &str,
    ec: &EtcdCluster,
    holder: &str,
) -> Result<Stopped, Error> {
    let clusters: Api<EtcdCluster> = Api::namespaced(ctx.rt.client.clone(), ns);
    let Some(fresh) = clusters.get_opt(&ec.name_any()).await.map_err(act("read the EtcdCluster"))? else {
        return Ok(Stopped::NotYet("the EtcdCluster is gone".into()));
    };
    let now = jiff::Timestamp::now();
    let op = Operation {
        kind: "Restore".into(),
        member: None,
        controller: holder.to_string(),
        holder: ctx.rt.instance.clone(),
        since: now,
        expires: now + jiff::SignedDuration::from_secs(SLOT_SECS),
    };
    match operation::decide(operation::recorded(&fresh).as_ref(), holder, now) {
        Slot::Busy(other) => {
            return Ok(Stopped::NotYet(format!(
                "waiting for the cluster's operation slot ({} {})",
                other.controller, other.kind
            )));
        }
        Slot::Free => match operation::take(&clusters, &fresh, &op).await.map_err(act("take the operation slot"))? {
            Taken::Yes => {}
            Taken::Lost(why) => return Ok(Stopped::NotYet(why)),
        },
        Slot::Ours => {
            operation::refresh(&clusters, &fresh, &op).await.map_err(act("keep the operation slot"))?;
        }
    }
    let cluster = ec.name_any();
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(ctx.rt.client.clone(), ns);
    let pvcs: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> = Api::namespaced(ctx.rt.client.clone(), ns);
    let uid = fresh.uid();
    let member_pods: Vec<_> = pods
        .list(&ListParams::default().labels(&format!(
            "app.kubernetes.io/name=etcd,app.kubernetes.io/instance={cluster},app.kubernetes.io/component=member"
        )))
        .await
        .map_err(act("list member pods"))?
        .items
        .into_iter()
        .filter(|p| p.owner_references().iter().any(|o| Some(&o.uid) == uid.as_ref()))
        .collect();
    for p in member_pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
        delete_if_present(&pods, &p.name_any(), p.uid())
            .await
            .map_err(act(format!("stop member pod {}", p.name_any())))?;
    }
    let volumes = pvcs
        .list(
            &ListParams::default().labels(&format!(
                "app.kubernetes.io/name=etcd,app.kubernetes.io/instance={cluster},etcdpilot.io/member"
            )),
        )
        .await
        .map_err(act("list member volumes"))?
        .items;
    let mark = format!("replaced-by-restore/{}", r.name_any());
    let mut set_aside = Vec::new();
    for v in &volumes {
        if v.annotations().contains_key(REMOVED_ANNOTATION) {
            continue;
        }
        let patch = json!({"metadata": {"annotations": {REMOVED_ANNOTATION: mark}}});
        pvcs.patch(&v.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(act(format!("set volume {} aside", v.name_any())))?;
        set_aside.push(v.name_any());
    }
    if !member_pods.is_empty() {
        let names: Vec<String> = member_pods.iter().map(ResourceExt::name_any).collect();
        return Ok(Stopped::NotYet(format!("waiting for member pods {} to stop", names.join(", "))));
    }
    let aside: Vec<String> = volumes
        .iter()
        .filter(|v| v.annotations().get(REMOVED_ANNOTATION).is_none_or(|m| *m == mark))
        .map(ResourceExt::name_any)
        .collect();
    Ok(Stopped::Done(format!(
        "every member stopped; volumes {} kept aside (annotated {REMOVED_ANNOTATION}), never reused: delete them once the restore is good",
        if aside.is_empty() { "none".to_string() } else { aside.join(", ") }
    )))
}

/// Voids the old cluster's records and has the cluster bootstrap new members seeded
/// from the snapshot; then gives the slot back to the cluster controller.
pub async fn replace_data(
    ctx: &super::Context,
    ns: &str,
    ec: &EtcdCluster,
    mut source: SeedSource,
    holder: &str,
) -> Result<String, Error> {
    let clusters: Api<EtcdCluster> = Api::namespaced(ctx.rt.client.clone(), ns);
    let Some(fresh) = clusters.get_opt(&ec.name_any()).await.map_err(act("read the EtcdCluster"))? else {
        return Ok("the EtcdCluster is gone".into());
    };
    // The id of the cluster replaced, kept from a previous attempt of this restore.
    let previous = SeedSource::from_cluster(&fresh).filter(|s| s.restore == source.restore);
    source.replaces = match previous {
        Some(p) => p.replaces,
        None => fresh
            .annotations()
            .get(crate::shared::names::CLUSTER_ID_ANNOTATION)
            .cloned()
            .or_else(|| fresh.status.as_ref().and_then(|s| s.cluster_id.clone())),
    };
    let patch = json!({"metadata": {"annotations": {
        seed::ANNOTATION: serde_json::to_string(&source).unwrap_or_default(),
        BOOTSTRAP_ANNOTATION: null,
    }}});
    let patched = clusters
        .patch(&fresh.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(act("record the restore on the EtcdCluster"))?;
    operation::release(&clusters, &patched, holder).await.map_err(act("release the operation slot"))?;
    Ok(format!(
        "the cluster starts {} new members seeded from s3://{}/{} (replacing cluster {})",
        fresh.spec.size,
        source.bucket,
        source.key,
        source.replaces.clone().unwrap_or_else(|| "of unknown id".into())
    ))
}
