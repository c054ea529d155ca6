//! Act: the IO of one pass. Fixed objects (certificates, Services, PDB) follow from the
//! spec; each planned step is done here, fenced when it is disruptive.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use super::build::{self, BOOTSTRAP_ANNOTATION, CLUSTER_ID_ANNOTATION, Join, Names};
use super::ca_rotation;
use super::error::{self, Error};
use super::maintenance::Outcome;
use super::observe::{EtcdView, REMOVED_ANNOTATION};
use super::plan::Step;
use super::tls;
use super::{CONTROLLER, Context, FIELD_MANAGER, Key};
use crate::api::EtcdCluster;
use crate::api::cluster::{StorageMedium, TlsMode, Topology};
use crate::etcd::{AdminConfig, AlarmKind, EndpointStatus, EtcdAdmin, EtcdError};
use crate::runtime::events::{EventType, publish};
use crate::runtime::kube_ops::{annotate_if_unchanged, apply, create_if_absent, delete_if_present, is_conflict};
use crate::runtime::operation::{self, Operation, Taken};

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
    let lp = kube::api::ListParams::default().labels(build::CONTROL_PLANE_LABEL);
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
        let names = tls::secret_names(ec).into_iter().flat_map(|s| [s.peer, s.server, s.client]);
        for name in names.chain([tls::ca_secret_of(ec)]) {
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
            fixed.client_secret = tls::secret_names(ec).and_then(|n| existing.get(&n.client).cloned());
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
    let name = tls::ca_secret_of(ec);
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
    let probe = crate::pki::issue(ca, tls::PEER_CN, &[], crate::pki::Usage::Peer, std::time::Duration::from_secs(3600))
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

/// Value of the removed-member mark on a volume that is to be deleted (any other value:
/// kept by retention).
pub const REMOVED_TO_DELETE: &str = "delete";

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

/// Records the members of a bootstrap before its first pod is created, with the
/// object's resourceVersion as a precondition. Returns false when the object changed
/// meanwhile (look again).
pub async fn record_bootstrap(ec: &EtcdCluster, ctx: &Context, members: &[String]) -> Result<bool, Error> {
    let api: Api<EtcdCluster> = Api::namespaced(ctx.rt.client.clone(), &ec.namespace().unwrap_or_default());
    let members = serde_json::to_string(members).unwrap_or_default();
    annotate_if_unchanged(&api, ec, BOOTSTRAP_ANNOTATION, &members).await.map_err(error::record("record the bootstrap"))
}

/// The fence before a disruptive step: the cluster's operation slot taken with the
/// resourceVersion of a fresh read as precondition (a replica acting on an old view
/// gets a conflict), then the Lease read again. `Ok(Some(why))`: do not act.
pub async fn fence(ec: &EtcdCluster, ctx: &Context, step: &Step) -> Result<Option<String>, Error> {
    let api: Api<EtcdCluster> = Api::namespaced(ctx.rt.client.clone(), &ec.namespace().unwrap_or_default());
    let fresh = api.get(&ec.name_any()).await.map_err(error::record("read the EtcdCluster before acting"))?;
    if fresh.metadata.generation != ec.metadata.generation {
        return Ok(Some("the spec changed since this pass read it".into()));
    }
    let (reason, _) = super::status::describe(step);
    let now = jiff::Timestamp::now();
    let op = Operation {
        kind: reason.to_string(),
        member: step.member().map(str::to_string),
        controller: CONTROLLER.into(),
        holder: ctx.rt.instance.clone(),
        since: now,
        expires: now + jiff::SignedDuration::from_mins(10),
    };
    match operation::take(&api, &fresh, &op).await.map_err(error::record("take the operation slot"))? {
        Taken::Yes => {}
        Taken::Lost(why) => return Ok(Some(why)),
    }
    if !ctx.rt.lease.holds_fresh(&ctx.rt.client).await.map_err(Error::Lease)? {
        return Ok(Some(format!("the leader-election Lease {} is no longer held", ctx.rt.lease.describe())));
    }
    Ok(None)
}

/// Client TLS for talking to this cluster's etcd.
/// How another controller reaches a cluster's etcd (its client certificate, if TLS).
pub async fn etcd_client_config(client: &kube::Client, ec: &EtcdCluster, ns: &str) -> Result<AdminConfig, String> {
    let Some(names) = tls::secret_names(ec) else { return Ok(AdminConfig::default()) };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = secrets
        .get_opt(&names.client)
        .await
        .map_err(|e| format!("reading Secret {}: {e}", names.client))?
        .ok_or_else(|| format!("the cluster's client certificate Secret {} does not exist", names.client))?;
    let material = tls::client_material(&secret)
        .ok_or_else(|| format!("Secret {} lacks ca.crt, tls.crt or tls.key", names.client))?;
    Ok(AdminConfig { tls: Some(material), ..AdminConfig::default() })
}

/// The admin's TLS material, from `known` (the client Secret this pass read already) or
/// read now.
pub async fn admin_config(
    ec: &EtcdCluster,
    ctx: &Context,
    ns: &str,
    known: Option<Secret>,
) -> Result<AdminConfig, Error> {
    let Some(names) = tls::secret_names(ec) else { return Ok(AdminConfig::default()) };
    let secret = match known.filter(|s| s.name_any() == names.client) {
        Some(s) => s,
        None => Api::<Secret>::namespaced(ctx.rt.client.clone(), ns)
            .get_opt(&names.client)
            .await
            .map_err(error::observe(format!("read Secret {}", names.client)))?
            .ok_or_else(|| Error::ClientSecret(names.client.clone()))?,
    };
    let material = tls::client_material(&secret).ok_or_else(|| Error::ClientSecret(names.client.clone()))?;
    Ok(AdminConfig { tls: Some(material), ..AdminConfig::default() })
}

/// Asks etcd for its member list and every reachable member's own status.
/// Both at once: a member that does not answer costs one timeout, not two.
///
/// The planner deletes the pod and volume of a member etcd does not list, so the list
/// it plans on is the leader's when the leader answered (one more call, to the member
/// whose status says it leads): a follower (etcd 3.4 serves MemberList from what a
/// member has applied, not through raft) may not have applied a membership change yet,
/// and under load may lag by seconds. The first answer is kept for when no leader
/// answers, marked unconfirmed.
pub async fn observe_etcd(admin: &EtcdAdmin) -> Option<EtcdView> {
    let (first_answer, statuses) = futures::join!(admin.member_list(), admin.statuses());
    let statuses: HashMap<u64, EndpointStatus> =
        statuses.into_iter().filter_map(|(_, r)| r.ok()).map(|s| (s.member_id, s)).collect();
    let from_leader = match statuses.values().find(|s| s.is_leader()) {
        Some(leader) => admin.member_list_at(&leader.endpoint).await.ok(),
        None => None,
    };
    let (members, unconfirmed) = match from_leader {
        Some(members) => (members, false),
        None => (first_answer.ok()?, true),
    };
    Some(EtcdView { members, statuses, unconfirmed })
}

/// `--initial-cluster` of a member joining what etcd knows now (or, with no answer, the
/// members with volumes).
fn join_existing(names: &Names, view: Option<&EtcdView>, volumes: &[String]) -> Join {
    let initial_cluster = match view {
        Some(v) => v
            .members
            .iter()
            .filter_map(|m| {
                let name = m.peer_urls.iter().find_map(|u| names.member_of_peer_url(u))?;
                Some((name.clone(), names.peer_url(&name)))
            })
            .collect(),
        None => volumes.iter().map(|m| (m.clone(), names.peer_url(m))).collect(),
    };
    Join { initial_cluster, existing: true }
}

/// Creates a member's PVC and pod; either may exist already (a pass that stopped half way).
async fn create_member(
    ec: &EtcdCluster,
    ctx: &Context,
    ns: &str,
    member: &str,
    join: &Join,
    trust: Option<&str>,
) -> Result<(), Error> {
    if let Some(pvc) = build::member_pvc(ec, member) {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.rt.client.clone(), ns);
        create_if_absent(&api, FIELD_MANAGER, &pvc)
            .await
            .map_err(error::act_kube(format!("create PVC of {member}")))?;
    }
    let mut pod =
        build::member_pod(ec, member, join, &ctx.settings.etcd_image_repository, &ctx.settings.operator_image);
    if let Some(t) = trust {
        pod.annotations_mut().insert(ca_rotation::TRUST_ANNOTATION.into(), t.into());
    }
    let api: Api<Pod> = Api::namespaced(ctx.rt.client.clone(), ns);
    create_if_absent(&api, FIELD_MANAGER, &pod).await.map_err(error::act_kube(format!("create pod {member}")))?;
    Ok(())
}

