//! The EtcdBackup controller: one snapshot of a cluster, streamed to S3 and verified.
//! observe (the backup, its cluster, the store) -> [`plan`] (pure) -> [`act`] (the
//! snapshot under the cluster's operation slot) -> status. A finalizer deletes the
//! object with the EtcdBackup unless its `deletionPolicy` is `Retain`.

pub mod act;
mod copies;
pub mod error;
pub mod plan;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Resource, ResourceExt};

use self::error::Error;
use self::plan::{Observation, Step};
use crate::api::backup::DeletionPolicy;
use crate::api::{EtcdBackup, EtcdBackupStatus, EtcdCluster, Phase};
use crate::metrics::{BackupResultLabels, ClusterLabels};
use crate::runtime::events::{EventType, publish};
use crate::runtime::operation::{self, Operation, Taken};
use crate::runtime::runner::{self, LeaseRead};
use crate::runtime::s3::{self, OpenError};
use crate::runtime::{Runtime, kube_ops};
use crate::shared::snapshot::{self, Candidate};

pub use act::FIELD_MANAGER;

/// This controller's name in metrics; its operations are recorded as `backup/<name>`.
pub const CONTROLLER: &str = "backup";
/// Removes the backup's object before the EtcdBackup goes.
pub const FINALIZER: &str = "etcdpilot.io/backup-object";
/// The operation slot is held this long past its last refresh; a backup refreshes it
/// while it streams, so a crashed operator blocks its cluster for at most this long.
const SLOT_LEASE: Duration = Duration::from_secs(120);

type Key = (String, String);

pub struct Context {
    pub rt: Arc<Runtime>,
    /// When the last attempt of each backup failed (for the backoff).
    failed_at: Mutex<HashMap<Key, Instant>>,
}

impl Context {
    pub fn new(rt: Arc<Runtime>) -> Self {
        Self { rt, failed_at: Mutex::new(HashMap::new()) }
    }
}

/// Runs the controller over one namespace (or all) until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.rt.client.clone();
    let backups: Api<EtcdBackup> = match &namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    runner::run(
        CONTROLLER,
        runner::controller(backups),
        ctx.clone(),
        (ctx.rt.clone(), LeaseRead::Fresh),
        reconcile,
        shutdown,
    )
    .await;
}

pub async fn reconcile(b: Arc<EtcdBackup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = b.namespace().unwrap_or_default();
    runner::metered(&ctx.rt.metrics, CONTROLLER, &ns, &b.spec.cluster_name, async {
        let api: Api<EtcdBackup> = Api::namespaced(ctx.rt.client.clone(), &ns);
        finalizer(&api, FINALIZER, b.clone(), |event| async {
            match event {
                Finalizer::Apply(b) => pass(&b, &ctx).await,
                Finalizer::Cleanup(b) => cleanup(&b, &ctx).await,
            }
        })
        .await
        .map_err(|e| match e {
            kube::runtime::finalizer::Error::ApplyFailed(e) | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
            other => Error::Finalizer(other.to_string()),
        })
    })
    .await
}

/// The slot holder's name for one backup: backups of one cluster exclude each other.
fn holder_id(b: &EtcdBackup) -> String {
    operation::Holder::Backup(&b.name_any()).id()
}

/// Healthy voters, but never a member etcd raised CORRUPT for.
fn candidates(ec: &EtcdCluster) -> Vec<Candidate> {
    ec.status
        .iter()
        .flat_map(|s| s.members.iter())
        .filter(|m| m.healthy && !m.learner && !m.id.is_empty() && !m.corrupt)
        .filter_map(|m| {
            Some(Candidate { name: m.name.clone(), endpoint: m.client_urls.first()?.clone(), leader: m.leader })
        })
        .collect()
}

