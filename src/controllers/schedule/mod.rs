//! The EtcdBackupSchedule controller: EtcdBackups on a cron schedule, with retention.
//! observe (the schedule, the backups it made) -> [`plan`] (pure: the due slot, the
//! backups to prune) -> act (create one backup, delete pruned ones) -> status.
//!
//! The backups it makes are named after it and the slot (`<schedule>-<minutes>`) and
//! owned by it, as a CronJob's Jobs are: a slot never runs twice, and deleting the
//! schedule deletes its backups (and, by their finalizer, their objects).

#[cfg(test)]
mod pass_tests;
pub mod plan;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use self::plan::{Made, Run};
use crate::api::backup::{DeletionPolicy, EtcdBackupSpec};
use crate::api::schedule::ScheduledBackup;
use crate::api::{EtcdBackup, EtcdBackupSchedule, EtcdBackupScheduleStatus, EtcdCluster, Phase, validation};
use crate::runtime::events::{EventType, publish};
use crate::runtime::runner::{self, Category, LeaseRead, PassError};
use crate::runtime::{Runtime, kube_ops};

pub const CONTROLLER: &str = "schedule";
pub const FIELD_MANAGER: &str = "etcd-pilot-schedule";
pub use crate::shared::names::SCHEDULE_LABEL;
/// How many of its backups a schedule lists in its status.
const RECENT: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("leader election: cannot read the Lease: {0}")]
    Lease(#[source] kube::Error),
    #[error("observe: {what}: {source}")]
    Observe {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("act: {what}: {source}")]
    Act {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("status: {0}")]
    Status(#[source] kube::Error),
}

impl PassError for Error {
    fn step(&self) -> &'static str {
        match self {
            Error::Lease(_) => "lease",
            Error::Observe { .. } => "observe",
            Error::Act { .. } => "act",
            Error::Status(_) => "status",
        }
    }

    fn lease(error: kube::Error) -> Self {
        Error::Lease(error)
    }

    fn category(&self) -> Category {
        Category::Kubernetes
    }
}

pub struct Context {
    pub rt: Arc<Runtime>,
}

pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.rt.client.clone();
    let (schedules, backups): (Api<EtcdBackupSchedule>, Api<EtcdBackup>) = match &namespace {
        Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client, ns)),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    let controller =
        runner::controller(schedules).owns(backups, watcher::Config::default().labels(SCHEDULE_LABEL).any_semantic());
    // A deleted schedule gets no last pass: its metric series go once it left the cache.
    let store = controller.store();
    let pruner = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(30)).await;
                let live: Vec<(String, String)> =
                    store.state().iter().map(|s| (s.namespace().unwrap_or_default(), s.name_any())).collect();
                ctx.rt.metrics.retain_schedules(&live);
            }
        })
    };
    runner::run(CONTROLLER, controller, ctx.clone(), (ctx.rt.clone(), LeaseRead::Shared), reconcile, shutdown).await;
    pruner.abort();
}

pub async fn reconcile(s: Arc<EtcdBackupSchedule>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = s.namespace().unwrap_or_default();
    runner::metered(&ctx.rt.metrics, CONTROLLER, &ns, &s.spec.cluster_name, pass(&s, &ctx)).await
}

fn made(b: &EtcdBackup) -> Made {
    let status = b.status.clone().unwrap_or_default();
    Made {
        name: b.name_any(),
        phase: status.phase,
        created: b.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or_default(),
        completed: status.completion_time.map(|t| t.0),
        deleting: b.metadata.deletion_timestamp.is_some(),
    }
}

