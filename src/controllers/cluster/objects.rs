//! The cluster's fixed objects (certificate Secrets and CA rotation, Services, the
//! disruption budget) and its volumes' bookkeeping (owners, sweeps, growth, the
//! recorded cluster id): written before the plan, every pass that may act.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use super::build;
use super::ca_rotation;
use super::context::{Context, FIELD_MANAGER, Key};
use super::error::{self, Error};
use super::tls;
use crate::api::EtcdCluster;
use crate::api::cluster::{TlsMode, Topology};
use crate::runtime::events::{EventType, publish};
use crate::runtime::kube_ops::{apply, delete_if_present, is_conflict};
use crate::shared::names::{CLUSTER_ID_ANNOTATION, Names, REMOVED_ANNOTATION, REMOVED_TO_DELETE};

/// What [`ensure_fixed_objects`] found and did about certificates.
#[derive(Clone, Debug, Default)]
pub struct Fixed {
    pub certificates: tls::CertState,
    /// The client Secret as read, when this pass wrote no Secret: the admin's TLS
    /// material without reading it a second time.
    pub client_secret: Option<Secret>,
    /// Fingerprint of the CAs members trust now (recorded on new pods), and whether a
    /// CA rotation asks every member to run with exactly those.
    pub trust: Option<(String, bool)>,
    /// When each certificate expires (Unix seconds), operator-issued TLS only.
    pub expiries: Vec<(&'static str, i64)>,
}

/// The addresses (`InternalIP`) of the control-plane nodes, where Stacked members serve
/// and their certificates must be valid.
async fn control_plane_addresses(ctx: &Context) -> Result<Vec<String>, Error> {
    use k8s_openapi::api::core::v1::Node;
    let nodes: Api<Node> = Api::all(ctx.rt.client.clone());
    let lp = kube::api::ListParams::default().labels(crate::shared::names::CONTROL_PLANE_LABEL);
    let list = nodes.list(&lp).await.map_err(error::observe("list control-plane nodes"))?;
    Ok(internal_addresses(&list.items))
}

/// Every `InternalIP` of these nodes.
pub fn internal_addresses(nodes: &[k8s_openapi::api::core::v1::Node]) -> Vec<String> {
    nodes
        .iter()
        .flat_map(|n| n.status.iter().flat_map(|s| s.addresses.iter().flatten()))
        .filter(|a| a.type_ == "InternalIP")
        .map(|a| a.address.clone())
        .collect()
}

/// Certificates, Services and the PodDisruptionBudget: objects whose content follows
/// from the spec alone, and the CA rotation's steps. A lost CA leaves the cluster
/// serving (reported in [`Fixed::certificates`]).
pub async fn ensure_fixed_objects(
    ec: &EtcdCluster,
    ctx: &Context,
    key: &Key,
    pods: &[Pod],
    members_exist: bool,
) -> Result<Fixed, Error> {
    let ns = key.0.as_str();
    let client = ctx.rt.client.clone();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut fixed = Fixed::default();
    if ec.spec.tls.mode == TlsMode::Operator {
        let mut existing = BTreeMap::new();
        let names = crate::shared::secrets::secret_names(ec).into_iter().flat_map(|s| [s.peer, s.server, s.client]);
        for name in names.chain([crate::shared::secrets::ca_secret_of(ec)]) {
            if let Some(s) = secrets.get_opt(&name).await.map_err(error::observe(format!("read Secret {name}")))? {
                existing.insert(name, s);
            }
        }
        if let Some(why) = tls::ca_lost(ec, &existing, members_exist) {
            fixed.certificates = tls::CertState::Lost(why);
        } else if members_exist && let Some(auth) = tls::authority(ec, &existing) {
            fixed.certificates = rotate_ca(ec, ctx, &secrets, &mut existing, &auth, pods).await?;
        }
        let now = time::OffsetDateTime::now_utc();
        let nodes = match ec.spec.topology {
            Topology::Stacked => control_plane_addresses(ctx).await?,
            Topology::External => Vec::new(),
        };
        let writes = tls::operator_secrets(ec, &existing, now, &ctx.settings.cluster_domain, members_exist, &nodes)?;
        if writes.is_empty() {
            fixed.client_secret =
                crate::shared::secrets::secret_names(ec).and_then(|n| existing.get(&n.client).cloned());
        }
        for w in writes {
            let name = w.secret.name_any();
            apply(&secrets, FIELD_MANAGER, &w.secret).await.map_err(error::objects(format!("write Secret {name}")))?;
            publish(&ctx.rt, ec, EventType::Normal, "CertificateIssued", &w.reason).await;
            existing.insert(name, w.secret);
        }
        fixed.expiries = tls::expiries(ec, &existing);
        fixed.trust =
            tls::authority(ec, &existing).map(|a| (a.trust_fingerprint(), a.phase != ca_rotation::Phase::Stable));
    }
    // Services and the budget follow from the spec alone and nothing else writes them:
    // applied when they change, and again every REAPPLY_FIXED_AFTER (a deleted one comes
    // back within that), not on every idle pass.
    let wanted = [build::peer_service(ec), build::client_service(ec)];
    let digest = fixed_digest(&wanted, &build::pod_disruption_budget(ec));
    let fresh = ctx.with_memory(key, |m| {
        m.fixed_applied.as_ref().is_some_and(|(d, at)| *d == digest && at.elapsed() < REAPPLY_FIXED_AFTER)
    });
    if fresh {
        return Ok(fixed);
    }
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    for svc in wanted {
        let name = svc.name_any();
        apply(&services, FIELD_MANAGER, &svc).await.map_err(error::objects(format!("apply Service {name}")))?;
    }
    if ctx.settings.policy_v1 {
        let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client, ns);
        apply(&pdbs, FIELD_MANAGER, &build::pod_disruption_budget(ec))
            .await
            .map_err(error::objects("apply PodDisruptionBudget"))?;
    } else if ctx.settings.policy_v1beta1 {
        apply_pdb_v1beta1(ec, ctx, ns).await?;
    } else if !ctx.with_memory(key, |m| std::mem::replace(&mut m.warned_no_pdb, true)) {
        publish(
            &ctx.rt,
            ec,
            EventType::Warning,
            "NoPodDisruptionBudget",
            "this Kubernetes serves neither policy/v1 nor policy/v1beta1: no PodDisruptionBudget guards the members against voluntary evictions",
        )
        .await;
    }
    ctx.with_memory(key, |m| m.fixed_applied = Some((digest, std::time::Instant::now())));
    Ok(fixed)
}