async fn pass(b: &EtcdBackup, ctx: &Context) -> Result<Action, Error> {
    let ns = b.namespace().unwrap_or_default();
    let key: Key = (ns.clone(), b.name_any());
    let status = b.status.clone().unwrap_or_default();
    if status.phase == Phase::Succeeded {
        return copies::pass(b, ctx, &status).await;
    }
    if status.phase.is_finished() {
        return Ok(Action::await_change());
    }
    let client = ctx.rt.client.clone();
    let clusters: Api<EtcdCluster> = Api::namespaced(client.clone(), &ns);
    let cluster = clusters
        .get_opt(&b.spec.cluster_name)
        .await
        .map_err(error::observe(format!("read EtcdCluster {}", b.spec.cluster_name)))?;
    let target = b.spec.target.clone().or_else(|| cluster.as_ref().and_then(|c| c.spec.backup.clone()));
    let mut store = None;
    let mut target_problem = None;
    let mut transient = None;
    if let Some(ec) = &cluster {
        match &target {
            None => {
                target_problem =
                    Some(format!("no S3 target: set spec.target, or spec.backup on EtcdCluster {}", ec.name_any()))
            }
            Some(t) => match s3::open(&client, &ns, t).await {
                Ok(s) => store = Some(s),
                Err(OpenError::Invalid(m)) => target_problem = Some(m),
                Err(OpenError::Transient(m)) => transient = Some(m),
            },
        }
    }
    let attempts = u32::try_from(status.attempts.unwrap_or(0)).unwrap_or(0);
    let retry_in = {
        let failed = ctx.failed_at.lock().unwrap_or_else(|p| p.into_inner()).get(&key).copied();
        failed.map(|t| act::backoff(attempts).saturating_sub(t.elapsed()).as_secs()).unwrap_or(0)
    };
    let now = jiff::Timestamp::now();
    let id = holder_id(b);
    let obs = Observation {
        phase: status.phase,
        attempts,
        age_secs: b.metadata.creation_timestamp.as_ref().map(act::secs_since).unwrap_or(0),
        retry_in_secs: retry_in,
        cluster: cluster.is_some(),
        paused: cluster.as_ref().is_some_and(|c| c.spec.paused),
        target_problem,
        slot: operation::decide(cluster.as_ref().and_then(operation::recorded).as_ref(), &id, now),
        candidates: cluster.as_ref().map(candidates).unwrap_or_default(),
    };
    let mut step = plan::plan(&obs);
    // The store did not answer: a failed attempt like any other.
    if let (Some(m), Step::Snapshot(_)) = (&transient, &step) {
        return attempt_failed(b, ctx, &key, &status, m.clone(), false).await;
    }
    if transient.is_some() && matches!(step, Step::Wait(_)) {
        step = Step::Wait(transient.clone().unwrap_or_default());
    }
    match step {
        Step::Done => Ok(Action::await_change()),
        Step::Fail(why) => fail(b, ctx, &status, why).await,
        Step::Wait(why) => {
            let next = EtcdBackupStatus { error: Some(format!("waiting: {why}")), ..status.clone() };
            write_status(b, ctx, &status, next).await?;
            Ok(Action::requeue(Duration::from_secs(5)))
        }
        Step::Snapshot(member) => {
            let (Some(ec), Some(store)) = (cluster, store) else { return Ok(Action::requeue(Duration::from_secs(5))) };
            snapshot(b, ctx, &key, &status, &ec, &store, member).await
        }
    }
}

async fn write_status(
    b: &EtcdBackup,
    ctx: &Context,
    old: &EtcdBackupStatus,
    new: EtcdBackupStatus,
) -> Result<(), Error> {
    if b.status.is_some() && *old == new {
        return Ok(());
    }
    let api: Api<EtcdBackup> = Api::namespaced(ctx.rt.client.clone(), &b.namespace().unwrap_or_default());
    let value = serde_json::to_value(&new).unwrap_or_default();
    kube_ops::apply_status(&api, FIELD_MANAGER, &b.name_any(), value).await.map_err(Error::Status)
}

async fn fail(b: &EtcdBackup, ctx: &Context, status: &EtcdBackupStatus, why: String) -> Result<Action, Error> {
    let next = EtcdBackupStatus {
        phase: Phase::Failed,
        error: Some(why.clone()),
        completion_time: Some(act::now()),
        ..status.clone()
    };
    // The Event and the count first: whoever sees the status Failed finds both.
    publish(&ctx.rt, b, EventType::Warning, "BackupFailed", &why).await;
    let l = BackupResultLabels {
        namespace: b.namespace().unwrap_or_default(),
        cluster: b.spec.cluster_name.clone(),
        result: "failed".into(),
    };
    ctx.rt.metrics.backups.get_or_create(&l).inc();
    write_status(b, ctx, status, next).await?;
    release(b, ctx).await?;
    Ok(Action::await_change())
}

async fn attempt_failed(
    b: &EtcdBackup,
    ctx: &Context,
    key: &Key,
    status: &EtcdBackupStatus,
    why: String,
    permanent: bool,
) -> Result<Action, Error> {
    let attempts = u32::try_from(status.attempts.unwrap_or(0)).unwrap_or(0) + 1;
    if permanent || attempts >= plan::MAX_ATTEMPTS {
        let why = if permanent { why } else { format!("{why} (attempt {attempts} of {})", plan::MAX_ATTEMPTS) };
        let status = EtcdBackupStatus { attempts: Some(attempts as i32), ..status.clone() };
        return fail(b, ctx, &status, why).await;
    }
    ctx.failed_at.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone(), Instant::now());
    let wait = act::backoff(attempts);
    let next = EtcdBackupStatus {
        phase: Phase::Pending,
        attempts: Some(attempts as i32),
        error: Some(format!("attempt {attempts} failed: {why}; retrying in {}s", wait.as_secs())),
        ..status.clone()
    };
    publish(&ctx.rt, b, EventType::Warning, "BackupAttemptFailed", &why).await;
    write_status(b, ctx, status, next).await?;
    release(b, ctx).await?;
    Ok(Action::requeue(wait))
}