async fn pass(s: &EtcdBackupSchedule, ctx: &Context) -> Result<Action, Error> {
    if s.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = s.namespace().unwrap_or_default();
    let name = s.name_any();
    let status = s.status.clone().unwrap_or_default();
    let now = jiff::Timestamp::now();
    let backups: Api<EtcdBackup> = Api::namespaced(ctx.rt.client.clone(), &ns);

    // Bad input: a condition-like error and an Event, and nothing runs.
    let mut problems: Vec<String> = validation::validate_schedule(&s.spec).iter().map(ToString::to_string).collect();
    let clusters: Api<EtcdCluster> = Api::namespaced(ctx.rt.client.clone(), &ns);
    if problems.is_empty()
        && clusters
            .get_opt(&s.spec.cluster_name)
            .await
            .map_err(|source| Error::Observe { what: "read the EtcdCluster".into(), source })?
            .is_none()
    {
        problems
            .push(format!("spec.clusterName: EtcdCluster {} does not exist in namespace {ns}", s.spec.cluster_name));
    }
    if !problems.is_empty() {
        let why = problems.join("; ");
        if status.error.as_deref() != Some(why.as_str()) {
            publish(&ctx.rt, s, EventType::Warning, "InvalidSchedule", &format!("{why}; no backup runs")).await;
        }
        ctx.rt.metrics.set_schedule(&ns, &name, &s.spec.cluster_name, None, None);
        let next = EtcdBackupScheduleStatus { error: Some(why), next_schedule_time: None, ..status.clone() };
        write_status(s, ctx, &status, next).await?;
        return Ok(Action::requeue(Duration::from_secs(60)));
    }
    // Parsed once more: validation above said it parses.
    let Ok(cron) = validation::parse_cron(&s.spec.schedule) else {
        return Ok(Action::requeue(Duration::from_secs(60)));
    };
    let tz =
        s.spec.time_zone.as_deref().and_then(|z| jiff::tz::TimeZone::get(z).ok()).unwrap_or(jiff::tz::TimeZone::UTC);

    let uid = s.uid();
    let list = backups
        .list(&ListParams::default().labels(&format!("{SCHEDULE_LABEL}={name}")))
        .await
        .map_err(|source| Error::Observe { what: "list the schedule's backups".into(), source })?;
    let mine: Vec<EtcdBackup> =
        list.items.into_iter().filter(|b| b.owner_references().iter().any(|o| Some(&o.uid) == uid.as_ref())).collect();
    let made: Vec<Made> = mine.iter().map(made).collect();

    let since = status
        .last_schedule_time
        .as_ref()
        .map(|t| t.0)
        .or_else(|| s.metadata.creation_timestamp.as_ref().map(|t| t.0))
        .unwrap_or(now);
    let due = plan::due_slot(&cron, &tz, since, now);
    let mut next_status = status.clone();
    let mut requeue = None;
    match plan::run(due, s.spec.suspend, &made) {
        Run::No => {}
        Run::Wait(why) => {
            tracing::debug!(schedule = %name, why, "slot due; waiting");
            requeue = Some(Duration::from_secs(5));
        }
        Run::Backup(slot) => {
            let b = backup_for(s, slot);
            match backups
                .create(&PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }, &b)
                .await
            {
                Ok(_) => {
                    publish(
                        &ctx.rt,
                        s,
                        EventType::Normal,
                        "BackupStarted",
                        &format!("created EtcdBackup {}", b.name_any()),
                    )
                    .await
                }
                // This slot's backup exists (a pass that stopped after creating it).
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(source) => return Err(Error::Act { what: format!("create EtcdBackup {}", b.name_any()), source }),
            }
            next_status.last_schedule_time = Some(Time(slot));
        }
    }

    // Retention, after each success: the EtcdBackup's finalizer deletes its object
    // before the EtcdBackup goes.
    let max_age = s.spec.retention.max_age.as_deref().and_then(|a| validation::parse_age(a).ok());
    let prune = plan::prune(&made, s.spec.retention.keep_last, max_age.map(|d| d.as_secs() as i64), now);
    for b in &prune {
        match backups.delete(b, &DeleteParams::default()).await {
            Ok(_) => {
                publish(&ctx.rt, s, EventType::Normal, "BackupPruned", &format!("deleted EtcdBackup {b} (retention)"))
                    .await
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(source) => return Err(Error::Act { what: format!("delete EtcdBackup {b}"), source }),
        }
    }

    let mut recent: Vec<&EtcdBackup> = mine.iter().filter(|b| !prune.contains(&b.name_any())).collect();
    recent.sort_by_key(|b| std::cmp::Reverse(b.metadata.creation_timestamp.as_ref().map(|t| t.0)));
    next_status.recent_backups = recent
        .iter()
        .take(RECENT)
        .map(|b| ScheduledBackup {
            name: b.name_any(),
            phase: b.status.as_ref().map(|s| s.phase).unwrap_or(Phase::Pending),
            object_key: b.status.as_ref().and_then(|s| s.object_key.clone()),
            start_time: b.metadata.creation_timestamp.clone(),
        })
        .collect();
    next_status.last_successful_time = made
        .iter()
        .filter(|m| m.phase == Phase::Succeeded)
        .filter_map(|m| m.completed)
        .max()
        .map(Time)
        .or(status.last_successful_time.clone());
    let next_slot = if s.spec.suspend { None } else { plan::next_slot(&cron, &tz, now) };
    next_status.next_schedule_time = next_slot.map(Time);
    next_status.error = None;
    ctx.rt.metrics.set_schedule(
        &ns,
        &name,
        &s.spec.cluster_name,
        if s.spec.suspend { None } else { plan::interval(&cron, &tz, now) },
        // A schedule that never succeeded counts from its creation (alerts then fire on
        // one that never works, too).
        next_status.last_successful_time.as_ref().or(s.metadata.creation_timestamp.as_ref()).map(|t| t.0.as_second()),
    );
    write_status(s, ctx, &status, next_status).await?;
    let until_next = next_slot
        .map(|t| Duration::from_millis(u64::try_from((t - now).get_milliseconds()).unwrap_or(0) + 500))
        .unwrap_or(Duration::from_secs(300))
        .min(Duration::from_secs(300));
    Ok(Action::requeue(requeue.unwrap_or(until_next)))
}

