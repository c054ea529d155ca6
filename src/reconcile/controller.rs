//! The EtcdCluster controller. One pass: observe (pods, PVCs, etcd) -> validate ->
//! ensure the fixed objects (certificates, Services, PDB) -> plan one step -> act ->
//! status. Membership changes happen one per pass; the next pass looks again.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::events;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;

use super::build::{self, Join, MEDIUM_ANNOTATION, Names, TOPOLOGY_ANNOTATION, VERSION_ANNOTATION};
use super::observe::{self, EtcdView, REMOVED_ANNOTATION};
use super::plan::{self, Desired, Step};
use super::status;
use super::tls;
use crate::api::EtcdCluster;
use crate::api::cluster::{EtcdClusterStatus, RetentionAction, StorageMedium, Topology};
use crate::api::validation;
use crate::etcd::{AdminConfig, EtcdAdmin, EtcdError};
use crate::metrics::{ClusterLabels, ErrorLabels, MemberLabels, Metrics};
use crate::pki::PkiError;

/// Field manager of everything this controller applies.
pub const FIELD_MANAGER: &str = "etcd-pilot";
/// `reportingController` of its Events.
const REPORTING_CONTROLLER: &str = "etcdpilot.io/etcd-pilot";
/// Field manager of the status it applies.
const STATUS_MANAGER: &str = "etcd-pilot-status";

/// Why a pass failed. Each names the step, for the error metric and the log.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{what}: {source}")]
    Etcd {
        what: String,
        #[source]
        source: EtcdError,
    },
    #[error("certificates: {0}")]
    Pki(#[from] PkiError),
    #[error("the client certificate Secret {0} is missing or lacks ca.crt, tls.crt or tls.key")]
    ClientSecret(String),
}

impl Error {
    fn step(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kubernetes",
            Error::Etcd { .. } => "etcd",
            Error::Pki(_) | Error::ClientSecret(_) => "certificates",
        }
    }
}

fn kube_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Kube { what, source }
}

fn etcd_err(what: impl Into<String>) -> impl FnOnce(EtcdError) -> Error {
    let what = what.into();
    move |source| Error::Etcd { what, source }
}

/// What the controller remembers of a cluster between passes.
#[derive(Default)]
struct Memory {
    /// When each member was first seen unhealthy.
    unhealthy_since: HashMap<String, Instant>,
    leader: Option<u64>,
    warned_no_pdb: bool,
    /// The last Warning published, so a standing problem is not repeated every pass.
    last_warning: Option<String>,
    member_names: Vec<String>,
}

/// Settings of the controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Repository of etcd images; a member runs `<repository>:v<version>` unless the
    /// cluster names an image.
    pub etcd_image_repository: String,
    /// The API server serves `policy/v1` PodDisruptionBudgets.
    pub policy_v1: bool,
    /// The cluster's DNS domain, for the fully qualified names in certificates.
    pub cluster_domain: String,
    /// The leader-election Lease this replica must hold to act.
    pub lease: Option<LeaseRef>,
}

/// A leader-election Lease, by namespace and name, and who must hold it.
#[derive(Clone, Debug)]
pub struct LeaseRef {
    pub namespace: String,
    pub name: String,
    pub identity: String,
}

/// Is the Lease held by `identity` and not expired by this machine's clock? Checked
/// before every pass acts: the election task learns of a lost Lease only when it can
/// reach the API server, while etcd may still be reachable.
pub fn lease_valid(lease: &Lease, identity: &str, now: jiff::Timestamp) -> bool {
    let Some(spec) = &lease.spec else { return false };
    let (Some(holder), Some(renewed), Some(secs)) =
        (spec.holder_identity.as_deref(), spec.renew_time.as_ref(), spec.lease_duration_seconds)
    else {
        return false;
    };
    holder == identity && renewed.0 + jiff::SignedDuration::from_secs(i64::from(secs)) > now
}

async fn holds_lease(ctx: &Context) -> Result<bool, Error> {
    let Some(l) = &ctx.settings.lease else { return Ok(true) };
    let api: Api<Lease> = Api::namespaced(ctx.client.clone(), &l.namespace);
    let lease = api.get_opt(&l.name).await.map_err(kube_err(format!("read Lease {}", l.name)))?;
    Ok(lease.is_some_and(|lease| lease_valid(&lease, &l.identity, jiff::Timestamp::now())))
}