/// Clears the cluster's operation slot if this backup holds it.
async fn release(b: &EtcdBackup, ctx: &Context) -> Result<(), Error> {
    let api: Api<EtcdCluster> = Api::namespaced(ctx.rt.client.clone(), &b.namespace().unwrap_or_default());
    if let Some(ec) = api.get_opt(&b.spec.cluster_name).await.map_err(Error::Slot)? {
        operation::release(&api, &ec, &holder_id(b)).await.map_err(Error::Slot)?;
    }
    Ok(())
}

fn slot_record(b: &EtcdBackup, ctx: &Context, member: &str) -> Operation {
    let now = jiff::Timestamp::now();
    Operation {
        kind: "Snapshot".into(),
        member: Some(member.to_string()),
        controller: holder_id(b),
        holder: ctx.rt.instance.clone(),
        since: now,
        expires: now + jiff::SignedDuration::try_from(SLOT_LEASE).unwrap_or_default(),
    }
}

#[allow(clippy::too_many_arguments)]
async fn snapshot(
    b: &EtcdBackup,
    ctx: &Context,
    key: &Key,
    status: &EtcdBackupStatus,
    ec: &EtcdCluster,
    store: &crate::backup_store::BackupStore,
    member: Candidate,
) -> Result<Action, Error> {
    let ns = key.0.clone();
    let clusters: Api<EtcdCluster> = Api::namespaced(ctx.rt.client.clone(), &ns);
    // Take the slot on a fresh read: a write since (a membership change started) wins.
    let Some(fresh) = clusters.get_opt(&ec.name_any()).await.map_err(Error::Slot)? else {
        return Ok(Action::requeue(Duration::from_secs(1)));
    };
    if fresh.meta().uid != ec.meta().uid {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    match operation::take(&clusters, &fresh, &slot_record(b, ctx, &member.name)).await.map_err(Error::Slot)? {
        Taken::Yes => {}
        Taken::Lost(why) => {
            tracing::debug!(backup = %key.1, why, "operation slot not taken; looking again");
            return Ok(Action::requeue(Duration::from_secs(2)));
        }
    }
    let start = act::now();
    let attempts = status.attempts.unwrap_or(0) + 1;
    let running = EtcdBackupStatus {
        phase: Phase::Running,
        attempts: Some(attempts),
        start_time: Some(start.clone()),
        member: Some(member.name.clone()),
        error: None,
        ..status.clone()
    };
    write_status(b, ctx, status, running.clone()).await?;

    // Keep the slot while the bytes flow.
    let refresher = {
        let clusters = clusters.clone();
        let name = ec.name_any();
        let record = slot_record(b, ctx, &member.name);
        let id = holder_id(b);
        let holder = ctx.rt.instance.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(SLOT_LEASE / 4).await;
                let Ok(Some(c)) = clusters.get_opt(&name).await else { continue };
                if operation::recorded(&c).is_none_or(|op| op.controller != id) {
                    continue;
                }
                let now = jiff::Timestamp::now();
                let op = Operation {
                    holder: holder.clone(),
                    expires: now + jiff::SignedDuration::try_from(SLOT_LEASE).unwrap_or_default(),
                    ..record.clone()
                };
                let _ = operation::refresh(&clusters, &c, &op).await;
            }
        })
    };
    let object_key = store.backup_key(&ns, &b.spec.cluster_name, &snapshot::stamp(start.0), &key.1);
    let labels = HashMap::from([
        ("namespace".to_string(), ns.clone()),
        ("cluster".to_string(), b.spec.cluster_name.clone()),
        ("backup".to_string(), key.1.clone()),
    ]);
    let metric_labels = ClusterLabels { namespace: ns.clone(), cluster: b.spec.cluster_name.clone() };
    let config = crate::shared::secrets::etcd_config(&ctx.rt.client, ec, None).await;
    let result = match config {
        Ok(config) => {
            snapshot::snapshot_to_store(&member, config, store, &object_key, labels, &ctx.rt.metrics, &metric_labels)
                .await
        }
        Err(e) => Err(snapshot::Failure::transient(e.to_string())),
    };
    refresher.abort();
    match result {
        Ok(taken) => {
            let done = EtcdBackupStatus {
                phase: Phase::Succeeded,
                bucket: Some(store.bucket().to_string()),
                object_key: Some(taken.uploaded.key.clone()),
                size_bytes: Some(i64::try_from(taken.uploaded.size).unwrap_or(i64::MAX)),
                sha256: Some(taken.uploaded.sha256.clone()),
                etcd_revision: Some(taken.revision),
                key_count: taken.key_count,
                etcd_version: Some(taken.version.clone()),
                completion_time: Some(act::now()),
                error: None,
                ..running.clone()
            };
            let took = (jiff::Timestamp::now() - start.0).get_milliseconds() as f64 / 1000.0;
            publish(
                &ctx.rt,
                b,
                EventType::Normal,
                "BackupSucceeded",
                &format!(
                    "snapshot of {} at revision {} ({} bytes, sha256 {}) written to s3://{}/{} in {took:.1}s",
                    member.name,
                    taken.revision,
                    taken.uploaded.size,
                    taken.uploaded.sha256,
                    store.bucket(),
                    taken.uploaded.key
                ),
            )
            .await;
            let m = &ctx.rt.metrics;
            m.backups
                .get_or_create(&BackupResultLabels {
                    namespace: ns.clone(),
                    cluster: b.spec.cluster_name.clone(),
                    result: "succeeded".into(),
                })
                .inc();
            m.backup_duration.get_or_create(&metric_labels).observe(took);
            write_status(b, ctx, &running, done).await?;
            release(b, ctx).await?;
            ctx.failed_at.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
            act::sync_last_backup(&ctx.rt.client, &ns, &b.spec.cluster_name, m).await.map_err(Error::Status)?;
            // The copies, if any, next.
            Ok(if b.spec.copy_to.is_empty() { Action::await_change() } else { Action::requeue(Duration::from_secs(1)) })
        }
        Err(f) => attempt_failed(b, ctx, key, &running, f.message, f.permanent).await,
    }
}