/// How long Services and the disruption budget, unchanged, go without being applied again.
const REAPPLY_FIXED_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// What the applied Services and budget were built from.
fn fixed_digest(services: &[Service], pdb: &PodDisruptionBudget) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for s in services {
        h.update(serde_json::to_vec(s).unwrap_or_default());
    }
    h.update(serde_json::to_vec(pdb).unwrap_or_default());
    hex::encode(h.finalize())
}

/// One step of a CA rotation (see [`ca_rotation`]), when one is asked for or under
/// way: the CA Secret is the whole state, written with a precondition on what was read
/// and only while the Lease is held; `existing` is updated for the leaves that follow.
async fn rotate_ca(
    ec: &EtcdCluster,
    ctx: &Context,
    secrets: &Api<Secret>,
    existing: &mut BTreeMap<String, Secret>,
    auth: &ca_rotation::Authority,
    pods: &[Pod],
) -> Result<tls::CertState, Error> {
    use ca_rotation::{Rotation, TRUST_ANNOTATION};
    let idle = auth.phase == ca_rotation::Phase::Stable && ec.spec.tls.ca_generation <= auth.generation;
    if idle {
        return Ok(tls::CertState::Ready { generation: auth.generation });
    }
    let trusts: Vec<ca_rotation::PodTrust> = pods
        .iter()
        .map(|p| ca_rotation::PodTrust {
            name: p.name_any(),
            trust: p.annotations().get(TRUST_ANNOTATION).cloned(),
            ready: super::observe::pod_ready(p),
            terminating: p.metadata.deletion_timestamp.is_some(),
        })
        .collect();
    let size = usize::try_from(ec.spec.size).unwrap_or(0);
    let refused = match auth.phase {
        ca_rotation::Phase::Stable => rotation_refused(ec, ctx).await?,
        _ => None,
    };
    let checked = match auth.checked_ca() {
        Some(ca) if ca_rotation::needs_check(auth, &trusts, size) => Some(check_members(ec, auth, ca, &trusts).await),
        _ => None,
    };
    let step = ca_rotation::next(
        auth,
        &ca_rotation::Inputs { requested: ec.spec.tls.ca_generation, refused, pods: &trusts, size, checked },
    );
    let state = match &step {
        Rotation::None => return Ok(tls::CertState::Ready { generation: auth.generation }),
        Rotation::Wait(why) => return Ok(tls::CertState::Rotating(why.clone())),
        Rotation::Refused(why) => return Ok(tls::CertState::RotationRefused(why.clone())),
        Rotation::Start { generation } => {
            let n = Names::of(ec);
            ca_rotation::apply(auth, &step, Some(tls::new_ca(&n, *generation)?))
        }
        _ => ca_rotation::apply(auth, &step, None),
    };
    let Some(state) = state else { return Ok(tls::CertState::Ready { generation: auth.generation }) };
    let name = crate::shared::secrets::ca_secret_of(ec);
    let Some(read) = existing.get(&name) else { return Ok(tls::CertState::Ready { generation: auth.generation }) };
    if !ctx.rt.lease.holds_fresh(&ctx.rt.client).await.map_err(Error::Lease)? {
        return Ok(tls::CertState::Rotating("not holding the leader-election Lease".into()));
    }
    // replace() carries the resourceVersion read: a write by anyone since is a conflict.
    let written = match secrets.replace(&name, &PostParams::default(), &state.to_secret(read)).await {
        Ok(s) => s,
        Err(e) if is_conflict(&e) => {
            return Ok(tls::CertState::Rotating(format!("the CA Secret {name} changed since it was read")));
        }
        Err(e) => return Err(error::act_kube(format!("write the CA Secret {name}"))(e)),
    };
    if let Some(note) = ca_rotation::describe(&step, state.generation) {
        publish(&ctx.rt, ec, EventType::Normal, "CARotation", &note).await;
    }
    existing.insert(name, written);
    Ok(match state.phase {
        ca_rotation::Phase::Stable => tls::CertState::Ready { generation: state.generation },
        _ => tls::CertState::Rotating(ca_rotation::describe(&step, state.generation).unwrap_or_default()),
    })
}