fn backup_for(s: &EtcdBackupSchedule, slot: jiff::Timestamp) -> EtcdBackup {
    let mut b = EtcdBackup::new(
        &plan::backup_name(&s.name_any(), slot),
        EtcdBackupSpec {
            cluster_name: s.spec.cluster_name.clone(),
            target: s.spec.target.clone(),
            deletion_policy: DeletionPolicy::Delete,
            copy_to: s.spec.copy_to.clone(),
        },
    );
    b.meta_mut().namespace = s.namespace();
    b.meta_mut().labels = Some(BTreeMap::from([(SCHEDULE_LABEL.to_string(), s.name_any())]));
    b.meta_mut().owner_references = s.controller_owner_ref(&()).map(|o| vec![o]);
    b
}

async fn write_status(
    s: &EtcdBackupSchedule,
    ctx: &Context,
    old: &EtcdBackupScheduleStatus,
    new: EtcdBackupScheduleStatus,
) -> Result<(), Error> {
    // `status.continuous` is the stream controller's, the verification fields the drill
    // controller's: never written (or owned) here.
    let mine = |s: EtcdBackupScheduleStatus| EtcdBackupScheduleStatus {
        continuous: None,
        last_verification: None,
        last_successful_verification_time: None,
        next_verification_time: None,
        ..s
    };
    let new = mine(new);
    if s.status.is_some() && mine(old.clone()) == new {
        return Ok(());
    }
    let api: Api<EtcdBackupSchedule> = Api::namespaced(ctx.rt.client.clone(), &s.namespace().unwrap_or_default());
    let value = serde_json::to_value(&new).unwrap_or_default();
    kube_ops::apply_status(&api, FIELD_MANAGER, &s.name_any(), value).await.map_err(Error::Status)
}