/// The EtcdBackup is being deleted: its object goes first, unless kept by policy.
async fn cleanup(b: &EtcdBackup, ctx: &Context) -> Result<Action, Error> {
    let ns = b.namespace().unwrap_or_default();
    let status = b.status.clone().unwrap_or_default();
    release(b, ctx).await?;
    if b.spec.deletion_policy == DeletionPolicy::Delete
        && let Some(object) = &status.object_key
    {
        let clusters: Api<EtcdCluster> = Api::namespaced(ctx.rt.client.clone(), &ns);
        let cluster_target = match &b.spec.target {
            Some(_) => None,
            None => clusters
                .get_opt(&b.spec.cluster_name)
                .await
                .map_err(error::observe("read the EtcdCluster"))?
                .and_then(|c| c.spec.backup),
        };
        match b.spec.target.clone().or(cluster_target) {
            None => {
                let why = format!(
                    "the object {object} was left in the bucket: its target is unknown (no spec.target, and the cluster has no spec.backup)"
                );
                publish(&ctx.rt, b, EventType::Warning, "BackupObjectLeft", &why).await;
            }
            Some(t) => match s3::credentials(&ctx.rt.client, &ns, &t).await {
                Err(OpenError::Invalid(m)) => {
                    let why = format!("the object {object} was left in the bucket: {m}");
                    publish(&ctx.rt, b, EventType::Warning, "BackupObjectLeft", &why).await;
                }
                Err(OpenError::Transient(m)) => return Err(Error::Cleanup(m)),
                Ok(creds) => {
                    let store =
                        crate::backup_store::BackupStore::new(crate::backup_store::StoreConfig::from_target(&t, creds))
                            .await
                            .map_err(|e| Error::Cleanup(e.to_string()))?;
                    match store.delete(object).await {
                        Ok(()) => {}
                        Err(e) if s3::permanent(&e) => {
                            let why = format!("the object {object} may be left in the bucket: {e}");
                            publish(&ctx.rt, b, EventType::Warning, "BackupObjectLeft", &why).await;
                        }
                        Err(e) => return Err(Error::Cleanup(e.to_string())),
                    }
                }
            },
        }
    }
    if b.spec.deletion_policy == DeletionPolicy::Delete {
        copies::delete_all(b, ctx, &status).await?;
    }
    if status.phase == Phase::Succeeded {
        act::sync_last_backup(&ctx.rt.client, &ns, &b.spec.cluster_name, &ctx.rt.metrics)
            .await
            .map_err(Error::Status)?;
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_member_is_never_a_source() {
        let ec: EtcdCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdCluster",
            "metadata": {"name": "main", "namespace": "prod"},
            "spec": {"size": 3, "version": "3.5.1"},
            "status": {"members": [
                {"name": "main-0", "id": "1", "healthy": true, "leader": true, "clientUrls": ["https://main-0:2379"]},
                {"name": "main-1", "id": "2", "healthy": true, "corrupt": true, "clientUrls": ["https://main-1:2379"]},
                {"name": "main-2", "id": "3", "healthy": true, "clientUrls": ["https://main-2:2379"]},
            ]},
        }))
        .unwrap();
        let names: Vec<String> = candidates(&ec).into_iter().map(|c| c.name).collect();
        assert_eq!(names, ["main-0", "main-2"]);
    }
}
