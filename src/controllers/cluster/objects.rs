//! Act, for what a pass writes before its step: the [`Upkeep`] writes that `upkeep`
//! planned (certificate Secrets and the CA rotation's step, Services, the disruption
//! budget, the volumes' bookkeeping, the recorded cluster id), made in order.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use super::context::{Context, FIELD_MANAGER, Key};
use super::error::{self, Error};
use super::tls::CertState;
use super::upkeep::{BudgetApi, Upkeep};
use crate::api::EtcdCluster;
use crate::runtime::events::{EventType, publish};
use crate::runtime::kube_ops::{apply, delete_if_present, is_conflict};
use crate::shared::names::CLUSTER_ID_ANNOTATION;

/// What making a pass's upkeep came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Made {
    /// Every write made.
    All,
    /// Stopped at a CA rotation's step, which was not made (the CA Secret changed since
    /// it was read, or the Lease is not held): why, and the certificates' state. Neither
    /// the writes planned after it nor the pass's step are made; the next pass reads again.
    Stopped { why: String, certificates: CertState },
}

/// Makes `writes` in order; a failed write fails the pass, a CA rotation's step not
/// made stops it (see [`Made::Stopped`]).
pub async fn make(ec: &EtcdCluster, ctx: &Context, key: &Key, writes: &[Upkeep]) -> Result<Made, Error> {
    let ns = key.0.as_str();
    let client = ctx.rt.client.clone();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    for write in writes {
        match write {
            Upkeep::RotateCa { secret, note } => {
                let name = secret.name_any();
                if !ctx.rt.lease.holds_fresh(&client).await.map_err(Error::Lease)? {
                    let why = "not holding the leader-election Lease".to_string();
                    return Ok(Made::Stopped { why: why.clone(), certificates: CertState::Rotating(why) });
                }
                // replace() carries the resourceVersion read: a write by anyone since is a conflict.
                match secrets.replace(&name, &PostParams::default(), secret).await {
                    Ok(_) => {}
                    Err(e) if is_conflict(&e) => {
                        let why = format!("the CA Secret {name} changed since it was read");
                        return Ok(Made::Stopped { why: why.clone(), certificates: CertState::Rotating(why) });
                    }
                    Err(e) => return Err(error::act_kube(format!("write the CA Secret {name}"))(e)),
                }
                if let Some(note) = note {
                    publish(&ctx.rt, ec, EventType::Normal, "CARotation", note).await;
                }
            }
            Upkeep::IssueSecret { secret, reason } => {
                let name = secret.name_any();
                apply(&secrets, FIELD_MANAGER, secret).await.map_err(error::objects(format!("write Secret {name}")))?;
                publish(&ctx.rt, ec, EventType::Normal, "CertificateIssued", reason).await;
            }
            Upkeep::ApplyFixed { services, budget, api, digest } => {
                apply_fixed(ec, ctx, key, services, budget, *api).await?;
                ctx.with_memory(key, |m| m.fixed_applied = Some((digest.clone(), std::time::Instant::now())));
            }
            Upkeep::OwnVolume { name, owners } => {
                let patch = json!({"metadata": {"ownerReferences": owners}});
                pvcs.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(error::objects(format!("set the owner of PVC {name}")))?;
            }
            Upkeep::SweepVolume { name, uid } => {
                delete_if_present(&pvcs, name, uid.clone())
                    .await
                    .map_err(error::objects(format!("delete PVC {name} of a removed member")))?;
            }
            Upkeep::GrowVolume { name, size } => {
                let patch = json!({"spec": {"resources": {"requests": {"storage": size}}}});
                pvcs.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(error::objects(format!("grow PVC {name} to {size}")))?;
                let note = format!("growing volume {name} to {size} (spec.storage.size)");
                publish(&ctx.rt, ec, EventType::Normal, "ExpandingVolume", &note).await;
            }
            Upkeep::RecordClusterId { id, on_cluster, volumes } => {
                record_cluster_id(ec, ctx, &pvcs, id, *on_cluster, volumes).await?;
            }
        }
    }
    Ok(Made::All)
}