/// Why this cluster's CA may not rotate now, if so: kube-apiserver (wired) and other
/// clusters (sharing the CA) load it only at start, and etcd-pilot cannot restart them
/// between the phases.
async fn rotation_refused(ec: &EtcdCluster, ctx: &Context) -> Result<Option<String>, Error> {
    if let Some(from) = &ec.spec.tls.ca_from {
        return Ok(Some(format!(
            "spec.tls.caGeneration: the CA belongs to EtcdCluster {} (spec.tls.caFrom); rotating a shared CA is not supported: its clusters and kube-apiserver would have to restart between the phases",
            from.cluster
        )));
    }
    if ec.spec.api_server.is_some() {
        return Ok(Some("spec.tls.caGeneration: kube-apiserver is wired to this cluster (spec.apiServer) and loads its etcd CA only at start; a rotation would need it restarted between the phases, which etcd-pilot cannot do: not supported".into()));
    }
    let api: Api<EtcdCluster> = Api::namespaced(ctx.rt.client.clone(), &ec.namespace().unwrap_or_default());
    let all = api.list(&Default::default()).await.map_err(error::observe("list EtcdClusters"))?;
    let me = ec.name_any();
    let sharing: Vec<String> = all
        .items
        .iter()
        .filter(|c| c.spec.tls.ca_from.as_ref().is_some_and(|f| f.cluster == me))
        .map(|c| c.name_any())
        .collect();
    Ok((!sharing.is_empty()).then(|| {
        format!(
            "spec.tls.caGeneration: EtcdCluster {} shares this CA (spec.tls.caFrom); rotating a shared CA is not supported: those clusters would have to restart between the phases",
            sharing.join(", ")
        )
    }))
}