/// Normal or Warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// Shared by every pass.
pub struct Context {
    pub client: Client,
    /// This replica, as the `reportingInstance` of its Events.
    pub instance: String,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    memory: Mutex<HashMap<(String, String), Memory>>,
}

impl Context {
    pub fn new(client: Client, metrics: Arc<Metrics>, settings: Settings, instance: String) -> Self {
        Self { instance, client, metrics, settings, memory: Mutex::new(HashMap::new()) }
    }

    fn with_memory<T>(&self, key: &(String, String), f: impl FnOnce(&mut Memory) -> T) -> T {
        let mut all = self.memory.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(all.entry(key.clone()).or_default())
    }

    fn forget(&self, key: &(String, String)) -> Vec<String> {
        let mut all = self.memory.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        all.remove(key).map(|m| m.member_names).unwrap_or_default()
    }
}

/// Does the API server serve `policy/v1` PodDisruptionBudgets (Kubernetes 1.21+)?
pub async fn serves_policy_v1(client: &Client) -> bool {
    match client.list_api_group_resources("policy/v1").await {
        Ok(list) => list.resources.iter().any(|r| r.name == "poddisruptionbudgets"),
        Err(_) => false,
    }
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static) {
    let clusters: Api<EtcdCluster> = Api::all(ctx.client.clone());
    let pods: Api<Pod> = Api::all(ctx.client.clone());
    let controller = Controller::new(clusters, watcher::Config::default().any_semantic())
        .owns(pods, watcher::Config::default().labels("app.kubernetes.io/managed-by=etcd-pilot").any_semantic());
    // A deleted cluster gets no last pass (nothing to finalize: owner references clean
    // up): forget it, and drop its metric series, once it is gone from the cache.
    let store = controller.store();
    let pruner = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                let live: Vec<(String, String)> =
                    store.state().iter().map(|ec| (ec.namespace().unwrap_or_default(), ec.name_any())).collect();
                let keys: Vec<(String, String)> = {
                    let all = ctx.memory.lock().unwrap_or_else(|p| p.into_inner());
                    all.keys().filter(|k| !live.contains(k)).cloned().collect()
                };
                for key in keys {
                    let members = ctx.forget(&key);
                    ctx.metrics.forget_cluster(&key.0, &key.1, &members);
                }
            }
        })
    };
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "reconcile");
            }
        })
        .await;
    pruner.abort();
}