/// etcd refuses membership changes for a few seconds after a member (re)connects
/// ("unhealthy cluster"), and promotion of a learner still catching up: both mean "not
/// yet", not failure.
pub fn not_yet(e: &EtcdError) -> bool {
    e.etcd_message().is_some_and(|m| m.contains("unhealthy cluster") || m.contains("in sync"))
}

/// What new member pods are made from besides the spec.
#[derive(Clone, Copy, Debug, Default)]
pub struct Making<'a> {
    /// Members with a volume.
    pub volumes: &'a [String],
    /// Fingerprint of the CAs members trust now (recorded on the pod).
    pub trust: Option<&'a str>,
}

/// Does the one step. Returns whether it was done (false: etcd said not yet).
pub async fn act(
    ec: &EtcdCluster,
    ctx: &Context,
    names: &Names,
    step: &Step,
    view: Option<&EtcdView>,
    making: Making<'_>,
    admin: &EtcdAdmin,
) -> Result<bool, Error> {
    let volumes = making.volumes;
    let ns = names.namespace.as_str();
    let pods: Api<Pod> = Api::namespaced(ctx.rt.client.clone(), ns);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.rt.client.clone(), ns);
    let (reason, note) = super::status::describe(step);
    match step {
        Step::Idle | Step::Wait(_) | Step::Blocked(_) => return Ok(false),
        Step::Compact { .. } | Step::Defragment { .. } | Step::Disarm { .. } => {
            return maintain(ec, ctx, names, step, view, admin).await.map(|(done, _)| done);
        }
        Step::Bootstrap { members, create } => {
            let join = Join {
                initial_cluster: members.iter().map(|m| (m.clone(), names.peer_url(m))).collect(),
                existing: false,
            };
            for m in create {
                create_member(ec, ctx, ns, m, &join, making.trust).await?;
            }
        }
        Step::RecreatePod { name } | Step::CreateLearnerPod { name } => {
            create_member(ec, ctx, ns, name, &join_existing(names, view, volumes), making.trust).await?;
        }
        Step::AddLearner { name } => match admin.add_learner(vec![names.peer_url(name)]).await {
            Ok(_) => {}
            Err(e) if not_yet(&e) => return Ok(false),
            Err(e) => return Err(error::act_etcd(format!("add learner {name}"))(e)),
        },
        Step::Promote { id, name } => match admin.promote(*id).await {
            Ok(_) => {}
            Err(e) if not_yet(&e) => return Ok(false),
            Err(e) => return Err(error::act_etcd(format!("promote {name}"))(e)),
        },
        Step::MoveLeader { to, to_name, .. } => {
            admin.move_leader(*to).await.map_err(error::act_etcd(format!("move leadership to {to_name}")))?;
        }
        Step::RemoveMember { id, name, .. } => match admin.remove(*id).await {
            Ok(_) => {}
            Err(e) if not_yet(&e) => return Ok(false),
            Err(e) => return Err(error::act_etcd(format!("remove member {name}"))(e)),
        },
        Step::DeletePod { name, delete_volume } => {
            // The volume is marked as no member's before the pod goes: a crash in between
            // can never bring it back as a member (not even with etcd dark).
            let pvc = names.pvc(name);
            if ec.spec.storage.medium == StorageMedium::Persistent {
                let (mark, owners) = if *delete_volume {
                    (REMOVED_TO_DELETE, json!(build::pvc_owner_references(ec)))
                } else {
                    ("true", json!(null))
                };
                let patch = json!({"metadata": {"annotations": {REMOVED_ANNOTATION: mark}, "ownerReferences": owners}});
                match pvcs.patch(&pvc, &PatchParams::default(), &Patch::Merge(&patch)).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(error::act_kube(format!("mark PVC {pvc} as a removed member's"))(e)),
                }
            }
            delete_if_present(&pods, name, None).await.map_err(error::act_kube(format!("delete pod {name}")))?;
            if *delete_volume {
                delete_if_present(&pvcs, &pvc, None).await.map_err(error::act_kube(format!("delete PVC {pvc}")))?;
            }
        }
        Step::Restart { name, .. } => {
            // The pod comes back (RecreatePod) on its volume, built from the current spec.
            delete_if_present(&pods, name, None)
                .await
                .map_err(error::act_kube(format!("delete pod {name} to restart it")))?;
        }
        Step::ReplacePod { name, initial } => {
            // Read again: a pod a node took meanwhile runs, and is left alone. The delete
            // names that very pod (its uid); an unscheduled pod goes at once, so its
            // successor is created in the same step.
            let read = pods.get_opt(name).await.map_err(error::act_kube(format!("read pod {name}")))?;
            let Some(read) = read.filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none()) else {
                return Ok(false);
            };
            delete_if_present(&pods, name, read.uid())
                .await
                .map_err(error::act_kube(format!("delete pod {name} that no node took")))?;
            let join = match initial {
                Some(members) => Join {
                    initial_cluster: members.iter().map(|m| (m.clone(), names.peer_url(m))).collect(),
                    existing: false,
                },
                None => join_existing(names, view, volumes),
            };
            create_member(ec, ctx, ns, name, &join, making.trust).await?;
        }
    }
    tracing::info!(cluster = %names.cluster, namespace = %ns, reason, "{note}");
    publish(&ctx.rt, ec, EventType::Normal, reason, &note).await;
    Ok(true)
}