/// Every member, on its client and its peer port, serves a certificate the phase's
/// roots accept and accepts a client certificate of `ca` (phase 1: of the new CA, while
/// the old signs; phase 2: only the new CA's, both ways).
async fn check_members(
    ec: &EtcdCluster,
    auth: &ca_rotation::Authority,
    ca: &crate::pki::CertPair,
    pods: &[ca_rotation::PodTrust],
) -> Result<(), String> {
    let roots = match auth.phase {
        ca_rotation::Phase::TrustBoth => auth.trust_pem(),
        _ => ca.cert_pem.clone(),
    };
    let probe = crate::pki::issue(
        ca,
        crate::shared::secrets::PEER_CN,
        &[],
        crate::pki::Usage::Peer,
        std::time::Duration::from_secs(3600),
    )
    .map_err(|e| e.to_string())?;
    let n = Names::of(ec);
    let urls: Vec<String> = pods.iter().flat_map(|p| [n.client_url(&p.name), n.peer_url(&p.name)]).collect();
    let results = futures::future::join_all(urls.iter().map(|u| {
        crate::etcd::probe::tls_version(u, &roots, &probe.cert_pem, &probe.key_pem, std::time::Duration::from_secs(3))
    }))
    .await;
    let failed: Vec<String> = results.into_iter().filter_map(|r| r.err().map(|e| e.to_string())).collect();
    match failed.is_empty() {
        true => Ok(()),
        false => Err(failed.join("; ")),
    }
}