fn error_policy(ec: Arc<EtcdCluster>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(cluster = %ec.name_any(), namespace = ?ec.namespace(), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// One pass over one cluster.
pub async fn reconcile(ec: Arc<EtcdCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let start = Instant::now();
    let labels = ClusterLabels { namespace: ec.namespace().unwrap_or_default(), cluster: ec.name_any() };
    let result = pass(&ec, &ctx).await;
    ctx.metrics.reconcile_duration.get_or_create(&labels).observe(start.elapsed().as_secs_f64());
    if let Err(e) = &result {
        let l = ErrorLabels { namespace: labels.namespace, cluster: labels.cluster, step: e.step().into() };
        ctx.metrics.reconcile_errors.get_or_create(&l).inc();
    }
    result
}

/// Publishes an Event about the cluster. Each is its own object (kube's recorder folds
/// Events of one reason into a series, which would hide which member a change was about).
async fn publish(ctx: &Context, ec: &EtcdCluster, type_: EventType, reason: &str, note: String) {
    let api: Api<events::v1::Event> = Api::namespaced(ctx.client.clone(), &ec.namespace().unwrap_or_default());
    let event = events::v1::Event {
        metadata: ObjectMeta { generate_name: Some(format!("{}-", ec.name_any())), ..ObjectMeta::default() },
        event_time: Some(MicroTime(jiff::Timestamp::now())),
        reporting_controller: Some(REPORTING_CONTROLLER.into()),
        reporting_instance: Some(ctx.instance.clone()),
        action: Some(reason.into()),
        reason: Some(reason.into()),
        // The API caps a note at 1 kB.
        note: Some(note.chars().take(1000).collect()),
        type_: Some(if type_ == EventType::Warning { "Warning" } else { "Normal" }.into()),
        regarding: Some(ec.object_ref(&())),
        ..events::v1::Event::default()
    };
    if let Err(e) = api.create(&PostParams::default(), &event).await {
        tracing::warn!(error = %e, reason, "cannot publish an Event");
    }
}

/// Publishes a Warning unless it is the one published last for this cluster.
async fn warn_once(ctx: &Context, ec: &EtcdCluster, key: &(String, String), reason: &str, note: String) {
    let fresh = ctx.with_memory(key, |m| {
        let text = format!("{reason}: {note}");
        let fresh = m.last_warning.as_deref() != Some(text.as_str());
        m.last_warning = Some(text);
        fresh
    });
    if fresh {
        publish(ctx, ec, EventType::Warning, reason, note).await;
    }
}

fn member_selector(cluster: &str) -> String {
    format!("app.kubernetes.io/name=etcd,app.kubernetes.io/instance={cluster},app.kubernetes.io/component=member")
}

fn pvc_selector(cluster: &str) -> String {
    format!("app.kubernetes.io/name=etcd,app.kubernetes.io/instance={cluster},etcdpilot.io/member")
}

/// Problems of the spec, alone and against what runs.
fn problems(ec: &EtcdCluster, pods: &[Pod], pvcs: &[PersistentVolumeClaim]) -> Vec<String> {
    let spec = &ec.spec;
    let mut out: Vec<String> = validation::validate_cluster(spec).iter().map(ToString::to_string).collect();
    // What runs: the lowest version any member pod was built with (else the status),
    // and the topology and medium the pods were built with.
    let annotated = |key: &str| pods.iter().find_map(|p| p.annotations().get(key).cloned());
    let running_version = pods
        .iter()
        .filter_map(|p| p.annotations().get(VERSION_ANNOTATION))
        .filter_map(|v| semver::Version::parse(v).ok())
        .min()
        .map(|v| v.to_string())
        .or_else(|| ec.status.as_ref().and_then(|s| s.version.clone()));
    let mut live = spec.clone();
    if let Some(v) = running_version {
        live.version = v;
    }
    match annotated(TOPOLOGY_ANNOTATION).as_deref() {
        Some("Stacked") => live.topology = Topology::Stacked,
        Some("External") => live.topology = Topology::External,
        _ => {}
    }
    match annotated(MEDIUM_ANNOTATION).as_deref() {
        Some("Memory") => live.storage.medium = StorageMedium::Memory,
        Some("Persistent") => live.storage.medium = StorageMedium::Persistent,
        _ => {}
    }
    out.extend(validation::validate_cluster_change(&live, spec).iter().map(ToString::to_string));
    if spec.tls.mode == crate::api::cluster::TlsMode::CertManager {
        out.push(
            "spec.tls.mode: CertManager is not supported by this version of etcd-pilot yet; use Operator (the default) or Secrets"
                .into(),
        );
    }
    let uid = ec.uid().unwrap_or_default();
    for pvc in pvcs {
        if let Some(other) = pvc.annotations().get(build::CLUSTER_UID_ANNOTATION)
            && *other != uid
        {
            out.push(format!(
                "PVC {} holds data of an earlier EtcdCluster of this name (uid {other}); delete it, or restore that data with an EtcdRestore",
                pvc.name_any()
            ));
        }
    }
    out
}

async fn apply<K>(api: &Api<K>, obj: &K) -> Result<K, kube::Error>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(obj)).await
}