/// The members of a recorded bootstrap.
pub fn recorded_bootstrap(ec: &EtcdCluster) -> Option<Vec<String>> {
    ec.annotations().get(BOOTSTRAP_ANNOTATION).and_then(|v| serde_json::from_str(v).ok())
}

/// The EtcdCluster's own record of its cluster id (annotation, else status).
pub fn cluster_id_recorded(ec: &EtcdCluster) -> bool {
    // An in-place restore replaces the cluster: the replaced cluster's id is no record.
    let replaced = crate::seed::SeedSource::from_cluster(ec).and_then(|s| s.replaces);
    let counts = |id: &String| Some(id) != replaced.as_ref();
    ec.annotations().get(CLUSTER_ID_ANNOTATION).is_some_and(counts)
        || ec.status.as_ref().and_then(|s| s.cluster_id.as_ref()).is_some_and(counts)
}

/// Label of the EtcdRestores etcd-pilot starts by itself after quorum loss.
pub const AUTO_RECOVERY_LABEL: &str = "etcdpilot.io/auto-recovery";

/// Starts an in-place EtcdRestore from the most advanced surviving member (highest raft
/// index), unless one it started is still under way or the cluster has no backup target
/// to stage the survivor's snapshot in. Returns what it did, for an Event.
pub async fn start_quorum_recovery(
    ec: &EtcdCluster,
    ctx: &Context,
    names: &Names,
    view: Option<&EtcdView>,
    obs: &super::plan::Observation,
    lost: &[String],
) -> Result<Option<String>, Error> {
    use crate::api::EtcdRestore;
    if ec.spec.backup.is_none() {
        return Ok(None);
    }
    let ns = ec.namespace().unwrap_or_default();
    let restores: Api<EtcdRestore> = Api::namespaced(ctx.rt.client.clone(), &ns);
    let mine = restores
        .list(&kube::api::ListParams::default().labels(&format!("{AUTO_RECOVERY_LABEL}={}", ec.name_any())))
        .await
        .map_err(error::act_kube("list automatic recoveries"))?;
    if mine.items.iter().any(|r| !r.status.as_ref().is_some_and(|s| s.phase.is_finished())) {
        return Ok(None);
    }
    let Some(view) = view else { return Ok(None) };
    let survivor = view
        .members
        .iter()
        .filter(|m| !m.is_learner)
        .filter_map(|m| {
            let name = m.peer_urls.iter().find_map(|u| names.member_of_peer_url(u))?;
            let status = view.statuses.get(&m.id)?;
            obs.pods.iter().any(|p| p.name == name).then_some((status.raft_index, name))
        })
        .max();
    let Some((index, survivor)) = survivor else { return Ok(None) };
    let name = format!("{}-recovery-{}", ec.name_any(), jiff::Timestamp::now().as_second());
    let mut restore = EtcdRestore::new(
        &name,
        crate::api::EtcdRestoreSpec {
            source: crate::api::restore::RestoreSource { member: Some(survivor.clone()), ..Default::default() },
            mode: crate::api::restore::RestoreMode::InPlace,
            cluster_name: ec.name_any(),
            new_cluster: None,
            force: false,
        },
    );
    restore.metadata.namespace = Some(ns.clone());
    restore.metadata.labels = Some([(AUTO_RECOVERY_LABEL.to_string(), ec.name_any())].into());
    create_if_absent(&restores, FIELD_MANAGER, &restore).await.map_err(error::act_kube("start the recovery"))?;
    Ok(Some(format!(
        "quorum lost for good ({} gone with their volumes): started EtcdRestore {name}, in place from the most advanced survivor {survivor} (raft index {index})",
        lost.join(", ")
    )))
}

