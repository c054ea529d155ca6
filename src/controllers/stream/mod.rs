//! The continuous-backup controller: for each EtcdBackupSchedule with `continuous` on,
//! one stream of its cluster's changes into the schedule's target, run as a task of the
//! leader replica ([`task`]). observe (the schedule, its cluster and target, its
//! backups, where its stream stands) -> [`plan`] (pure: start, keep, restart or stop the
//! stream; a base now) -> act (the task; a base EtcdBackup) -> status
//! (`status.continuous`, under its own field manager; the lag metric; an Event per gap).
//!
//! Segment uploads take no operation slot: they read a watch, not a member's snapshot.
//! The bases are the schedule's own EtcdBackups (retention prunes them, and the stream's
//! segments before the oldest kept base go with them).

pub mod mirror;
#[cfg(test)]
mod pass_tests;
pub mod plan;
pub mod task;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use tokio::sync::watch;

use self::plan::{Made, Observation, Settings, Task};
use crate::api::backup::{DeletionPolicy, EtcdBackupSpec};
use crate::api::{EtcdBackup, EtcdBackupSchedule, EtcdCluster, Phase};
use crate::metrics::ScheduleLabels;
use crate::runtime::events::{EventType, publish};
use crate::runtime::runner::{self, Category, LeaseRead, PassError};
use crate::runtime::{Runtime, kube_ops};
use crate::shared::stream::{Feed, Progress};
use crate::shared::window::Base;

pub const CONTROLLER: &str = "stream";
pub const FIELD_MANAGER: &str = "etcd-pilot-stream";
use crate::shared::names::SCHEDULE_LABEL;
/// How often a streaming schedule's status and lag are brought up to date.
const REFRESH: Duration = Duration::from_secs(5);

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

/// A running stream.
struct Running {
    settings: Settings,
    bases: watch::Sender<Vec<Base>>,
    progress: Arc<Mutex<Progress>>,
    stop: watch::Sender<bool>,
    handle: tokio::task::JoinHandle<()>,
}

pub struct Context {
    pub rt: Arc<Runtime>,
    /// The streams this replica runs, by (namespace, schedule).
    streams: Mutex<HashMap<(String, String), Running>>,
}

impl Context {
    pub fn new(rt: Arc<Runtime>) -> Self {
        Self { rt, streams: Mutex::default() }
    }

    fn streams(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Running>> {
        self.streams.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Stops the streams `keep` does not name; each makes what it holds durable first.
    async fn stop_all_but(&self, keep: &[(String, String)]) {
        let gone: Vec<Running> = {
            let mut all = self.streams();
            let keys: Vec<(String, String)> = all.keys().filter(|k| !keep.contains(k)).cloned().collect();
            keys.into_iter().filter_map(|k| all.remove(&k)).collect()
        };
        for r in gone {
            let _ = r.stop.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(10), r.handle).await;
        }
    }
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
    // A deleted schedule gets no last pass: its stream stops once it left the cache.
    let store = controller.store();
    let sweeper = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let live: Vec<(String, String)> =
                    store.state().iter().map(|s| (s.namespace().unwrap_or_default(), s.name_any())).collect();
                ctx.stop_all_but(&live).await;
            }
        })
    };
    runner::run(CONTROLLER, controller, ctx.clone(), (ctx.rt.clone(), LeaseRead::Shared), reconcile, shutdown).await;
    sweeper.abort();
    // The one shutdown path: every stream makes what it holds durable and stops.
    ctx.stop_all_but(&[]).await;
}

pub async fn reconcile(s: Arc<EtcdBackupSchedule>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = s.namespace().unwrap_or_default();
    runner::metered(&ctx.rt.metrics, CONTROLLER, &ns, &s.spec.cluster_name, pass(&s, &ctx)).await
}