/// Certificates, Services and the PodDisruptionBudget: objects whose content follows
/// from the spec alone.
async fn ensure_fixed_objects(ec: &EtcdCluster, ctx: &Context, key: &(String, String)) -> Result<(), Error> {
    let ns = key.0.as_str();
    let client = ctx.client.clone();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    if ec.spec.tls.mode == crate::api::cluster::TlsMode::Operator {
        let mut existing = BTreeMap::new();
        let names = tls::secret_names(ec).into_iter().flat_map(|s| [s.peer, s.server, s.client]);
        for name in names.chain([tls::ca_secret_name(&key.1)]) {
            if let Some(s) = secrets.get_opt(&name).await.map_err(kube_err(format!("read Secret {name}")))? {
                existing.insert(name, s);
            }
        }
        for w in tls::operator_secrets(ec, &existing, time::OffsetDateTime::now_utc(), &ctx.settings.cluster_domain)? {
            let name = w.secret.name_any();
            apply(&secrets, &w.secret).await.map_err(kube_err(format!("write Secret {name}")))?;
            publish(ctx, ec, EventType::Normal, "CertificateIssued", w.reason).await;
        }
    }
    let services: Api<Service> = Api::namespaced(client.clone(), ns);
    for svc in [build::peer_service(ec), build::client_service(ec)] {
        let name = svc.name_any();
        apply(&services, &svc).await.map_err(kube_err(format!("apply Service {name}")))?;
    }
    if ctx.settings.policy_v1 {
        let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client, ns);
        apply(&pdbs, &build::pod_disruption_budget(ec)).await.map_err(kube_err("apply PodDisruptionBudget"))?;
    } else if !ctx.with_memory(key, |m| std::mem::replace(&mut m.warned_no_pdb, true)) {
        publish(
            ctx,
            ec,
            EventType::Warning,
            "NoPodDisruptionBudget",
            "this Kubernetes does not serve policy/v1 (1.21+): no PodDisruptionBudget guards the members against voluntary evictions".into(),
        )
        .await;
    }
    Ok(())
}

/// Keeps member PVCs' owner references in line with `storage.retention.whenDeleted`.
async fn ensure_pvc_owners(
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
            .map_err(kube_err(format!("set the owner of PVC {name}")))?;
    }
    Ok(())
}

/// Client TLS for talking to this cluster's etcd.
async fn admin_config(ec: &EtcdCluster, ctx: &Context, ns: &str) -> Result<AdminConfig, Error> {
    let Some(names) = tls::secret_names(ec) else { return Ok(AdminConfig::default()) };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let secret = secrets
        .get_opt(&names.client)
        .await
        .map_err(kube_err(format!("read Secret {}", names.client)))?
        .ok_or_else(|| Error::ClientSecret(names.client.clone()))?;
    let material = tls::client_material(&secret).ok_or_else(|| Error::ClientSecret(names.client.clone()))?;
    Ok(AdminConfig { tls: Some(material), ..AdminConfig::default() })
}

/// Asks etcd for its member list and every reachable member's own status.
async fn observe_etcd(admin: &EtcdAdmin) -> Option<EtcdView> {
    let members = admin.member_list().await.ok()?;
    let statuses = admin.statuses().await.into_iter().filter_map(|(_, r)| r.ok()).map(|s| (s.member_id, s)).collect();
    Some(EtcdView { members, statuses })
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
async fn create_member(ec: &EtcdCluster, ctx: &Context, ns: &str, member: &str, join: &Join) -> Result<(), Error> {
    let pp = PostParams { field_manager: Some(FIELD_MANAGER.into()), ..PostParams::default() };
    if let Some(pvc) = build::member_pvc(ec, member) {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
        match api.create(&pp, &pvc).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(kube_err(format!("create PVC of {member}"))(e)),
        }
    }
    let pod = build::member_pod(ec, member, join, &ctx.settings.etcd_image_repository);
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    match api.create(&pp, &pod).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(kube_err(format!("create pod {member}"))(e)),
    }
}

async fn delete_ignoring_absent<K>(api: &Api<K>, name: &str) -> Result<(), kube::Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// etcd refuses membership changes for a few seconds after a member (re)connects
/// ("unhealthy cluster"), and promotion of a learner still catching up: both mean "not
/// yet", not failure.
fn not_yet(e: &EtcdError) -> bool {
    e.etcd_message().is_some_and(|m| m.contains("unhealthy cluster") || m.contains("in sync"))
}

