//! The EtcdCluster controller: observe -> plan -> act -> status. [`plan`], [`observe`],
//! [`build`], [`status`] and [`tls`] are pure; [`act`] does the IO of one step; this
//! module runs a pass. One membership change per pass; the next pass looks again.

pub mod act;
pub mod build;
pub mod ca_rotation;
pub mod error;
pub mod maintenance;
pub mod observe;
#[cfg(test)]
mod pass_tests;
pub mod placement;
pub mod plan;
pub mod sentinel;
pub mod status;
pub mod tls;
pub mod volumes;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use self::build::{MEDIUM_ANNOTATION, Names, TLS_MODE_ANNOTATION, TOPOLOGY_ANNOTATION, VERSION_ANNOTATION};
use self::error::Error;
use self::observe::{EtcdView, Records};
use self::plan::{Desired, Step};
use crate::api::EtcdCluster;
use crate::api::cluster::{EtcdClusterStatus, RetentionAction, StorageMedium, Topology};
use crate::api::validation;
use crate::etcd::EtcdAdmin;
use crate::metrics::{ClusterLabels, MemberLabels};
use crate::runtime::events::{EventType, publish};
use crate::runtime::operation::{self, Slot};
use crate::runtime::{Runtime, kube_ops};

/// This controller's name in the operation slot and in metrics.
pub const CONTROLLER: &str = "cluster";
/// Field manager of everything this controller applies.
pub const FIELD_MANAGER: &str = "etcd-pilot";
/// Field manager of the status fields it applies.
pub const STATUS_MANAGER: &str = "etcd-pilot-status";
/// A pass's observation must finish well inside the Lease (15 s): Kubernetes' part is
/// an error past this, etcd's part counts as no answer past [`ETCD_OBSERVE_TIMEOUT`].
const OBSERVE_TIMEOUT: Duration = Duration::from_secs(5);
const ETCD_OBSERVE_TIMEOUT: Duration = Duration::from_secs(8);
/// Operations recorded by restores are held as `restore/<name>`.
pub const RESTORE_HOLDER_PREFIX: &str = "restore/";
/// The revision in the status is brought up to date at least this often.
const REVISION_RECORD_STEP: i64 = 10_000;
/// How long after giving up on a learner another is added.
const LEARNER_RETRY_AFTER_SECS: u64 = 60;

/// (namespace, name) of a cluster.
pub type Key = (String, String);

/// What the controller remembers of a cluster between passes.
#[derive(Default)]
struct Memory {
    /// When each member was first seen unhealthy.
    unhealthy_since: HashMap<String, Instant>,
    leader: Option<u64>,
    warned_no_pdb: bool,
    /// The last Warning published for each reason, so a standing problem is not
    /// repeated every pass.
    last_warning: HashMap<String, String>,
    member_names: Vec<String>,
    /// When a learner was last given up on.
    learner_given_up: Option<Instant>,
    /// The cluster's etcd admin, kept between passes with its connections (closed while
    /// the cluster is calm).
    admin: Option<EtcdAdmin>,
    /// Since when quorum has been lost for good (a majority gone with its volumes).
    quorum_lost_since: Option<Instant>,
    /// What the Services and budget were last applied from, and when.
    fixed_applied: Option<(String, Instant)>,
    /// The largest member db file at the last idle pass, and when: a db that grows
    /// brings the next pass forward (`growth_wait`).
    db_seen: Option<DbSeen>,
    /// A member's plain `/health`, which [`sentinel`] asks between passes.
    health_url: Option<String>,
}

/// Settings of the controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Repository of etcd images; a member runs `<repository>:v<version>` unless the
    /// cluster names an image.
    pub etcd_image_repository: String,
    /// The API server serves `policy/v1` PodDisruptionBudgets.
    pub policy_v1: bool,
    /// The API server serves `policy/v1beta1` PodDisruptionBudgets (before 1.25).
    pub policy_v1beta1: bool,
    /// The cluster's DNS domain, for the fully qualified names in certificates.
    pub cluster_domain: String,
    /// The operator's own image (restored members seed their volumes with it).
    pub operator_image: String,
}

/// The controller's state: the shared runtime, its settings, its memory.
pub struct Context {
    pub rt: Arc<Runtime>,
    pub settings: Settings,
    memory: Mutex<HashMap<Key, Memory>>,
}

impl Context {
    pub fn new(rt: Arc<Runtime>, settings: Settings) -> Self {
        Self { rt, settings, memory: Mutex::new(HashMap::new()) }
    }

    fn with_memory<T>(&self, key: &Key, f: impl FnOnce(&mut Memory) -> T) -> T {
        let mut all = self.memory.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(all.entry(key.clone()).or_default())
    }

    fn forget(&self, key: &Key) -> Vec<String> {
        let mut all = self.memory.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        all.remove(key).map(|m| m.member_names).unwrap_or_default()
    }
}

/// Which PodDisruptionBudget APIs the API server serves: (`policy/v1`, `policy/v1beta1`).
pub async fn served_pdb_apis(client: &Client) -> (bool, bool) {
    let mut out = [false, false];
    for (i, gv) in ["policy/v1", "policy/v1beta1"].iter().enumerate() {
        if let Ok(list) = client.list_api_group_resources(gv).await {
            out[i] = list.resources.iter().any(|r| r.name == "poddisruptionbudgets");
        }
    }
    (out[0], out[1])
}