/// Does one maintenance step (compact, defragment, disarm). Returns whether it was done
/// and what it did. A failed defragmentation is an outcome, not an error: it is
/// recorded, announced, and retried with backoff, and never stops the pass.
pub async fn maintain(
    ec: &EtcdCluster,
    ctx: &Context,
    names: &Names,
    step: &Step,
    view: Option<&EtcdView>,
    admin: &EtcdAdmin,
) -> Result<(bool, Outcome), Error> {
    let now = jiff::Timestamp::now;
    match step {
        Step::Compact { revision, all_history, reason } => {
            let done = admin
                .compact_to(*revision)
                .await
                .map_err(error::act_etcd(format!("compact to revision {revision}")))?;
            let note = match done {
                Some(r) => format!("compacted history below revision {r}: {reason}"),
                None => format!("nothing to compact yet: {reason}"),
            };
            publish(&ctx.rt, ec, EventType::Normal, "Compacted", &note).await;
            Ok((true, Outcome::Compacted { revision: done.unwrap_or(0), all_history: *all_history, at: now() }))
        }
        Step::Disarm { reason } => {
            let alarms = admin.alarms().await.map_err(error::act_etcd("list alarms"))?;
            for a in alarms.iter().filter(|a| a.kind == AlarmKind::NoSpace) {
                admin.disarm(a).await.map_err(error::act_etcd("disarm NOSPACE"))?;
            }
            tracing::info!(cluster = %names.cluster, "NOSPACE disarmed: {reason}");
            Ok((true, Outcome::Disarmed { at: now() }))
        }
        Step::Defragment { name, reason, .. } => {
            let ep = names.client_url(name);
            let member_name = |id: u64| -> String {
                view.and_then(|v| v.members.iter().find(|m| m.id == id))
                    .and_then(|m| m.peer_urls.iter().find_map(|u| names.member_of_peer_url(u)))
                    .unwrap_or_else(|| format!("{id:x}"))
            };
            let voters = view.map_or(1, |v| v.members.iter().filter(|m| !m.is_learner).count());
            // Checked right before: a member that leads is not defragmented (leadership
            // is moved away first), unless it is the only voter.
            let before = admin.status(&ep).await.map_err(error::act_etcd(format!("status of {name}")))?;
            if before.is_leader() && voters > 1 {
                return Ok((false, Outcome::None));
            }
            let leader = member_name(before.leader);
            publish(
                &ctx.rt,
                ec,
                EventType::Normal,
                "Defragmenting",
                &format!(
                    "defragmenting {name} ({reason}); leader {leader}; db file {} MiB, {} MiB in use",
                    before.db_size >> 20,
                    before.db_size_in_use >> 20
                ),
            )
            .await;
            let start = std::time::Instant::now();
            match admin.defragment(&ep).await {
                Ok(()) => {
                    let blocked = start.elapsed();
                    let after = admin.status(&ep).await.map(|s| s.db_size).unwrap_or(before.db_size);
                    let note = format!(
                        "defragmented {name}: db file {} MiB -> {} MiB, member blocked {:.2}s; leader {leader}",
                        before.db_size >> 20,
                        after >> 20,
                        blocked.as_secs_f64()
                    );
                    tracing::info!(cluster = %names.cluster, "{note}");
                    publish(&ctx.rt, ec, EventType::Normal, "Defragmented", &note).await;
                    let blocked_ms = i64::try_from(blocked.as_millis()).unwrap_or(i64::MAX);
                    Ok((
                        true,
                        Outcome::Defragmented {
                            name: name.clone(),
                            at: now(),
                            blocked_ms,
                            before: before.db_size,
                            after,
                        },
                    ))
                }
                Err(e) => {
                    let note = format!("defragmenting {name} failed: {e}; retried later with backoff");
                    tracing::warn!(cluster = %names.cluster, "{note}");
                    publish(&ctx.rt, ec, EventType::Warning, "DefragmentationFailed", &note).await;
                    Ok((true, Outcome::DefragFailed { name: name.clone(), at: now() }))
                }
            }
        }
        _ => Ok((false, Outcome::None)),
    }
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