/// Does the one step. Returns whether it was done (false: etcd said not yet).
async fn act(
    ec: &EtcdCluster,
    ctx: &Context,
    names: &Names,
    step: &Step,
    view: Option<&EtcdView>,
    volumes: &[String],
    admin: &EtcdAdmin,
) -> Result<bool, Error> {
    let ns = names.namespace.as_str();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
    let (reason, note) = status::describe(step);
    match step {
        Step::Idle | Step::Wait(_) | Step::Blocked(_) => return Ok(false),
        Step::Bootstrap { members, create } => {
            let join = Join {
                initial_cluster: members.iter().map(|m| (m.clone(), names.peer_url(m))).collect(),
                existing: false,
            };
            for m in create {
                create_member(ec, ctx, ns, m, &join).await?;
            }
        }
        Step::RecreatePod { name } => {
            create_member(ec, ctx, ns, name, &join_existing(names, view, volumes)).await?;
        }
        Step::AddLearner { name } => match admin.add_learner(vec![names.peer_url(name)]).await {
            Ok(_) => {}
            Err(e) if not_yet(&e) => return Ok(false),
            Err(e) => return Err(etcd_err(format!("add learner {name}"))(e)),
        },
        Step::CreateLearnerPod { name } => {
            create_member(ec, ctx, ns, name, &join_existing(names, view, volumes)).await?;
        }
        Step::Promote { id, name } => match admin.promote(*id).await {
            Ok(_) => {}
            Err(e) if not_yet(&e) => return Ok(false),
            Err(e) => return Err(etcd_err(format!("promote {name}"))(e)),
        },
        Step::MoveLeader { to, to_name, .. } => {
            admin.move_leader(*to).await.map_err(etcd_err(format!("move leadership to {to_name}")))?;
        }
        Step::RemoveMember { id, name, .. } => match admin.remove(*id).await {
            Ok(_) => {}
            Err(e) if not_yet(&e) => return Ok(false),
            Err(e) => return Err(etcd_err(format!("remove member {name}"))(e)),
        },
        Step::DeletePod { name, delete_volume } => {
            delete_ignoring_absent(&pods, name).await.map_err(kube_err(format!("delete pod {name}")))?;
            let pvc = names.pvc(name);
            if *delete_volume {
                delete_ignoring_absent(&pvcs, &pvc).await.map_err(kube_err(format!("delete PVC {pvc}")))?;
            } else if ec.spec.storage.medium == StorageMedium::Persistent {
                // Kept by retention: mark it as no member's, and let it outlive the cluster.
                let patch = json!({"metadata": {"annotations": {REMOVED_ANNOTATION: "true"}, "ownerReferences": null}});
                match pvcs.patch(&pvc, &PatchParams::default(), &Patch::Merge(&patch)).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(kube_err(format!("mark PVC {pvc} retained"))(e)),
                }
            }
        }
        Step::Upgrade { name, .. } => {
            // The pod comes back (RecreatePod) on its volume with the new image.
            delete_ignoring_absent(&pods, name).await.map_err(kube_err(format!("delete pod {name} to upgrade it")))?;
        }
    }
    tracing::info!(cluster = %names.cluster, namespace = %ns, reason, "{note}");
    publish(ctx, ec, EventType::Normal, reason, note).await;
    Ok(true)
}

/// The highest ordinal to record: the observed one, or the one a step gave a new member
/// once it was done (an add etcd refused took none).
fn highest_ordinal(observed: Option<u32>, step: &Step, done: bool) -> Option<u32> {
    let given = match step {
        Step::AddLearner { name } if done => plan::ordinal_of(name),
        Step::Bootstrap { members, .. } if done => members.iter().filter_map(|m| plan::ordinal_of(m)).max(),
        _ => None,
    };
    observed.max(given)
}

fn requeue_after(step: &Step) -> Duration {
    match step {
        Step::Idle => Duration::from_secs(30),
        Step::Blocked(_) => Duration::from_secs(15),
        Step::Wait(_) | Step::Bootstrap { .. } => Duration::from_secs(3),
        _ => Duration::from_secs(1),
    }
}

