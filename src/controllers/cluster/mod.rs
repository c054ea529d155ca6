//! The EtcdCluster controller: observe -> plan -> act -> status. [`read`] reads;
//! [`upkeep`], [`plan`], [`observe`], [`build`], [`status`] and [`tls`] are pure;
//! [`objects`] makes the upkeep's writes and [`act`] the step's; this module runs a pass.
//! One membership change per pass; the next pass looks again.

pub mod act;
pub mod build;
pub mod ca_rotation;
pub mod context;
pub mod error;
#[cfg(test)]
mod fixtures;
pub mod maintenance;
pub mod objects;
pub mod observe;
#[cfg(test)]
mod pass_tests;
pub mod placement;
pub mod plan;
pub mod read;
pub mod report;
pub mod requeue;
pub mod sentinel;
pub mod status;
pub mod step;
pub mod tls;
pub mod upkeep;
pub mod validate;
pub mod volumes;

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::watcher;

pub use self::context::{CONTROLLER, Context, FIELD_MANAGER, Key, STATUS_MANAGER, Settings, served_pdb_apis};
use self::context::{ETCD_OBSERVE_TIMEOUT, OBSERVE_TIMEOUT, REVISION_RECORD_STEP};
use self::error::Error;
use self::observe::Records;
use self::plan::Desired;
use self::step::Step;
use crate::api::EtcdCluster;
use crate::api::cluster::{EtcdClusterStatus, RetentionAction};
use crate::etcd::EtcdAdmin;
use crate::metrics::ClusterLabels;
use crate::runtime::events::{EventType, publish};
use crate::runtime::kube_ops;
use crate::runtime::operation::{self, Slot};
use crate::runtime::runner::{self, LeaseRead, PassError};
use crate::shared::names::Names;

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
    let controller = runner::controller(clusters)
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
    runner::run(CONTROLLER, controller, ctx.clone(), (ctx.rt.clone(), LeaseRead::Shared), reconcile, shutdown).await;
    pruner.abort();
    sentinel.abort();
}

/// One pass over one cluster. A pass that fails says so in the cluster's status
/// (`Reconciled=False`, its step and what it failed on), so a cluster whose passes keep
/// failing is seen failing, not only in the operator's log.
pub async fn reconcile(ec: Arc<EtcdCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let start = Instant::now();
    let labels = ClusterLabels { namespace: ec.namespace().unwrap_or_default(), cluster: ec.name_any() };
    // Read fresh: the status written by the previous pass (maintenance records, the
    // revision) must be what this one builds on, not a cache the watch has not caught up.
    let api: Api<EtcdCluster> = Api::namespaced(ctx.rt.client.clone(), &labels.namespace);
    let result = runner::metered(&ctx.rt.metrics, CONTROLLER, &labels.namespace, &labels.cluster, async {
        match api.get_opt(&labels.cluster).await {
            Ok(Some(fresh)) => {
                let result = pass(&fresh, &ctx).await;
                if let Err(e) = &result {
                    report_failure(&api, &labels.cluster, e).await;
                }
                result
            }
            Ok(None) => Ok(Action::await_change()),
            Err(e) => Err(error::observe("read the EtcdCluster")(e)),
        }
    })
    .await;
    ctx.rt.metrics.reconcile_duration.get_or_create(&labels).observe(start.elapsed().as_secs_f64());
    result
}