/// Runs the controller over one namespace (or all) until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.rt.client.clone();
    let (clusters, pods): (Api<EtcdCluster>, Api<Pod>) = match &namespace {
        Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client, ns)),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    // Between passes, the sentinel asks each cluster's /health and wakes the ones that
    // say no (an alarm such as NOSPACE, which no watched object shows).
    let (wake, woken) = futures::channel::mpsc::unbounded();
    let sentinel = tokio::spawn(sentinel::run(ctx.clone(), wake));
    let controller = Controller::new(clusters, watcher::Config::default().any_semantic())
        .owns(pods, watcher::Config::default().labels("app.kubernetes.io/managed-by=etcd-pilot").any_semantic())
        .reconcile_on(woken);
    // A deleted cluster gets no last pass (nothing to finalize: owner references clean
    // up): forget it, and drop its metric series, once it is gone from the cache.
    let store = controller.store();
    let pruner = {
        let ctx = ctx.clone();
        let namespace = namespace.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                let live: Vec<Key> =
                    store.state().iter().map(|ec| (ec.namespace().unwrap_or_default(), ec.name_any())).collect();
                let keys: Vec<Key> = {
                    let all = ctx.memory.lock().unwrap_or_else(|p| p.into_inner());
                    all.keys()
                        .filter(|k| namespace.as_ref().is_none_or(|ns| *ns == k.0) && !live.contains(k))
                        .cloned()
                        .collect()
                };
                for key in keys {
                    let members = ctx.forget(&key);
                    ctx.rt.metrics.forget_cluster(&key.0, &key.1, &members);
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
    sentinel.abort();
}

fn error_policy(ec: Arc<EtcdCluster>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(cluster = %ec.name_any(), namespace = ?ec.namespace(), %error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// One pass over one cluster.
pub async fn reconcile(ec: Arc<EtcdCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let start = Instant::now();
    let labels = ClusterLabels { namespace: ec.namespace().unwrap_or_default(), cluster: ec.name_any() };
    // Read fresh: the status written by the previous pass (maintenance records, the
    // revision) must be what this one builds on, not a cache the watch has not caught up.
    let api: Api<EtcdCluster> = Api::namespaced(ctx.rt.client.clone(), &labels.namespace);
    let result = match api.get_opt(&labels.cluster).await {
        Ok(Some(fresh)) => pass(&fresh, &ctx).await,
        Ok(None) => return Ok(Action::await_change()),
        Err(e) => Err(error::observe("read the EtcdCluster")(e)),
    };
    ctx.rt.metrics.reconcile_duration.get_or_create(&labels).observe(start.elapsed().as_secs_f64());
    if let Err(e) = &result {
        ctx.rt.metrics.count_error(&labels.namespace, &labels.cluster, CONTROLLER, e.step());
    }
    result
}

/// Publishes a Warning unless it is the one published last for this cluster.
async fn warn_once(ctx: &Context, ec: &EtcdCluster, key: &Key, reason: &str, note: String) {
    let fresh = ctx.with_memory(key, |m| m.last_warning.insert(reason.to_string(), note.clone()) != Some(note.clone()));
    if fresh {
        publish(&ctx.rt, ec, EventType::Warning, reason, &note).await;
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
    // Pods from before the mode was recorded: taken to run what the spec says.
    if let Some(mode) = annotated(TLS_MODE_ANNOTATION)
        && let Ok(m) = serde_json::from_value(serde_json::Value::String(mode))
    {
        live.tls.mode = m;
    }
    // Members trust only the CA they started with.
    if !pods.is_empty() {
        let live = annotated(build::CA_FROM_ANNOTATION).unwrap_or_default();
        let wanted = spec.tls.ca_from.as_ref().map(|c| c.cluster.clone()).unwrap_or_default();
        if live != wanted {
            let says = |c: &str| if c.is_empty() { "its own CA".to_string() } else { format!("the CA of {c}") };
            out.push(format!(
                "spec.tls.caFrom cannot change on a live cluster: its members trust {}, not {}",
                says(&live),
                says(&wanted)
            ));
        }
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

/// How often an idle cluster with a maintenance schedule (or paused) is looked at (a
/// round falls due within this).
pub const IDLE_REQUEUE_SECS: u64 = 60;
/// How often an idle cluster without one is looked at: pod changes (readiness follows
/// etcd's health) and spec changes wake a pass at once, a cluster near its quota is
/// looked at every 5 s, so this is only for what etcd alone shows (a CORRUPT alarm, the
/// revision).
pub const CALM_REQUEUE_SECS: u64 = 120;

/// How often a cluster waiting for a node that can take a member looks again.
pub const PLACEMENT_REQUEUE_SECS: u64 = 30;

/// The largest member db file (bytes) as seen at an instant.
type DbSeen = (Instant, i64);

/// The shortest wait a growing db brings the next pass to.
const GROWTH_WAIT_MIN: Duration = Duration::from_secs(5);

/// How long an idle cluster may wait when its largest db file grew from `before` to
/// `now` (bytes, at those instants): half the time it would take at that rate to reach
/// the quota's warn mark (`warn_at` bytes), between [`GROWTH_WAIT_MIN`] and `wait`. A
/// cluster filling fast is then looked at before it crosses the mark, and from there
/// every 5 s (`QuotaHigh`), so a NOSPACE it runs into is found within seconds, without
/// every calm cluster being looked at that often.
fn growth_wait(before: Option<DbSeen>, now: DbSeen, warn_at: i64, wait: Duration) -> Duration {
    let Some((then, old)) = before else { return wait };
    let (at, size) = now;
    let secs = at.saturating_duration_since(then).as_secs_f64();
    if size <= old || secs <= 0.0 {
        return wait;
    }
    let rate = (size - old) as f64 / secs;
    let left = (warn_at - size).max(0) as f64 / rate;
    Duration::from_secs_f64(left / 2.0).clamp(GROWTH_WAIT_MIN, wait)
}

/// How long an idle cluster waits for its next pass.
fn idle_requeue(ec: &EtcdCluster) -> Duration {
    // Paused: the status still follows etcd (fragmentation, alarms) for the user to see.
    let scheduled = ec.spec.compaction.schedule.is_some() || ec.spec.defrag.schedule.is_some() || ec.spec.paused;
    Duration::from_secs(if scheduled { IDLE_REQUEUE_SECS } else { CALM_REQUEUE_SECS })
}

fn requeue_after(step: &Step) -> Duration {
    match step {
        Step::Idle => Duration::from_secs(IDLE_REQUEUE_SECS),
        Step::Blocked(_) => Duration::from_secs(15),
        Step::Wait(_) | Step::Bootstrap { .. } => Duration::from_secs(2),
        _ => Duration::from_secs(1),
    }
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

/// Member volumes against `spec.storage.size`; the StorageClass is read only when a
/// claim has to grow.
async fn observe_sizing(
    ec: &EtcdCluster,
    ctx: &Context,
    pvcs: &[PersistentVolumeClaim],
) -> Result<volumes::Sizing, Error> {
    use k8s_openapi::api::storage::v1::StorageClass;
    let want = &ec.spec.storage.size.0;
    let claims = act::member_claims(pvcs);
    let first = volumes::sizing(want, &claims, &|_| Some(true));
    let volumes::Sizing::Grow(_) = first else { return Ok(first) };
    let mut classes = BTreeMap::new();
    for class in claims.iter().filter_map(|c| c.class.clone()) {
        if classes.contains_key(&class) {
            continue;
        }
        let sc = Api::<StorageClass>::all(ctx.rt.client.clone())
            .get_opt(&class)
            .await
            .map_err(error::observe(format!("read StorageClass {class}")))?;
        classes.insert(class, sc.map(|sc| sc.allow_volume_expansion == Some(true)));
    }
    Ok(volumes::sizing(want, &claims, &|c| classes.get(c).copied().flatten()))
}

/// The nodes that can take a member of a cluster whose members never share a node.
async fn placeable_nodes(ec: &EtcdCluster, ctx: &Context) -> Result<Vec<String>, Error> {
    use k8s_openapi::api::core::v1::Node;
    let nodes: Api<Node> = Api::all(ctx.rt.client.clone());
    let list = nodes.list(&ListParams::default()).await.map_err(error::observe("list nodes"))?;
    let join = build::Join { initial_cluster: Vec::new(), existing: true };
    let pod =
        build::member_pod(ec, "placement", &join, &ctx.settings.etcd_image_repository, &ctx.settings.operator_image);
    Ok(placement::placeable_nodes(&pod, &list.items))
}

/// Pods and PVCs of the cluster, straight from the API server (not a cache: a plan must
/// see its last step's effect).
async fn observe_kube(
    ec: &EtcdCluster,
    ctx: &Context,
    names: &Names,
) -> Result<(Vec<Pod>, Vec<PersistentVolumeClaim>), Error> {
    let uid = ec.uid();
    let pods_api: Api<Pod> = Api::namespaced(ctx.rt.client.clone(), &names.namespace);
    let pvcs_api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.rt.client.clone(), &names.namespace);
    let pods: Vec<Pod> = pods_api
        .list(&ListParams::default().labels(&member_selector(&names.cluster)))
        .await
        .map_err(error::observe("list member pods"))?
        .items
        .into_iter()
        // A pod of an earlier cluster of this name is being collected: not ours.
        .filter(|p| p.owner_references().iter().any(|o| Some(&o.uid) == uid.as_ref()))
        .collect();
    let pvcs: Vec<PersistentVolumeClaim> = if ec.spec.storage.medium == StorageMedium::Persistent {
        pvcs_api
            .list(&ListParams::default().labels(&pvc_selector(&names.cluster)))
            .await
            .map_err(error::observe("list member PVCs"))?
            .items
    } else {
        Vec::new()
    };
    Ok((pods, pvcs))
}

async fn pass(ec: &EtcdCluster, ctx: &Context) -> Result<Action, Error> {
    let ns = ec.namespace().unwrap_or_default();
    let key: Key = (ns.clone(), ec.name_any());
    if ec.metadata.deletion_timestamp.is_some() {
        // Owner references let Kubernetes collect pods, Services, Secrets (and PVCs
        // when asked): nothing to do but forget.
        let members = ctx.forget(&key);
        ctx.rt.metrics.forget_cluster(&key.0, &key.1, &members);
        return Ok(Action::await_change());
    }
    if !ctx.rt.lease.holds(&ctx.rt.client).await.map_err(Error::Lease)? {
        tracing::warn!(cluster = %key.1, namespace = %ns, "not holding the leader-election Lease: not acting");
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    let names = Names::of(ec);

    // Observe, bounded in time: what follows acts on it, and must do so while the Lease
    // read above still holds.
    let observed = tokio::time::timeout(OBSERVE_TIMEOUT, async {
        let (pods, pvcs) = observe_kube(ec, ctx, &names).await?;
        let mut problems = problems(ec, &pods, &pvcs);
        if ec.spec.tls.mode == crate::api::cluster::TlsMode::Secrets
            && let Some(names) = tls::secret_names(ec)
        {
            let secrets: Api<Secret> = Api::namespaced(ctx.rt.client.clone(), &ns);
            for name in [names.peer, names.server, names.client] {
                if secrets.get_opt(&name).await.map_err(error::observe(format!("read Secret {name}")))?.is_none() {
                    problems.push(format!("spec.tls.secrets: Secret {name} does not exist in namespace {ns}"));
                }
            }
        }
        if let Some(from) = &ec.spec.tls.ca_from
            && ec.spec.tls.mode == crate::api::cluster::TlsMode::Operator
        {
            let secrets: Api<Secret> = Api::namespaced(ctx.rt.client.clone(), &ns);
            let name = tls::ca_secret_of(ec);
            if secrets.get_opt(&name).await.map_err(error::observe(format!("read Secret {name}")))?.is_none() {
                problems.push(format!(
                    "spec.tls.caFrom: waiting for the CA of EtcdCluster {} (Secret {name} in namespace {ns})",
                    from.cluster
                ));
            }
        }
        let members_exist = !pods.is_empty() || !pvcs.is_empty() || act::cluster_id_recorded(ec);
        let act_allowed = problems.is_empty() && !ec.spec.paused;
        let mut fixed = act::Fixed::default();
        if act_allowed {
            fixed = act::ensure_fixed_objects(ec, ctx, &key, &pods, members_exist).await?;
            let pvcs_api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.rt.client.clone(), &ns);
            act::ensure_pvc_owners(ec, &pvcs, &pvcs_api).await?;
            act::sweep_removed_volumes(&pvcs, &pods, &pvcs_api).await?;
        }
        let sizing = observe_sizing(ec, ctx, &pvcs).await?;
        if act_allowed && let volumes::Sizing::Grow(claims) = &sizing {
            let pvcs_api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.rt.client.clone(), &ns);
            act::grow_volumes(ec, ctx, &pvcs_api, claims, &ec.spec.storage.size.0).await?;
        }
        // A pod whose every container the kubelet reports terminated serves nothing: asking
        // it would cost the pass a connect timeout (a deleted member's pod lingering).
        let mut endpoints: Vec<(bool, String)> = pods
            .iter()
            .filter(|p| !observe::containers_gone(p))
            .map(|p| (!observe::pod_ready(p), names.client_url(&p.name_any())))
            .collect();
        endpoints.sort();
        let config = if pods.is_empty() {
            crate::etcd::AdminConfig::default()
        } else {
            act::admin_config(ec, ctx, &ns, fixed.client_secret.take()).await?
        };
        let endpoints: Vec<String> = endpoints.into_iter().map(|(_, e)| e).collect();
        // One admin per cluster, kept with its connections: re-made only when the
        // certificates change, and pointed at the members of the moment. A calm cluster
        // lets its connections go between passes (see `idle_requeue`).
        let admin = ctx.with_memory(&key, |m| {
            let a = match &m.admin {
                Some(a) => a.retarget(endpoints, config),
                None => EtcdAdmin::new(endpoints, config),
            };
            m.admin = Some(a.clone());
            a
        });
        Ok::<_, Error>((pods, pvcs, problems, fixed, admin, sizing))
    })
    .await
    .map_err(|_| Error::ObserveTimeout(OBSERVE_TIMEOUT))?;
    let (pods, pvcs, problems, fixed, admin, sizing) = observed?;
    if let volumes::Sizing::Refused { reason, message } = &sizing {
        warn_once(ctx, ec, &key, reason, message.clone()).await;
    }
    // Members that do not answer in time (frozen, partitioned) are no answer.
    let view = if pods.is_empty() {
        None
    } else {
        tokio::time::timeout(ETCD_OBSERVE_TIMEOUT, act::observe_etcd(&admin)).await.ok().flatten()
    };
    if !problems.is_empty() {
        warn_once(ctx, ec, &key, "InvalidSpec", problems.join("; ")).await;
    }
    match &fixed.certificates {
        tls::CertState::Lost(why) => warn_once(ctx, ec, &key, "CertificateAuthorityLost", why.clone()).await,
        tls::CertState::RotationRefused(why) => warn_once(ctx, ec, &key, "CARotationRefused", why.clone()).await,
        _ => {}
    }
    let not_running: Vec<String> =
        pods.iter().filter_map(|p| observe::pod_problem(p).map(|why| format!("{}: {why}", p.name_any()))).collect();
    if !not_running.is_empty() {
        warn_once(ctx, ec, &key, "MemberNotRunning", not_running.join("; ")).await;
    }

    // Durable evidence that the cluster formed, recorded as soon as etcd says so.
    if let Some(id) = view.as_ref().and_then(|v| v.statuses.values().map(|s| s.cluster_id).find(|id| *id != 0)) {
        act::record_cluster_id(ec, ctx, &pvcs, &format!("{id:x}")).await?;
    }

    let unhealthy_for = track_health(ctx, &key, &names, view.as_ref());
    let health_url = pods
        .iter()
        .filter(|p| observe::pod_ready(p))
        .find_map(|p| p.status.as_ref().and_then(|s| s.pod_ip.as_deref()).map(sentinel::health_url));
    ctx.with_memory(&key, |m| m.health_url = health_url);
    let records = Records { cluster_id_recorded: act::cluster_id_recorded(ec), bootstrap: act::recorded_bootstrap(ec) };
    let mut obs =
        observe::observation(&names, &pods, &pvcs, view.as_ref(), &records, &unhealthy_for, jiff::Timestamp::now());
    // Ordinals of members gone without a trace (pod, volume and membership) live on in
    // the status: a name is never given twice.
    let recorded = ec.status.as_ref().and_then(|s| s.highest_ordinal).and_then(|o| u32::try_from(o).ok());
    obs.highest_ordinal = obs.highest_ordinal.max(recorded);
    obs.since_learner_given_up = ctx.with_memory(&key, |m| m.learner_given_up.map(|t| t.elapsed().as_secs()));
    obs.maintenance = maintenance_observed(ec, &names, view.as_ref(), jiff::Timestamp::now());
    if placement::one_per_node(ec) {
        obs.placeable_nodes = Some(placeable_nodes(ec, ctx).await?);
    }
    let placement = plan::placement(&names.cluster, ec.spec.size.max(0) as usize, &obs);
    if let Some((reason, message)) = &placement {
        warn_once(ctx, ec, &key, reason, message.clone()).await;
    }
    let slot = operation::decide(operation::recorded(ec).as_ref(), CONTROLLER, jiff::Timestamp::now());
    if let Slot::Busy(op) = &slot {
        obs.slot_busy = Some(format!("{} {}", op.controller, op.kind));
    }
    let want = Desired {
        trust: fixed.trust.as_ref().filter(|(_, rotating)| *rotating).map(|(fp, _)| fp.clone()),
        ..desired(ec, &ctx.settings.etcd_image_repository)
    };
    let delete_on_scale = ec.spec.storage.retention.when_scaled == RetentionAction::Delete;
    let step = match &slot {
        // A restore replaces the members: the planner stands down entirely, even from
        // steps that are not disruptive (recreating a pod it stopped would undo it).
        Slot::Busy(op) if op.controller.starts_with(RESTORE_HOLDER_PREFIX) => {
            Step::Wait(format!("{} holds the cluster: restoring", op.controller))
        }
        _ if problems.is_empty() => plan::plan(&names.cluster, &want, &obs, delete_on_scale),
        _ => Step::Idle,
    };
    if !matches!(step, Step::Idle | Step::Wait(_)) {
        tracing::debug!(cluster = %names.cluster, ?step, "planned");
    }
    if let Step::Blocked(why) = &step {
        warn_once(ctx, ec, &key, "Blocked", why.clone()).await;
    }
    // Opt-in: recovery from quorum loss, once it has lasted long enough.
    let lost = plan::quorum_lost_for_good(&obs);
    let lost_for = ctx.with_memory(&key, |m| match &lost {
        Some(_) => Some(m.quorum_lost_since.get_or_insert_with(Instant::now).elapsed()),
        None => {
            m.quorum_lost_since = None;
            None
        }
    });
    if let (Some(after), Some(lost), Some(lost_for)) =
        (ec.spec.healing.recover_quorum_loss_after_seconds, &lost, lost_for)
        && lost_for.as_secs() >= u64::try_from(after).unwrap_or(u64::MAX)
        && !matches!(&slot, Slot::Busy(op) if op.controller.starts_with(RESTORE_HOLDER_PREFIX))
    {
        if let Some(note) = act::start_quorum_recovery(ec, ctx, &names, view.as_ref(), &obs, lost).await? {
            publish(&ctx.rt, ec, EventType::Warning, "QuorumRecoveryStarted", &note).await;
        }
        if ec.spec.backup.is_none() {
            warn_once(
                ctx,
                ec,
                &key,
                "QuorumRecoveryImpossible",
                "healing.recoverQuorumLossAfterSeconds is set, but the cluster has no spec.backup to stage the survivor's snapshot in".into(),
            )
            .await;
        }
    }

    // Act: a bootstrap is recorded before its first pod, a disruptive step fenced.
    let mut fenced = None;
    let mut outcome = maintenance::Outcome::None;
    if let Step::Bootstrap { members, .. } = &step
        && obs.bootstrap.is_none()
        && !act::record_bootstrap(ec, ctx, members).await?
    {
        fenced = Some("the cluster changed since it was read".to_string());
    }
    if fenced.is_none() && step.disruptive() {
        fenced = act::fence(ec, ctx, &step).await?;
    }
    let acted = match &fenced {
        Some(why) => {
            tracing::info!(cluster = %names.cluster, namespace = %ns, ?step, why, "not acting: fenced");
            Ok(false)
        }
        None if matches!(step, Step::Compact { .. } | Step::Defragment { .. } | Step::Disarm { .. }) => {
            act::maintain(ec, ctx, &names, &step, view.as_ref(), &admin).await.map(|(done, o)| {
                outcome = o;
                done
            })
        }
        None => {
            let volumes: Vec<String> = obs.volumes.iter().cloned().collect();
            let making = act::Making { volumes: &volumes, trust: fixed.trust.as_ref().map(|(fp, _)| fp.as_str()) };
            act::act(ec, ctx, &names, &step, view.as_ref(), making, &admin).await
        }
    };
    if matches!(acted, Ok(true))
        && let Step::RemoveMember { name, .. } = &step
        && obs.members.iter().flatten().any(|m| m.learner && &m.name == name)
    {
        ctx.with_memory(&key, |m| m.learner_given_up = Some(Instant::now()));
        warn_once(ctx, ec, &key, "LearnerGivenUp", status::describe(&step).1).await;
    }
    if slot == Slot::Ours && plan::releases_slot(&step, lost.is_some(), placement.is_some()) {
        let api: Api<EtcdCluster> = Api::namespaced(ctx.rt.client.clone(), &ns);
        operation::release(&api, ec, CONTROLLER).await.map_err(error::record("release the operation slot"))?;
    }
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
        certificates: &fixed.certificates,
        previous,
        now: Time(jiff::Timestamp::now()),
        quota: ec.spec.etcd.quota_backend_bytes,
        warn_at_percent: i64::from(ec.spec.quota.warn_at_percent),
        compaction_conflict: compaction_conflict(ec),
        outcome: &outcome,
        storage: volumes::condition(&sizing, &ec.spec.storage.size.0),
        placement: placement.as_ref().map(|(r, m)| (*r, m.as_str())),
        spec_version: &ec.spec.version,
    });
    if let Some(c) = new_status.conditions.iter().find(|c| c.type_ == status::VERSION_SUPPORTED && c.status == "False")
    {
        warn_once(ctx, ec, &key, &c.reason.clone(), c.message.clone()).await;
    }
    let new_status = EtcdClusterStatus { highest_ordinal: highest_ordinal.map(i64::from), ..new_status };
    record_metrics(ctx, ec, &key, &new_status, view.as_ref());
    if ec.spec.tls.mode == crate::api::cluster::TlsMode::Operator {
        ctx.rt.metrics.set_certificate_expiries(&key.0, &key.1, &fixed.expiries);
    }
    record_maintenance(ctx, ec, &key, &new_status, &outcome).await;
    let unchanged = previous.is_some_and(|p| {
        // The revision alone is recorded only every REVISION_RECORD_STEP revisions: a
        // status write (and the pass it triggers) per write to etcd would be a loop.
        let rev_moved = new_status.revision.unwrap_or(0) - p.revision.unwrap_or(0) >= REVISION_RECORD_STEP;
        // Other controllers' fields and conditions are theirs.
        let own: Vec<_> =
            p.conditions.iter().filter(|c| new_status.conditions.iter().any(|n| n.type_ == c.type_)).cloned().collect();
        !rev_moved
            && EtcdClusterStatus {
                last_backup: None,
                api_server: None,
                conditions: own,
                revision: new_status.revision,
                ..p.clone()
            } == new_status
    });
    if !unchanged {
        let api: Api<EtcdCluster> = Api::namespaced(ctx.rt.client.clone(), &ns);
        let value = serde_json::to_value(&new_status).unwrap_or_default();
        kube_ops::apply_status(&api, STATUS_MANAGER, &ec.name_any(), value).await.map_err(Error::Status)?;
    }
    if fenced.is_some() {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if !acted? && !matches!(step, Step::Idle | Step::Wait(_) | Step::Blocked(_)) {
        tracing::info!(cluster = %names.cluster, namespace = %ns, ?step, "etcd says not yet; looking again shortly");
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    if !problems.is_empty() {
        return Ok(Action::requeue(Duration::from_secs(60)));
    }
    // Waiting for a node to take a member: a pod the scheduler places wakes a pass by
    // its watch event; a node added is looked for every 30 s, not at the pace of a step.
    if placement.is_some() && matches!(step, Step::Wait(_)) {
        return Ok(Action::requeue(Duration::from_secs(PLACEMENT_REQUEUE_SECS)));
    }
    // A cluster near its quota is looked at often: NOSPACE is then found within seconds.
    let near_full = new_status.conditions.iter().any(|c| c.type_ == status::QUOTA_HIGH && c.status == "True");
    if near_full && step == Step::Idle {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    // Idle with a member not (yet) healthy, e.g. one just promoted that etcd does not
    // report healthy at once: its pod is ready already, so no pod change wakes a pass.
    let settling = new_status.ready_members as usize != want.size || new_status.members.iter().any(|m| !m.healthy);
    // A CA rotation moves on when members serve and trust what it waits for, which no
    // watched object tells.
    let rotating = matches!(fixed.certificates, tls::CertState::Rotating(_));
    // Every pod ready and a member still not healthy: one just promoted, which etcd
    // reports healthy within a second or two; looked at every second until it does (a
    // member that is down has a pod that is not ready, and waits the 5 s).
    if settling && step == Step::Idle && pods.iter().all(observe::pod_ready) {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if (settling || rotating) && step == Step::Idle {
        return Ok(Action::requeue(Duration::from_secs(5)));
    }
    if step == Step::Idle {
        let largest = new_status.members.iter().filter_map(|m| m.db_size).max().unwrap_or(0);
        let warn_at = ec.spec.etcd.quota_backend_bytes / 100 * i64::from(ec.spec.quota.warn_at_percent);
        let now = (Instant::now(), largest);
        let before = ctx.with_memory(&key, |m| m.db_seen.replace(now));
        let wait = growth_wait(before, now, warn_at, idle_requeue(ec));
        // A calm cluster's next pass is minutes away: one TLS handshake then costs less
        // than a connection kept meanwhile (benchmarks.md, cost per cluster).
        if wait >= Duration::from_secs(CALM_REQUEUE_SECS) {
            admin.disconnect();
        }
        return Ok(Action::requeue(wait));
    }
    Ok(Action::requeue(requeue_after(&step)))
}

/// Why two compactors are configured on this cluster, if they are.
fn compaction_conflict(ec: &EtcdCluster) -> Option<String> {
    let schedule = ec.spec.compaction.schedule.as_ref()?;
    let retention = ec.spec.etcd.auto_compaction_retention.trim();
    let amount: f64 = retention.trim_end_matches(|c: char| c.is_ascii_alphabetic()).parse().unwrap_or(0.0);
    (amount > 0.0).then(|| {
        format!(
            "spec.compaction.schedule ({schedule}) and etcd's own auto-compaction (spec.etcd.autoCompactionRetention: {retention}) both compact this cluster: keep one (and none at all when kube-apiserver compacts it)"
        )
    })
}

/// What maintenance looks at: each voter's db with the status' records, alarms, the
/// revision, and which scheduled rounds are due. `None` without an answer from etcd.
fn maintenance_observed(
    ec: &EtcdCluster,
    names: &Names,
    view: Option<&EtcdView>,
    now: jiff::Timestamp,
) -> Option<maintenance::Observed> {
    let view = view?;
    let status = ec.status.as_ref();
    let mut members = Vec::new();
    for m in view.members.iter().filter(|m| !m.is_learner) {
        let Some(s) = view.statuses.get(&m.id) else { continue };
        let name = m.peer_urls.iter().find_map(|u| names.member_of_peer_url(u)).unwrap_or_else(|| m.name.clone());
        let recorded = status.and_then(|st| st.members.iter().find(|r| r.name == name));
        members.push(maintenance::MemberDb {
            name,
            id: m.id,
            leader: s.is_leader(),
            db_size: s.db_size,
            in_use: s.db_size_in_use,
            last_defrag: recorded.and_then(|r| r.last_defragmentation.as_ref()).map(|d| d.time.0),
            failures: recorded.map_or(0, |r| u32::try_from(r.defrag_failures).unwrap_or(0)),
            last_failure: recorded.and_then(|r| r.last_defrag_failure.as_ref()).map(|t| t.0),
        });
    }
    let alarms = observe::alarms(view);
    let created = ec.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
    let slot = |cron: &Option<String>, since: jiff::Timestamp| {
        let cron = validation::parse_cron(cron.as_ref()?).ok()?;
        crate::controllers::schedule::plan::due_slot(&cron, &jiff::tz::TimeZone::UTC, since, now)
    };
    let recorded = status.and_then(|s| s.maintenance.as_ref());
    let last_compaction = recorded.and_then(|m| m.last_compaction.as_ref()).map(|c| c.time.0);
    Some(maintenance::Observed {
        now,
        members,
        no_space: alarms.iter().any(|a| a == "NOSPACE"),
        corrupt: alarms.iter().any(|a| a == "CORRUPT"),
        recovery: recorded.and_then(|m| m.no_space.as_ref()).map(|r| maintenance::Recovery {
            compacted: r.compacted.as_ref().map(|t| t.0),
            all_history: r.all_history,
        }),
        revision: view.statuses.values().map(|s| s.revision).max().unwrap_or(0),
        defrag_slot: slot(&ec.spec.defrag.schedule, created),
        compaction_due: slot(&ec.spec.compaction.schedule, last_compaction.unwrap_or(created).max(created)).is_some(),
    })
}

/// Events and metrics of maintenance: a finished NOSPACE recovery, a quota near full,
/// defragmentation figures.
async fn record_maintenance(
    ctx: &Context,
    ec: &EtcdCluster,
    key: &Key,
    s: &EtcdClusterStatus,
    outcome: &maintenance::Outcome,
) {
    let m = &ctx.rt.metrics;
    let c = ClusterLabels { namespace: key.0.clone(), cluster: key.1.clone() };
    match outcome {
        maintenance::Outcome::Disarmed { .. } => {
            m.nospace_recoveries.get_or_create(&c).inc();
            if let Some(r) = s.maintenance.as_ref().and_then(|m| m.last_no_space_recovery.as_ref()) {
                publish(&ctx.rt, ec, EventType::Normal, "NoSpaceRecovered", &maintenance::describe_recovery(r)).await;
            }
        }
        maintenance::Outcome::Compacted { .. } => {
            m.compactions.get_or_create(&c).inc();
        }
        maintenance::Outcome::Defragmented { .. } | maintenance::Outcome::DefragFailed { .. } => {
            let ok = matches!(outcome, maintenance::Outcome::Defragmented { .. });
            let l = crate::metrics::BackupResultLabels {
                namespace: key.0.clone(),
                cluster: key.1.clone(),
                result: if ok { "success" } else { "failure" }.into(),
            };
            m.defrags.get_or_create(&l).inc();
        }
        maintenance::Outcome::None => {}
    }
    for member in s.members.iter().filter(|m| !m.id.is_empty()) {
        let l = MemberLabels { namespace: key.0.clone(), cluster: key.1.clone(), member: member.name.clone() };
        if let Some(p) = member.quota_used_percent {
            let ratio = member.db_size.unwrap_or(0) as f64 / ec.spec.etcd.quota_backend_bytes.max(1) as f64;
            m.quota_used_ratio.get_or_create(&l).set(if p >= 0 { ratio } else { 0.0 });
        }
        if let (Some(size), Some(used)) = (member.db_size, member.db_size_in_use) {
            let frag = if size > 0 { (size - used).max(0) as f64 / size as f64 } else { 0.0 };
            m.fragmentation_ratio.get_or_create(&l).set(frag);
        }
        if let Some(d) = &member.last_defragmentation {
            m.last_defrag_timestamp.get_or_create(&l).set(d.time.0.as_second());
            m.last_defrag_blocked.get_or_create(&l).set(d.blocked_millis as f64 / 1000.0);
        }
    }
    // NOSPACE and CORRUPT: a Warning when raised (CORRUPT is never disarmed here).
    if let Some(cond) = s.conditions.iter().find(|c| c.type_ == status::ALARM && c.status == "True") {
        warn_once(ctx, ec, key, "AlarmRaised", cond.message.clone()).await;
    }
    if let Some(cond) = s.conditions.iter().find(|c| c.type_ == status::QUOTA_HIGH && c.status == "True") {
        warn_once(ctx, ec, key, "QuotaHigh", cond.message.clone()).await;
    }
    if let Some(cond) = s.conditions.iter().find(|c| c.type_ == status::COMPACTION_CONFLICT && c.status == "True") {
        warn_once(ctx, ec, key, "CompactionConflict", cond.message.clone()).await;
    }
}

/// What the user asked for, as the planner reads it.
fn desired(ec: &EtcdCluster, repository: &str) -> Desired {
    Desired {
        size: usize::try_from(ec.spec.size).unwrap_or(0),
        version: ec.spec.version.clone(),
        spec_hash: build::spec_hash(ec, repository),
        trust: None,
        paused: ec.spec.paused,
        replace_unhealthy_after_secs: u64::try_from(ec.spec.healing.replace_unhealthy_after_seconds).unwrap_or(300),
        learner_retry_after_secs: LEARNER_RETRY_AFTER_SECS,
        memory: ec.spec.storage.medium == StorageMedium::Memory,
        allow_data_loss: ec.spec.storage.allow_data_loss,
        one_per_node: placement::one_per_node(ec),
        maintenance: Some(maintenance::Policy {
            defrag_enabled: ec.spec.defrag.enabled,
            threshold_percent: i64::from(ec.spec.defrag.fragmentation_threshold_percent),
            min_db_size: ec.spec.defrag.min_db_size_bytes,
            retain_revisions: ec.spec.compaction.retain_revisions,
            remediate_no_space: ec.spec.quota.remediate_no_space,
            quota: ec.spec.etcd.quota_backend_bytes,
        }),
    }
}

/// How long each member has been unhealthy (by the one definition of member health),
/// kept between passes.
fn track_health(ctx: &Context, key: &Key, names: &Names, view: Option<&EtcdView>) -> HashMap<String, u64> {
    ctx.with_memory(key, |m| {
        let Some(v) = view else { return HashMap::new() };
        let now = Instant::now();
        let mut out = HashMap::new();
        let current: Vec<String> =
            v.members.iter().filter_map(|m| m.peer_urls.iter().find_map(|u| names.member_of_peer_url(u))).collect();
        m.unhealthy_since.retain(|name, _| current.contains(name));
        for member in &v.members {
            let name = member.peer_urls.iter().find_map(|u| names.member_of_peer_url(u)).unwrap_or_default();
            if observe::member_healthy(v.statuses.get(&member.id), member.is_learner) {
                m.unhealthy_since.remove(&name);
            } else {
                let since = *m.unhealthy_since.entry(name.clone()).or_insert(now);
                out.insert(name, now.duration_since(since).as_secs());
            }
        }
        out
    })
}

fn record_metrics(ctx: &Context, ec: &EtcdCluster, key: &Key, s: &EtcdClusterStatus, view: Option<&EtcdView>) {
    let m = &ctx.rt.metrics;
    let c = ClusterLabels { namespace: key.0.clone(), cluster: key.1.clone() };
    let known: Vec<&crate::api::cluster::MemberStatus> = s.members.iter().filter(|m| !m.id.is_empty()).collect();
    m.members.get_or_create(&c).set(known.len() as i64);
    m.healthy_members.get_or_create(&c).set(i64::from(s.ready_members));
    m.learners.get_or_create(&c).set(known.iter().filter(|m| m.learner).count() as i64);
    m.desired_members.get_or_create(&c).set(i64::from(ec.spec.size));
    m.has_leader.get_or_create(&c).set(i64::from(s.members.iter().any(|m| m.leader)));
    m.quota_warn_ratio.get_or_create(&c).set(f64::from(ec.spec.quota.warn_at_percent) / 100.0);
    if let Some(v) = view {
        m.set_alarms(&key.0, &key.1, &observe::alarms(v));
    }
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
    use crate::etcd::EtcdError;
    use serde_json::json;

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
        let mut operator_tls = pod("3.4.23", "External");
        operator_tls
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(TLS_MODE_ANNOTATION.into(), "Operator".into());
        let plain = cluster(json!({"size": 3, "version": "3.4.23", "tls": {"mode": "Disabled"}}));
        let p = problems(&plain, &[operator_tls], &[]);
        assert!(p.len() == 1 && p[0].starts_with("spec.tls.mode"), "{p:?}");
        let cm = cluster(
            json!({"size": 3, "version": "3.4.23", "tls": {"mode": "CertManager", "certManager": {"issuerRef": {"name": "ca"}}}}),
        );
        assert!(problems(&cm, &[], &[])[0].contains("CertManager is not supported"));
    }

    #[test]
    fn a_growing_db_brings_the_next_pass_forward() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let calm = Duration::from_secs(CALM_REQUEUE_SECS);
        const MIB: i64 = 1 << 20;
        let warn = 800 * MIB;
        let rows: &[(Option<DbSeen>, DbSeen, Duration)] = &[
            // First look, or nothing grew (or it shrank): the usual wait.
            (None, (at(0), 100 * MIB), calm),
            (Some((at(0), 100 * MIB)), (at(120), 100 * MIB), calm),
            (Some((at(0), 300 * MIB)), (at(120), 100 * MIB), calm),
            // 1 MiB/s with 600 MiB to the mark: 300 s, capped at the usual wait.
            (Some((at(0), 80 * MIB)), (at(120), 200 * MIB), calm),
            // 5 MiB/s with 200 MiB to go: 40 s, looked at after 20 s.
            (Some((at(0), 0)), (at(120), 600 * MIB), Duration::from_secs(20)),
            // Past the mark already (QuotaHigh takes over) or very fast: the floor.
            (Some((at(0), 0)), (at(120), 900 * MIB), GROWTH_WAIT_MIN),
            (Some((at(0), 0)), (at(5), 700 * MIB), GROWTH_WAIT_MIN),
            // No time passed: no rate.
            (Some((at(5), 0)), (at(5), 700 * MIB), calm),
        ];
        for (i, (before, now, want)) in rows.iter().enumerate() {
            assert_eq!(growth_wait(*before, *now, warn, calm), *want, "row {i}");
        }
    }

    #[test]
    fn calm_clusters_are_looked_at_less_often_than_scheduled_or_paused_ones() {
        let calm = cluster(json!({"size": 3, "version": "3.5.1"}));
        assert_eq!(idle_requeue(&calm), Duration::from_secs(CALM_REQUEUE_SECS));
        for spec in [
            json!({"size": 3, "version": "3.5.1", "compaction": {"schedule": "@hourly"}}),
            json!({"size": 3, "version": "3.5.1", "defrag": {"schedule": "0 3 * * *"}}),
            json!({"size": 3, "version": "3.5.1", "paused": true}),
        ] {
            assert_eq!(idle_requeue(&cluster(spec.clone())), Duration::from_secs(IDLE_REQUEUE_SECS), "{spec}");
        }
    }

    #[test]
    fn two_compactors_are_named() {
        let one = cluster(json!({"size": 3, "version": "3.5.1", "compaction": {"schedule": "@hourly"}}));
        assert_eq!(compaction_conflict(&one), None, "etcd's own auto-compaction is off by default (0)");
        let etcd_only = cluster(json!({"size": 3, "version": "3.5.1", "etcd": {"autoCompactionRetention": "1h"}}));
        assert_eq!(compaction_conflict(&etcd_only), None);
        let off = cluster(
            json!({"size": 3, "version": "3.5.1", "compaction": {"schedule": "@hourly"}, "etcd": {"autoCompactionRetention": "0h"}}),
        );
        assert_eq!(compaction_conflict(&off), None);
        let both = cluster(
            json!({"size": 3, "version": "3.5.1", "compaction": {"schedule": "@hourly"}, "etcd": {"autoCompactionRetention": "1h"}}),
        );
        assert!(compaction_conflict(&both).is_some_and(|w| w.contains("both compact this cluster")));
        let revisions = cluster(
            json!({"size": 3, "version": "3.5.1", "compaction": {"schedule": "@hourly"}, "etcd": {"autoCompactionMode": "Revision", "autoCompactionRetention": "1000"}}),
        );
        assert!(compaction_conflict(&revisions).is_some());
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
    fn not_yet_answers_are_waits() {
        let refusal = |msg: &str| EtcdError::Rpc {
            op: "member add",
            endpoint: "e".into(),
            source: etcd_client::Error::GRpcStatus(tonic::Status::unavailable(msg)),
        };
        assert!(act::not_yet(&refusal("etcdserver: unhealthy cluster")));
        assert!(act::not_yet(&refusal("etcdserver: can only promote a learner member which is in sync with leader")));
        assert!(!act::not_yet(&refusal("etcdserver: member not found")));
    }
}