/// The Services, and the budget where this Kubernetes serves one.
async fn apply_fixed(
    ec: &EtcdCluster,
    ctx: &Context,
    key: &Key,
    services: &[Service],
    budget: &PodDisruptionBudget,
    api: BudgetApi,
) -> Result<(), Error> {
    let ns = key.0.as_str();
    let services_api: Api<Service> = Api::namespaced(ctx.rt.client.clone(), ns);
    for svc in services {
        let name = svc.name_any();
        apply(&services_api, FIELD_MANAGER, svc).await.map_err(error::objects(format!("apply Service {name}")))?;
    }
    match api {
        BudgetApi::V1 => {
            let pdbs: Api<PodDisruptionBudget> = Api::namespaced(ctx.rt.client.clone(), ns);
            apply(&pdbs, FIELD_MANAGER, budget).await.map_err(error::objects("apply PodDisruptionBudget"))?;
        }
        BudgetApi::V1beta1 => apply_pdb_v1beta1(ctx, ns, budget).await?,
        BudgetApi::None if !ctx.with_memory(key, |m| std::mem::replace(&mut m.warned_no_pdb, true)) => {
            publish(
                &ctx.rt,
                ec,
                EventType::Warning,
                "NoPodDisruptionBudget",
                "this Kubernetes serves neither policy/v1 nor policy/v1beta1: no PodDisruptionBudget guards the members against voluntary evictions",
            )
            .await;
        }
        BudgetApi::None => {}
    }
    Ok(())
}

/// The PodDisruptionBudget on Kubernetes before 1.21 (`policy/v1beta1`, same fields).
async fn apply_pdb_v1beta1(ctx: &Context, ns: &str, pdb: &PodDisruptionBudget) -> Result<(), Error> {
    let mut value = serde_json::to_value(pdb).map_err(|e| Error::Objects {
        what: "encode PodDisruptionBudget".into(),
        source: kube::Error::SerdeError(e),
    })?;
    value["apiVersion"] = json!("policy/v1beta1");
    value["kind"] = json!("PodDisruptionBudget");
    let gvk = kube::api::GroupVersionKind::gvk("policy", "v1beta1", "PodDisruptionBudget");
    let ar = kube::api::ApiResource::from_gvk_with_plural(&gvk, "poddisruptionbudgets");
    let api: Api<kube::api::DynamicObject> = Api::namespaced_with(ctx.rt.client.clone(), ns, &ar);
    let obj: kube::api::DynamicObject = serde_json::from_value(value).map_err(|e| Error::Objects {
        what: "encode PodDisruptionBudget".into(),
        source: kube::Error::SerdeError(e),
    })?;
    api.patch(&pdb.name_any(), &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&obj))
        .await
        .map_err(error::objects("apply PodDisruptionBudget (policy/v1beta1)"))?;
    Ok(())
}

/// Records the etcd cluster id on the EtcdCluster and on member volumes: durable
/// evidence that the cluster formed, which no status loss can erase. A volume gone
/// meanwhile is skipped.
async fn record_cluster_id(
    ec: &EtcdCluster,
    ctx: &Context,
    pvcs: &Api<PersistentVolumeClaim>,
    id: &str,
    on_cluster: bool,
    volumes: &[String],
) -> Result<(), Error> {
    let patch = json!({"metadata": {"annotations": {CLUSTER_ID_ANNOTATION: id}}});
    if on_cluster {
        let api: Api<EtcdCluster> = Api::namespaced(ctx.rt.client.clone(), &ec.namespace().unwrap_or_default());
        api.patch(&ec.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(error::record("record the cluster id on the EtcdCluster"))?;
    }
    for name in volumes {
        match pvcs.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(error::record(format!("record the cluster id on PVC {name}"))(e)),
        }
    }
    Ok(())
}