/// Writes `Reconciled=False` for a pass that failed before its status write (a failed
/// step writes it with the status). Not for a Lease that cannot be read: a replica that
/// may not hold it writes nothing.
async fn report_failure(api: &Api<EtcdCluster>, name: &str, e: &Error) {
    if matches!(e, Error::Lease(_)) {
        return;
    }
    // Fresh: the pass may have written the status since the read it started from.
    let Ok(Some(ec)) = api.get_opt(name).await else { return };
    if ec.metadata.deletion_timestamp.is_some() {
        return;
    }
    let failed = status::failed(
        ec.status.as_ref(),
        e.category().reason(),
        e.to_string(),
        ec.metadata.generation,
        &Time(jiff::Timestamp::now()),
    );
    // Once per failure, not per retry (see `status::failed`).
    if status::same_failure(ec.status.as_ref(), &failed) {
        return;
    }
    let value = serde_json::to_value(&failed).unwrap_or_default();
    if let Err(write) = kube_ops::apply_status(api, STATUS_MANAGER, name, value).await {
        tracing::debug!(cluster = %name, error = %write, "recording the failed pass");
    }
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
    let names = Names::of(ec);

    // Observe, bounded in time: what follows acts on it, and must do so while the Lease
    // the runner found held before this pass still holds.
    let observed = tokio::time::timeout(OBSERVE_TIMEOUT, async {
        let (pods, pvcs) = read::observe_kube(ec, ctx, &names).await?;
        let mut problems = validate::problems(ec, &pods, &pvcs);
        if ec.spec.tls.mode == crate::api::cluster::TlsMode::Secrets
            && let Some(names) = crate::shared::secrets::secret_names(ec)
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
            let name = crate::shared::secrets::ca_secret_of(ec);
            if secrets.get_opt(&name).await.map_err(error::observe(format!("read Secret {name}")))?.is_none() {
                problems.push(format!(
                    "spec.tls.caFrom: waiting for the CA of EtcdCluster {} (Secret {name} in namespace {ns})",
                    from.cluster
                ));
            }
        }
        let members_exist = !pods.is_empty() || !pvcs.is_empty() || act::cluster_id_recorded(ec);
        // The fixed objects are looked after only for a spec that may be acted on.
        let act_allowed = problems.is_empty() && !ec.spec.paused;
        let fixed_observed = match act_allowed {
            true => Some(read::observe_fixed(ec, ctx, &key, &pods, members_exist).await?),
            false => None,
        };
        let sizing = read::observe_sizing(ec, ctx, &pvcs).await?;
        // A pod whose every container the kubelet reports terminated serves nothing: asking
        // it would cost the pass a connect timeout (a deleted member's pod lingering).
        let mut endpoints: Vec<(bool, String)> = pods
            .iter()
            .filter(|p| !observe::containers_gone(p))
            .map(|p| (!observe::pod_ready(p), names.client_url(&p.name_any())))
            .collect();
        endpoints.sort();
        // The client Secret as read for the fixed objects: not read a second time.
        let client_secret = fixed_observed
            .as_ref()
            .and_then(|f| crate::shared::secrets::secret_names(ec).and_then(|n| f.secrets.get(&n.client).cloned()));
        let config = if pods.is_empty() {
            crate::etcd::AdminConfig::default()
        } else {
            crate::shared::secrets::etcd_config(&ctx.rt.client, ec, client_secret).await?
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
        Ok::<_, Error>((pods, pvcs, problems, (fixed_observed, members_exist), admin, sizing))
    })
    .await
    .map_err(|_| Error::ObserveTimeout(OBSERVE_TIMEOUT))?;
    let (pods, pvcs, problems, (fixed_observed, members_exist), admin, sizing) = observed?;
    if let volumes::Sizing::Refused { reason, message } = &sizing {
        report::warn_once(ctx, ec, &key, reason, message.clone()).await;
    }
    // Members that do not answer in time (frozen, partitioned) are no answer.
    let view = if pods.is_empty() {
        None
    } else {
        tokio::time::timeout(ETCD_OBSERVE_TIMEOUT, read::observe_etcd(&admin)).await.ok().flatten()
    };
    if !problems.is_empty() {
        report::warn_once(ctx, ec, &key, "InvalidSpec", problems.join("; ")).await;
    }

    // Plan what the pass writes before its step: the fixed objects and the volumes'
    // bookkeeping (a spec that may be acted on), the cluster id (as soon as etcd says so).
    let mut upkeep = Vec::new();
    let mut fixed = upkeep::Fixed::default();
    if let Some(observed) = &fixed_observed {
        let budget_api = match (ctx.settings.policy_v1, ctx.settings.policy_v1beta1) {
            (true, _) => upkeep::BudgetApi::V1,
            (false, true) => upkeep::BudgetApi::V1beta1,
            (false, false) => upkeep::BudgetApi::None,
        };
        let now = time::OffsetDateTime::now_utc();
        let settings = (ctx.settings.cluster_domain.as_str(), budget_api, now);
        let (writes, planned) = upkeep::fixed(ec, observed, &pods, members_exist, settings)?;
        upkeep.extend(writes);
        upkeep.extend(upkeep::volumes(ec, &pvcs, &pods, &sizing));
        fixed = planned;
    }
    upkeep.extend(upkeep::cluster_id(ec, &pvcs, view.as_ref()));
    match &fixed.certificates {
        tls::CertState::Lost(why) => report::warn_once(ctx, ec, &key, "CertificateAuthorityLost", why.clone()).await,
        tls::CertState::RotationRefused(why) => {
            report::warn_once(ctx, ec, &key, "CARotationRefused", why.clone()).await
        }
        _ => {}
    }
    let not_running: Vec<String> =
        pods.iter().filter_map(|p| observe::pod_problem(p).map(|why| format!("{}: {why}", p.name_any()))).collect();
    if !not_running.is_empty() {
        report::warn_once(ctx, ec, &key, "MemberNotRunning", not_running.join("; ")).await;
    }

    let unhealthy_for = read::track_health(ctx, &key, &names, view.as_ref());
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
    obs.maintenance = read::maintenance_observed(ec, &names, view.as_ref(), jiff::Timestamp::now());
    if let Some(m) = obs.maintenance.as_mut()
        && m.compaction_due
    {
        m.streamed = read::streamed(ec, ctx).await?;
    }
    if placement::one_per_node(ec) {
        obs.placeable_nodes = Some(read::placeable_nodes(ec, ctx).await?);
    }
    let placement = plan::placement(&names.cluster, ec.spec.size.max(0) as usize, &obs);
    if let Some((reason, message)) = &placement {
        report::warn_once(ctx, ec, &key, reason, message.clone()).await;
    }
    let slot = operation::decide(operation::recorded(ec).as_ref(), CONTROLLER, jiff::Timestamp::now());
    if let Slot::Busy(op) = &slot {
        obs.slot_busy = Some(format!("{} {}", op.controller, op.kind));
    }
    let want = Desired {
        trust: fixed.trust.as_ref().filter(|(_, rotating)| *rotating).map(|(fp, _)| fp.clone()),
        ..read::desired(ec, &ctx.settings.etcd_image_repository)
    };
    let delete_on_scale = ec.spec.storage.retention.when_scaled == RetentionAction::Delete;
    let step = match &slot {
        // A restore replaces the members: the planner stands down entirely, even from
        // steps that are not disruptive (recreating a pod it stopped would undo it).
        Slot::Busy(op) if op.is_restore() => Step::Wait(format!("{} holds the cluster: restoring", op.controller)),
        _ if problems.is_empty() => plan::plan(&names.cluster, &want, &obs, delete_on_scale),
        _ => Step::Idle,
    };
    if !matches!(step, Step::Idle | Step::Wait(_)) {
        tracing::debug!(cluster = %names.cluster, ?step, "planned");
    }
    if let Step::Blocked(why) = &step {
        report::warn_once(ctx, ec, &key, "Blocked", why.clone()).await;
    }
    // Act. First the upkeep, in its order (certificates before the pods that mount them);
    // a CA rotation's step that cannot be made stops it, and the step waits a pass.
    let mut fenced = None;
    if let objects::Made::Stopped { why, certificates } = objects::make(ec, ctx, &key, &upkeep).await? {
        fixed.certificates = certificates;
        fenced = Some(why);
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
        && !matches!(&slot, Slot::Busy(op) if op.is_restore())
        && fenced.is_none()
    {
        if let Some(note) = act::start_quorum_recovery(ec, ctx, &names, view.as_ref(), &obs, lost).await? {
            publish(&ctx.rt, ec, EventType::Warning, "QuorumRecoveryStarted", &note).await;
        }
        if ec.spec.backup.is_none() {
            report::warn_once(
                ctx,
                ec,
                &key,
                "QuorumRecoveryImpossible",
                "healing.recoverQuorumLossAfterSeconds is set, but the cluster has no spec.backup to stage the survivor's snapshot in".into(),
            )
            .await;
        }
    }

    // Then the step: a bootstrap is recorded before its first pod, a disruptive step fenced.
    let mut outcome = maintenance::Outcome::None;
    if fenced.is_none()
        && let Step::Bootstrap { members, .. } = &step
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
        report::warn_once(ctx, ec, &key, "LearnerGivenUp", status::describe(&step).1).await;
    }
    if slot == Slot::Ours && plan::releases_slot(&step, lost.is_some(), placement.is_some()) {
        let api: Api<EtcdCluster> = Api::namespaced(ctx.rt.client.clone(), &ns);
        operation::release(&api, ec, CONTROLLER).await.map_err(error::record("release the operation slot"))?;
    }
    let highest_ordinal = plan::highest_ordinal(obs.highest_ordinal, &step, matches!(acted, Ok(true)));

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
        compaction_conflict: validate::compaction_conflict(ec),
        outcome: &outcome,
        storage: volumes::condition(&sizing, &ec.spec.storage.size.0),
        placement: placement.as_ref().map(|(r, m)| (*r, m.as_str())),
        spec_version: &ec.spec.version,
        failure: acted.as_ref().err().map(|e| (e.category().reason(), e.to_string())),
    });
    if let Some(c) = new_status.conditions.iter().find(|c| c.type_ == status::VERSION_SUPPORTED && c.status == "False")
    {
        report::warn_once(ctx, ec, &key, &c.reason.clone(), c.message.clone()).await;
    }
    let new_status = EtcdClusterStatus { highest_ordinal: highest_ordinal.map(i64::from), ..new_status };
    report::record_metrics(ctx, ec, &key, &new_status, view.as_ref());
    if ec.spec.tls.mode == crate::api::cluster::TlsMode::Operator {
        ctx.rt.metrics.set_certificate_expiries(&key.0, &key.1, &fixed.expiries);
    }
    report::record_maintenance(ctx, ec, &key, &new_status, &outcome).await;
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
        return Ok(Action::requeue(Duration::from_secs(requeue::PLACEMENT_REQUEUE_SECS)));
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
    // Every pod ready, or running since moments ago, and a member still not healthy:
    // one just promoted, which etcd reports healthy within a second or two, while its
    // pod's probes (every 5 s) may not have said ready yet; looked at every second until
    // it is (a member that is down has a pod that is neither, and waits the 5 s).
    let now = jiff::Timestamp::now();
    let up = |p: &Pod| observe::pod_ready(p) || observe::started_within(p, now, requeue::JUST_STARTED_SECS);
    if settling && step == Step::Idle && pods.iter().all(up) {
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
        let wait = requeue::growth_wait(before, now, warn_at, requeue::idle_requeue(ec));
        // A calm cluster's next pass is minutes away: one TLS handshake then costs less
        // than a connection kept meanwhile (benchmarks.md, cost per cluster).
        if wait >= Duration::from_secs(requeue::CALM_REQUEUE_SECS) {
            admin.disconnect();
        }
        return Ok(Action::requeue(wait));
    }
    Ok(Action::requeue(requeue::requeue_after(&step)))
}