async fn pass(ec: &EtcdCluster, ctx: &Context) -> Result<Action, Error> {
    let ns = ec.namespace().unwrap_or_default();
    let key = (ns.clone(), ec.name_any());
    if ec.metadata.deletion_timestamp.is_some() {
        // Owner references let Kubernetes collect pods, Services, Secrets (and PVCs
        // when asked): nothing to do but forget.
        let members = ctx.forget(&key);
        ctx.metrics.forget_cluster(&key.0, &key.1, &members);
        return Ok(Action::await_change());
    }
    if !holds_lease(ctx).await? {
        tracing::warn!(cluster = %key.1, namespace = %ns, "not holding the leader-election Lease: not acting");
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let names = Names::of(ec);
    let uid = ec.uid();
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let pvcs_api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    // Straight from the API server, not a cache: a plan must see its last step's effect.
    let pods: Vec<Pod> = pods_api
        .list(&ListParams::default().labels(&member_selector(&names.cluster)))
        .await
        .map_err(kube_err("list member pods"))?
        .items
        .into_iter()
        // A pod of an earlier cluster of this name is being collected: not ours.
        .filter(|p| p.owner_references().iter().any(|o| Some(&o.uid) == uid.as_ref()))
        .collect();
    let pvcs: Vec<PersistentVolumeClaim> = if ec.spec.storage.medium == StorageMedium::Persistent {
        pvcs_api
            .list(&ListParams::default().labels(&pvc_selector(&names.cluster)))
            .await
            .map_err(kube_err("list member PVCs"))?
            .items
    } else {
        Vec::new()
    };

    let mut problems = problems(ec, &pods, &pvcs);
    if ec.spec.tls.mode == crate::api::cluster::TlsMode::Secrets
        && let Some(names) = tls::secret_names(ec)
    {
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
        for name in [names.peer, names.server, names.client] {
            if secrets.get_opt(&name).await.map_err(kube_err(format!("read Secret {name}")))?.is_none() {
                problems.push(format!("spec.tls.secrets: Secret {name} does not exist in namespace {ns}"));
            }
        }
    }
    let act_allowed = problems.is_empty() && !ec.spec.paused;
    if act_allowed {
        ensure_fixed_objects(ec, ctx, &key).await?;
        ensure_pvc_owners(ec, &pvcs, &pvcs_api).await?;
    } else if !problems.is_empty() {
        warn_once(ctx, ec, &key, "InvalidSpec", problems.join("; ")).await;
    }

    let mut endpoints: Vec<(bool, String)> =
        pods.iter().map(|p| (!observe::pod_ready(p), names.client_url(&p.name_any()))).collect();
    endpoints.sort();
    let config = if pods.is_empty() { AdminConfig::default() } else { admin_config(ec, ctx, &ns).await? };
    let admin = EtcdAdmin::new(endpoints.into_iter().map(|(_, e)| e).collect(), config);
    let view = if pods.is_empty() { None } else { observe_etcd(&admin).await };

    // How long each member has been unhealthy, and leader changes.
    let unhealthy_for: HashMap<String, u64> = ctx.with_memory(&key, |m| {
        let Some(v) = &view else { return HashMap::new() };
        let now = Instant::now();
        let mut out = HashMap::new();
        let current: Vec<String> =
            v.members.iter().filter_map(|m| m.peer_urls.iter().find_map(|u| names.member_of_peer_url(u))).collect();
        m.unhealthy_since.retain(|name, _| current.contains(name));
        for member in &v.members {
            let name = member.peer_urls.iter().find_map(|u| names.member_of_peer_url(u)).unwrap_or_default();
            let healthy = v
                .statuses
                .get(&member.id)
                .is_some_and(|s| s.is_healthy() || (member.is_learner && s.errors.is_empty()));
            if healthy {
                m.unhealthy_since.remove(&name);
            } else {
                let since = *m.unhealthy_since.entry(name.clone()).or_insert(now);
                out.insert(name, now.duration_since(since).as_secs());
            }
        }
        out
    });

    let bootstrapped = ec.status.as_ref().is_some_and(|s| s.cluster_id.is_some());
    let mut obs = observe::observation(&names, &pods, &pvcs, view.as_ref(), bootstrapped, &unhealthy_for);
    // Ordinals of members gone without a trace (pod, volume and membership) live on in
    // the status: a name is never given twice.
    let recorded = ec.status.as_ref().and_then(|s| s.highest_ordinal).and_then(|o| u32::try_from(o).ok());
    obs.highest_ordinal = obs.highest_ordinal.max(recorded);
    let want = Desired {
        size: usize::try_from(ec.spec.size).unwrap_or(0),
        version: ec.spec.version.clone(),
        paused: ec.spec.paused,
        replace_unhealthy_after_secs: u64::try_from(ec.spec.healing.replace_unhealthy_after_seconds).unwrap_or(300),
    };
    let delete_on_scale = ec.spec.storage.retention.when_scaled == RetentionAction::Delete;
    let step = if problems.is_empty() { plan::plan(&names.cluster, &want, &obs, delete_on_scale) } else { Step::Idle };
    if !matches!(step, Step::Idle | Step::Wait(_)) {
        tracing::debug!(cluster = %names.cluster, ?step, "planned");
    }
    if let Step::Blocked(why) = &step {
        warn_once(ctx, ec, &key, "Blocked", why.clone()).await;
    }
    let volumes: Vec<String> = obs.volumes.iter().cloned().collect();
    let acted = act(ec, ctx, &names, &step, view.as_ref(), &volumes, &admin).await;
    let highest_ordinal = highest_ordinal(obs.highest_ordinal, &step, matches!(acted, Ok(true)));

    // Status, whatever the step did.
    let previous = ec.status.as_ref();
    let new_status = status::build(&status::Input {
        names: &names,
        size: want.size,
        generation: ec.metadata.generation,
        pods: &pods,
        etcd: view.as_ref(),
        step: &step,
        paused: ec.spec.paused,
        problems: &problems,
        previous,
        now: Time(jiff::Timestamp::now()),
    });
    let new_status = EtcdClusterStatus { highest_ordinal: highest_ordinal.map(i64::from), ..new_status };
    record_metrics(ctx, ec, &key, &new_status, view.as_ref());
    if previous != Some(&new_status) {
        write_status(ctx, ec, &ns, new_status).await?;
    }
    if !acted? && !matches!(step, Step::Idle | Step::Wait(_) | Step::Blocked(_)) {
        tracing::info!(cluster = %names.cluster, namespace = %ns, ?step, "etcd says not yet; looking again shortly");
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    if !problems.is_empty() {
        return Ok(Action::requeue(Duration::from_secs(60)));
    }
    Ok(Action::requeue(requeue_after(&step)))
}

async fn write_status(ctx: &Context, ec: &EtcdCluster, ns: &str, status: EtcdClusterStatus) -> Result<(), Error> {
    let api: Api<EtcdCluster> = Api::namespaced(ctx.client.clone(), ns);
    let patch = json!({
        "apiVersion": EtcdCluster::api_version(&()),
        "kind": EtcdCluster::kind(&()),
        "status": status,
    });
    api.patch_status(&ec.name_any(), &PatchParams::apply(STATUS_MANAGER).force(), &Patch::Apply(&patch))
        .await
        .map_err(kube_err("write status"))?;
    Ok(())
}

fn record_metrics(
    ctx: &Context,
    ec: &EtcdCluster,
    key: &(String, String),
    s: &EtcdClusterStatus,
    view: Option<&EtcdView>,
) {
    let m = &ctx.metrics;
    let c = ClusterLabels { namespace: key.0.clone(), cluster: key.1.clone() };
    let known: Vec<&crate::api::cluster::MemberStatus> = s.members.iter().filter(|m| !m.id.is_empty()).collect();
    m.members.get_or_create(&c).set(known.len() as i64);
    m.healthy_members.get_or_create(&c).set(i64::from(s.ready_members));
    m.learners.get_or_create(&c).set(known.iter().filter(|m| m.learner).count() as i64);
    m.quota_bytes.get_or_create(&c).set(ec.spec.etcd.quota_backend_bytes);
    for member in &known {
        let l = MemberLabels { namespace: key.0.clone(), cluster: key.1.clone(), member: member.name.clone() };
        if let (Some(size), Some(used)) = (member.db_size, member.db_size_in_use) {
            m.db_size_bytes.get_or_create(&l).set(size);
            m.db_size_in_use_bytes.get_or_create(&l).set(used);
        }
    }
    let leader = view.and_then(|v| v.statuses.values().find(|s| s.is_leader()).map(|s| s.member_id));
    let names: Vec<String> = known.iter().map(|m| m.name.clone()).collect();
    let gone = ctx.with_memory(key, |mem| {
        if let Some(l) = leader {
            if mem.leader.is_some_and(|old| old != l) {
                m.leader_changes.get_or_create(&c).inc();
            }
            mem.leader = Some(l);
        }
        let gone: Vec<String> = mem.member_names.iter().filter(|n| !names.contains(n)).cloned().collect();
        mem.member_names = names.clone();
        gone
    });
    for g in gone {
        m.forget_member(&key.0, &key.1, &g);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinals_count_once_given() {
        let add = Step::AddLearner { name: "main-5".into() };
        assert_eq!(highest_ordinal(Some(4), &add, true), Some(5));
        assert_eq!(highest_ordinal(Some(4), &add, false), Some(4), "a refused add takes no ordinal");
        let boot = Step::Bootstrap { members: vec!["main-0".into(), "main-1".into(), "main-2".into()], create: vec![] };
        assert_eq!(highest_ordinal(None, &boot, true), Some(2));
        assert_eq!(highest_ordinal(Some(7), &Step::Idle, true), Some(7));
        assert_eq!(highest_ordinal(None, &Step::Wait("w".into()), false), None);
    }

    fn cluster(spec: serde_json::Value) -> EtcdCluster {
        let mut ec: EtcdCluster = serde_json::from_value(json!({
            "apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdCluster",
            "metadata": {"name": "main", "namespace": "prod", "uid": "uid-now"},
            "spec": spec,
        }))
        .unwrap();
        ec.metadata.uid = Some("uid-now".into());
        ec
    }

    fn pod(version: &str, topology: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "main-0", "annotations": {
            VERSION_ANNOTATION: version, TOPOLOGY_ANNOTATION: topology, MEDIUM_ANNOTATION: "Persistent"}}}))
        .unwrap()
    }

    #[test]
    fn problems_compare_the_spec_with_what_runs() {
        let ok = cluster(json!({"size": 3, "version": "3.5.1"}));
        assert!(problems(&ok, &[pod("3.4.23", "External")], &[]).is_empty(), "one minor up is fine");
        let jump = cluster(json!({"size": 3, "version": "3.6.0"}));
        let p = problems(&jump, &[pod("3.4.23", "External"), pod("3.5.1", "External")], &[]);
        assert!(p.len() == 1 && p[0].starts_with("spec.version"), "measured from the lowest running: {p:?}");
        let stacked = cluster(json!({"size": 3, "version": "3.4.23", "topology": "Stacked"}));
        let p = problems(&stacked, &[pod("3.4.23", "External")], &[]);
        assert!(p.len() == 1 && p[0].starts_with("spec.topology"), "{p:?}");
        assert!(problems(&stacked, &[], &[]).is_empty(), "a new cluster may pick any topology");
        let cm = cluster(
            json!({"size": 3, "version": "3.4.23", "tls": {"mode": "CertManager", "certManager": {"issuerRef": {"name": "ca"}}}}),
        );
        assert!(problems(&cm, &[], &[])[0].contains("CertManager is not supported"));
    }

    #[test]
    fn a_pvc_of_an_earlier_cluster_of_the_same_name_is_refused() {
        let ec = cluster(json!({"size": 1, "version": "3.4.23"}));
        let pvc = |uid: &str| -> PersistentVolumeClaim {
            serde_json::from_value(
                json!({"metadata": {"name": "data-main-0", "annotations": {build::CLUSTER_UID_ANNOTATION: uid}}}),
            )
            .unwrap()
        };
        assert!(problems(&ec, &[], &[pvc("uid-now")]).is_empty());
        let p = problems(&ec, &[], &[pvc("uid-old")]);
        assert!(p[0].contains("PVC data-main-0 holds data of an earlier EtcdCluster"), "{p:?}");
    }

    #[test]
    fn a_lease_counts_while_held_and_fresh() {
        let lease = |holder: &str, renewed: i64| -> Lease {
            serde_json::from_value(json!({"metadata": {"name": "l"}, "spec": {
                "holderIdentity": holder, "leaseDurationSeconds": 15,
                "renewTime": jiff::Timestamp::from_second(renewed).unwrap().to_string()}}))
            .unwrap()
        };
        let now = jiff::Timestamp::from_second(1_000).unwrap();
        assert!(lease_valid(&lease("me", 990), "me", now));
        assert!(!lease_valid(&lease("me", 980), "me", now), "expired by this clock");
        assert!(!lease_valid(&lease("other", 999), "me", now), "held by another replica");
        assert!(!lease_valid(&serde_json::from_value(json!({"metadata": {"name": "l"}})).unwrap(), "me", now));
    }

    #[test]
    fn not_yet_answers_are_waits() {
        let refusal = |msg: &str| EtcdError::Rpc {
            op: "member add",
            endpoint: "e".into(),
            source: etcd_client::Error::GRpcStatus(tonic::Status::unavailable(msg)),
        };
        assert!(not_yet(&refusal("etcdserver: unhealthy cluster")));
        assert!(not_yet(&refusal("etcdserver: can only promote a learner member which is in sync with leader")));
        assert!(!not_yet(&refusal("etcdserver: member not found")));
    }
}