/// The PodDisruptionBudget on Kubernetes before 1.21 (`policy/v1beta1`, same fields).
async fn apply_pdb_v1beta1(ec: &EtcdCluster, ctx: &Context, ns: &str) -> Result<(), Error> {
    let pdb = build::pod_disruption_budget(ec);
    let mut value = serde_json::to_value(&pdb).map_err(|e| Error::Objects {
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

/// Keeps member PVCs' owner references in line with `storage.retention.whenDeleted`.
pub async fn ensure_pvc_owners(
    ec: &EtcdCluster,
    pvcs: &[PersistentVolumeClaim],
    api: &Api<PersistentVolumeClaim>,
) -> Result<(), Error> {
    let want = build::pvc_owner_references(ec);
    for pvc in pvcs {
        if pvc.annotations().contains_key(REMOVED_ANNOTATION) || pvc.metadata.owner_references == want {
            continue;
        }
        let patch = json!({"metadata": {"ownerReferences": want}});
        let name = pvc.name_any();
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(error::objects(format!("set the owner of PVC {name}")))?;
    }
    Ok(())
}

/// Deletes volumes marked for deletion whose pod is gone: what a pass that stopped
/// between marking and deleting left behind.
pub async fn sweep_removed_volumes(
    pvcs: &[PersistentVolumeClaim],
    pods: &[Pod],
    api: &Api<PersistentVolumeClaim>,
) -> Result<(), Error> {
    for pvc in pvcs {
        let name = pvc.name_any();
        let member = name.strip_prefix("data-").unwrap_or_default();
        let marked = pvc.annotations().get(REMOVED_ANNOTATION).map(String::as_str) == Some(REMOVED_TO_DELETE);
        if marked && pvc.metadata.deletion_timestamp.is_none() && !pods.iter().any(|p| p.name_any() == member) {
            delete_if_present(api, &name, pvc.uid())
                .await
                .map_err(error::objects(format!("delete PVC {name} of a removed member")))?;
        }
    }
    Ok(())
}

/// The claims of current members (not those set aside or on their way out), for sizing.
pub fn member_claims(pvcs: &[PersistentVolumeClaim]) -> Vec<super::volumes::Claim> {
    pvcs.iter()
        .filter(|c| c.metadata.deletion_timestamp.is_none() && !c.annotations().contains_key(REMOVED_ANNOTATION))
        .map(|c| super::volumes::Claim {
            name: c.name_any(),
            requested: c
                .spec
                .as_ref()
                .and_then(|s| s.resources.as_ref())
                .and_then(|r| r.requests.as_ref())
                .and_then(|r| r.get("storage"))
                .map(|q| q.0.clone()),
            capacity: c
                .status
                .as_ref()
                .and_then(|s| s.capacity.as_ref())
                .and_then(|c| c.get("storage"))
                .map(|q| q.0.clone()),
            class: c.spec.as_ref().and_then(|s| s.storage_class_name.clone()),
        })
        .collect()
}

/// Raises the storage request of `claims` to `size` (their StorageClass allows volume
/// expansion; the storage driver grows the volumes, online or at the pod's next start).
pub async fn grow_volumes(
    ec: &EtcdCluster,
    ctx: &Context,
    api: &Api<PersistentVolumeClaim>,
    claims: &[String],
    size: &str,
) -> Result<(), Error> {
    let patch = json!({"spec": {"resources": {"requests": {"storage": size}}}});
    for name in claims {
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(error::objects(format!("grow PVC {name} to {size}")))?;
        let note = format!("growing volume {name} to {size} (spec.storage.size)");
        publish(&ctx.rt, ec, EventType::Normal, "ExpandingVolume", &note).await;
    }
    Ok(())
}

/// Records the etcd cluster id on the EtcdCluster and on every member volume: durable
/// evidence that the cluster formed, which no status loss can erase.
pub async fn record_cluster_id(
    ec: &EtcdCluster,
    ctx: &Context,
    pvcs: &[PersistentVolumeClaim],
    cluster_id: &str,
) -> Result<(), Error> {
    let ns = ec.namespace().unwrap_or_default();
    let patch = json!({"metadata": {"annotations": {CLUSTER_ID_ANNOTATION: cluster_id}}});
    if ec.annotations().get(CLUSTER_ID_ANNOTATION).map(String::as_str) != Some(cluster_id) {
        let api: Api<EtcdCluster> = Api::namespaced(ctx.rt.client.clone(), &ns);
        api.patch(&ec.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(error::record("record the cluster id on the EtcdCluster"))?;
    }
    let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.rt.client.clone(), &ns);
    for pvc in pvcs {
        if pvc.annotations().contains_key(CLUSTER_ID_ANNOTATION) || pvc.annotations().contains_key(REMOVED_ANNOTATION) {
            continue;
        }
        let name = pvc.name_any();
        match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(error::record(format!("record the cluster id on PVC {name}"))(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeStatus};

    fn node(addresses: &[(&str, &str)]) -> Node {
        Node {
            status: Some(NodeStatus {
                addresses: Some(
                    addresses
                        .iter()
                        .map(|(t, a)| NodeAddress { type_: t.to_string(), address: a.to_string() })
                        .collect(),
                ),
                ..NodeStatus::default()
            }),
            ..Node::default()
        }
    }

    #[test]
    fn control_plane_addresses_are_the_internal_ips() {
        let nodes =
            [node(&[("Hostname", "cp-0"), ("InternalIP", "10.0.0.1")]), node(&[("InternalIP", "fd00::2")]), node(&[])];
        assert_eq!(super::internal_addresses(&nodes), ["10.0.0.1", "fd00::2"]);
    }
}