fn made(b: &EtcdBackup) -> Made {
    let status = b.status.clone().unwrap_or_default();
    let base = match (&status.object_key, &status.sha256, status.etcd_revision, &status.completion_time) {
        (Some(key), Some(sha), Some(revision), Some(done)) if status.phase == Phase::Succeeded => {
            Some(Base { key: key.clone(), revision, time_ms: done.0.as_millisecond(), sha256: sha.clone() })
        }
        _ => None,
    };
    Made { name: b.name_any(), phase: status.phase, deleting: b.metadata.deletion_timestamp.is_some(), base }
}

async fn pass(s: &EtcdBackupSchedule, ctx: &Context) -> Result<Action, Error> {
    let ns = s.namespace().unwrap_or_default();
    let name = s.name_any();
    let key = (ns.clone(), name.clone());
    let labels = ScheduleLabels { namespace: ns.clone(), schedule: name.clone(), cluster: s.spec.cluster_name.clone() };
    let wanted = s.spec.streams() && s.metadata.deletion_timestamp.is_none();

    // Observe.
    let (problem, target) = if wanted {
        let clusters: Api<EtcdCluster> = Api::namespaced(ctx.rt.client.clone(), &ns);
        let ec = clusters
            .get_opt(&s.spec.cluster_name)
            .await
            .map_err(|source| Error::Observe { what: "read the EtcdCluster".into(), source })?;
        match ec {
            None => (Some(format!("EtcdCluster {} does not exist in namespace {ns}", s.spec.cluster_name)), None),
            Some(ec) => match s.spec.target.clone().or(ec.spec.backup.clone()) {
                None => (
                    Some("no target: set spec.target, or spec.backup on the cluster, for the stream's segments".into()),
                    None,
                ),
                Some(t) => (None, Some(t)),
            },
        }
    } else {
        (None, None)
    };
    let backups: Api<EtcdBackup> = Api::namespaced(ctx.rt.client.clone(), &ns);
    let uid = s.uid();
    let made: Vec<Made> = if wanted {
        backups
            .list(&ListParams::default().labels(&format!("{SCHEDULE_LABEL}={name}")))
            .await
            .map_err(|source| Error::Observe { what: "list the schedule's backups".into(), source })?
            .items
            .iter()
            .filter(|b| b.owner_references().iter().any(|o| Some(&o.uid) == uid.as_ref()))
            .map(made)
            .collect()
    } else {
        Vec::new()
    };
    let flush_ms = i64::from(s.spec.continuous.as_ref().map_or(5, |c| c.flush_seconds.max(1))) * 1000;
    let settings = Settings {
        cluster: s.spec.cluster_name.clone(),
        // The copies too: a change of them restarts the stream with them.
        target: serde_json::to_string(&(&target, &s.spec.copy_to)).unwrap_or_default(),
        flush_ms,
    };
    let (running, progress) = {
        let all = ctx.streams();
        match all.get(&key) {
            Some(r) => (
                Some(r.settings.clone()),
                Some(r.progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()),
            ),
            None => (None, None),
        }
    };
    let o = Observation { wanted, problem: problem.clone(), settings: settings.clone(), running, made, progress };

    // Plan.
    let p = plan::plan(&o);

    // Act.
    if matches!(p.task, Task::Stop | Task::Restart) {
        let others: Vec<(String, String)> = ctx.streams().keys().filter(|k| **k != key).cloned().collect();
        ctx.stop_all_but(&others).await;
    }
    if matches!(p.task, Task::Start | Task::Restart)
        && let Some(target) = target
    {
        let (bases, bases_rx) = watch::channel(p.bases.clone());
        let (stop, stop_rx) = watch::channel(false);
        let progress = Arc::new(Mutex::new(Progress::default()));
        let feed = Feed { bases: Some(bases_rx), progress: progress.clone(), leases: Vec::new() };
        let spec = task::Spec {
            namespace: ns.clone(),
            schedule: name.clone(),
            cluster: s.spec.cluster_name.clone(),
            target,
            flush_ms,
            copies: s.spec.copy_to.clone(),
        };
        let handle = tokio::spawn(task::run(ctx.rt.clone(), spec, feed, stop_rx));
        ctx.streams().insert(key.clone(), Running { settings, bases, progress, stop, handle });
        publish(
            &ctx.rt,
            s,
            EventType::Normal,
            "StreamStarted",
            &format!(
                "streaming every change of EtcdCluster {} (segments every {}s)",
                s.spec.cluster_name,
                flush_ms / 1000
            ),
        )
        .await;
    }
    // Bases and new gaps, to and from the running stream.
    let mut new_gaps = Vec::new();
    if let Some(r) = ctx.streams().get(&key) {
        r.bases.send_if_modified(|b| {
            let changed = *b != p.bases;
            if changed {
                b.clone_from(&p.bases);
            }
            changed
        });
        new_gaps = std::mem::take(&mut r.progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner).new_gaps);
    }
    for g in &new_gaps {
        ctx.rt.metrics.stream_gaps.get_or_create(&labels).inc();
        publish(
            &ctx.rt,
            s,
            EventType::Warning,
            "StreamGap",
            &format!(
                "revisions {} to {} are in no segment: etcd compacted them before the stream read them; a new base at revision {} goes on from there",
                g.from, g.to, g.to
            ),
        )
        .await;
    }
    if let Some(why) = &p.base {
        let b = base_for(s, jiff::Timestamp::now());
        match backups.create(&PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }, &b).await
        {
            Ok(_) => {
                publish(
                    &ctx.rt,
                    s,
                    EventType::Normal,
                    "BaseStarted",
                    &format!("created EtcdBackup {}: {why}", b.name_any()),
                )
                .await
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(source) => return Err(Error::Act { what: format!("create EtcdBackup {}", b.name_any()), source }),
        }
    }

    // Status.
    if !wanted {
        ctx.rt.metrics.forget_stream(&labels);
        let old = s.status.as_ref().and_then(|st| st.continuous.clone());
        // Suspended: the window stays what it was; turned off: the status goes.
        let next = match (old, s.spec.continuous.as_ref().is_some_and(|c| c.enabled)) {
            (Some(old), true) => Some(plan::suspended(old)),
            _ => None,
        };
        if s.status.as_ref().and_then(|st| st.continuous.clone()) != next {
            write_status(s, ctx, next).await?;
        }
        return Ok(Action::await_change());
    }
    let progress =
        ctx.streams().get(&key).map(|r| r.progress.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone());
    let next = plan::status(progress.as_ref(), problem.as_deref(), jiff::Timestamp::now().as_millisecond());
    if let Some(lag) = next.lag_seconds {
        ctx.rt.metrics.set_stream(&labels, lag, next.last_revision);
    }
    let old = s.status.as_ref().and_then(|st| st.continuous.clone());
    if old.as_ref() != Some(&next) {
        write_status(s, ctx, Some(next)).await?;
    }
    Ok(Action::requeue(REFRESH))
}

/// A base taken now: an EtcdBackup owned by the schedule, like its cron slots' backups
/// (retention counts it), named apart from them.
fn base_for(s: &EtcdBackupSchedule, now: jiff::Timestamp) -> EtcdBackup {
    let suffix = format!("-base-{}", now.as_second());
    let keep = 253usize.saturating_sub(suffix.len());
    let name: String = s.name_any().chars().take(keep).collect();
    let mut b = EtcdBackup::new(
        &format!("{name}{suffix}"),
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

/// Applies `status.continuous` alone, under this controller's field manager (`None`
/// releases it).
async fn write_status(
    s: &EtcdBackupSchedule,
    ctx: &Context,
    next: Option<crate::api::schedule::ContinuousStatus>,
) -> Result<(), Error> {
    let api: Api<EtcdBackupSchedule> = Api::namespaced(ctx.rt.client.clone(), &s.namespace().unwrap_or_default());
    let value = match next {
        Some(n) => serde_json::json!({ "continuous": n }),
        None => serde_json::json!({}),
    };
    kube_ops::apply_status(&api, FIELD_MANAGER, &s.name_any(), value).await.map_err(Error::Status)
}
