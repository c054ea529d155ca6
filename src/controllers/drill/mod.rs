//! The restore-drill controller: for each EtcdBackupSchedule with `spec.verify`, on its
//! cron slots, the newest successful backup restored into a scratch single-member etcd
//! in a pod of its own ([`pod`], running [`crate::drill`]) and judged against what the
//! backup claims and a live member ([`plan::verdict`]). observe (the schedule, its
//! backups, the drill pod) -> [`plan`] (pure) -> act (create the pod; read its verdict
//! and a live member's `HashKV`; delete the pod with its volume) -> status
//! (`status.lastVerification`, `lastSuccessfulVerificationTime`,
//! `nextVerificationTime`, under its own field manager), a metric and an Event.
//!
//! One pod name per schedule: never two drills of a schedule at once. The drill reads
//! the store, not the cluster: it takes no operation slot (the live member is asked one
//! `HashKV`, a read).

#[cfg(test)]
mod pass_tests;
pub mod plan;
pub mod pod;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::watcher;

use self::plan::{Claim, Live, Observation, Step};
use crate::api::schedule::{Verification, VerificationResult};
use crate::api::{EtcdBackup, EtcdBackupSchedule, EtcdCluster, Phase, validation};
use crate::drill::Outcome;
use crate::etcd::EtcdAdmin;
use crate::metrics::{ScheduleLabels, VerificationLabels};
use crate::runtime::events::{EventType, publish};
use crate::runtime::runner::{self, Category, LeaseRead, PassError};
use crate::runtime::{Runtime, kube_ops};
use crate::seed::SeedSource;
use crate::shared::cron;
use crate::shared::names::SCHEDULE_LABEL;

pub const CONTROLLER: &str = "drill";
pub const FIELD_MANAGER: &str = "etcd-pilot-drill";

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

fn observe_err(what: &str) -> impl FnOnce(kube::Error) -> Error + '_ {
    move |source| Error::Observe { what: what.to_string(), source }
}

fn act_err(what: String) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Act { what, source }
}

pub struct Context {
    pub rt: Arc<Runtime>,
    /// The image drill pods run (the operator's own: `etcd`, `etcdutl`, `etcd-pilot`).
    pub operator_image: String,
}

pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.rt.client.clone();
    let (schedules, pods): (Api<EtcdBackupSchedule>, Api<Pod>) = match &namespace {
        Some(ns) => (Api::namespaced(client.clone(), ns), Api::namespaced(client, ns)),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    let controller =
        runner::controller(schedules).owns(pods, watcher::Config::default().labels(pod::LABEL).any_semantic());
    runner::run(CONTROLLER, controller, ctx.clone(), (ctx.rt.clone(), LeaseRead::Shared), reconcile, shutdown).await;
}

pub async fn reconcile(s: Arc<EtcdBackupSchedule>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = s.namespace().unwrap_or_default();
    runner::metered(&ctx.rt.metrics, CONTROLLER, &ns, &s.spec.cluster_name, pass(&s, &ctx)).await
}

/// The drill pod as the plan sees it.
fn observed(p: &Pod) -> plan::Pod {
    let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or_default();
    let backup = pod::backup_of(p);
    let status = p.status.clone().unwrap_or_default();
    let terminated =
        status.container_statuses.iter().flatten().find_map(|c| c.state.as_ref().and_then(|s| s.terminated.clone()));
    match (status.phase.as_deref(), terminated) {
        (_, Some(t)) => {
            let message = t.message.clone().unwrap_or_default();
            let outcome = if message.trim().is_empty() {
                Outcome::Failed(format!(
                    "the drill pod ended ({}, exit code {}) without a verdict",
                    t.reason.as_deref().unwrap_or("terminated"),
                    t.exit_code
                ))
            } else {
                Outcome::parse(&message)
            };
            let finished = t.finished_at.map(|f| f.0).unwrap_or(created);
            plan::Pod::Ended { backup, created, finished, outcome }
        }
        (Some("Failed"), None) => plan::Pod::Ended {
            backup,
            created,
            finished: created,
            outcome: Outcome::Failed(format!(
                "the drill pod failed ({}): {}",
                status.reason.as_deref().unwrap_or("unknown"),
                status.message.as_deref().unwrap_or("no message")
            )),
        },
        _ => plan::Pod::Running { backup, created },
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
    let client = ctx.rt.client.clone();
    // An invalid expression is the schedule controller's to report (spec.verify.schedule).
    let cron = s.spec.verify.as_ref().and_then(|v| validation::parse_cron(&v.schedule).ok());
    let tz =
        s.spec.time_zone.as_deref().and_then(|z| jiff::tz::TimeZone::get(z).ok()).unwrap_or(jiff::tz::TimeZone::UTC);

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pod_name = pod::name(&name);
    let found = pods.get_opt(&pod_name).await.map_err(observe_err("read the drill pod"))?;
    let found = found.filter(|p| p.owner_references().iter().any(|o| Some(&o.uid) == s.uid().as_ref()));
    let backups: Api<EtcdBackup> = Api::namespaced(client.clone(), &ns);
    let mine: Vec<EtcdBackup> = backups
        .list(&ListParams::default().labels(&format!("{SCHEDULE_LABEL}={name}")))
        .await
        .map_err(observe_err("list the schedule's backups"))?
        .items
        .into_iter()
        .filter(|b| b.owner_references().iter().any(|o| Some(&o.uid) == s.uid().as_ref()))
        .filter(|b| b.metadata.deletion_timestamp.is_none())
        .filter(|b| b.status.as_ref().is_some_and(|st| st.phase == Phase::Succeeded))
        .collect();
    let newest = mine
        .iter()
        .max_by_key(|b| (b.status.as_ref().and_then(|st| st.completion_time.clone()).map(|t| t.0), b.name_any()));
    let last = status.last_verification.clone();
    let since = last
        .as_ref()
        .and_then(|v| v.time.as_ref())
        .or(s.metadata.creation_timestamp.as_ref())
        .map(|t| t.0)
        .unwrap_or(now);
    let obs = Observation {
        verify: cron.is_some(),
        due: cron.as_ref().is_some_and(|c| cron::due_slot(c, &tz, since, now).is_some()),
        newest: newest.map(ResourceExt::name_any),
        pod: found.as_ref().map_or(plan::Pod::Absent, observed),
        recorded: last.as_ref().and_then(|v| Some((v.backup.clone(), v.time.as_ref()?.0))),
        now,
    };
    let labels = ScheduleLabels { namespace: ns.clone(), schedule: name.clone(), cluster: s.spec.cluster_name.clone() };
    let mut record: Option<Verification> = None;
    let mut requeue = Duration::from_secs(10);
    match plan::plan(&obs) {
        Step::Idle | Step::Wait => {}
        Step::Start(backup) => {
            let b = mine.iter().find(|b| b.name_any() == backup);
            match source_of(ctx, &ns, b).await? {
                Ok(source) => {
                    let p = pod::build(s, &backup, &source, &ctx.operator_image);
                    if kube_ops::create_if_absent(&pods, FIELD_MANAGER, &p)
                        .await
                        .map_err(act_err(format!("create Pod {pod_name}")))?
                    {
                        let msg = format!("restoring EtcdBackup {backup} into a scratch member (pod {pod_name})");
                        publish(&ctx.rt, s, EventType::Normal, "VerificationStarted", &msg).await;
                    }
                    requeue = Duration::from_secs(5);
                }
                Err(why) => {
                    let v = verification(&backup, VerificationResult::Failed, why, now, None);
                    record = Some(v);
                }
            }
        }
        Step::Judge(at) => {
            if let plan::Pod::Ended { backup, created, outcome, .. } = &obs.pod {
                let b = mine.iter().find(|x| &x.name_any() == backup);
                let claim = Claim {
                    revision: b.and_then(|b| b.status.as_ref()?.etcd_revision),
                    key_count: b.and_then(|b| b.status.as_ref()?.key_count),
                };
                let live = match outcome {
                    Outcome::Restored(r) => live_hash(ctx, &ns, &s.spec.cluster_name, r.revision).await,
                    Outcome::Failed(_) => Live::Unavailable("the backup did not restore".into()),
                };
                let (result, message) = match b {
                    None => {
                        (VerificationResult::Failed, format!("EtcdBackup {backup} is gone: nothing to compare with"))
                    }
                    Some(_) => plan::verdict(outcome, &claim, &live),
                };
                record = Some(verification(backup, result, message, at, Some((at - *created).get_seconds())));
            }
        }
        Step::GiveUp(at) => {
            let backup = match &obs.pod {
                plan::Pod::Running { backup, .. } => backup.clone(),
                _ => String::new(),
            };
            let why = format!(
                "the drill pod {pod_name} did not finish within {} minutes (no node, or no image?)",
                plan::GIVE_UP_SECS / 60
            );
            record = Some(verification(&backup, VerificationResult::Failed, why, at, Some(plan::GIVE_UP_SECS)));
        }
        Step::Remove => {
            let uid = found.as_ref().and_then(|p| p.uid());
            kube_ops::delete_if_present(&pods, &pod_name, uid)
                .await
                .map_err(act_err(format!("delete Pod {pod_name}")))?;
        }
    }
    if let Some(v) = &record {
        let (type_, reason, result) = match v.result {
            VerificationResult::Passed => (EventType::Normal, "VerificationPassed", "passed"),
            VerificationResult::Failed => (EventType::Warning, "VerificationFailed", "failed"),
        };
        let note = format!("EtcdBackup {}: {}", v.backup, v.message.clone().unwrap_or_default());
        publish(&ctx.rt, s, type_, reason, &note).await;
        let l = VerificationLabels {
            namespace: ns.clone(),
            schedule: name.clone(),
            cluster: s.spec.cluster_name.clone(),
            result: result.into(),
        };
        ctx.rt.metrics.verifications.get_or_create(&l).inc();
        requeue = Duration::from_secs(1);
    }
    let last = record.clone().or(last);
    let last_pass = match &record {
        Some(v) if v.result == VerificationResult::Passed => v.time.clone(),
        _ => status.last_successful_verification_time.clone(),
    };
    let next = cron.as_ref().and_then(|c| cron::next_slot(c, &tz, now));
    ctx.rt.metrics.set_verification(
        &labels,
        cron.as_ref().map(|c| {
            let interval = cron::interval(c, &tz, now).unwrap_or(0);
            // Never passed: counted from the schedule's creation (the alert then fires
            // on drills that never work, too).
            let since = last_pass.as_ref().or(s.metadata.creation_timestamp.as_ref()).map_or(0, |t| t.0.as_second());
            (interval, since)
        }),
    );
    let want = serde_json::json!({
        "lastVerification": last,
        "lastSuccessfulVerificationTime": last_pass,
        "nextVerificationTime": next.map(Time),
    });
    let have = serde_json::json!({
        "lastVerification": status.last_verification,
        "lastSuccessfulVerificationTime": status.last_successful_verification_time,
        "nextVerificationTime": status.next_verification_time,
    });
    if want != have {
        let api: Api<EtcdBackupSchedule> = Api::namespaced(client, &ns);
        // Nulls dropped: applying no field under this manager removes the one it owned.
        let value: serde_json::Map<String, serde_json::Value> = want
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        kube_ops::apply_status(&api, FIELD_MANAGER, &name, serde_json::Value::Object(value))
            .await
            .map_err(Error::Status)?;
    }
    if matches!(obs.pod, plan::Pod::Absent) && record.is_none() {
        let until = next.map_or(300, |t| (t - now).get_seconds().clamp(1, 300));
        requeue = Duration::from_secs(u64::try_from(until).unwrap_or(300));
    }
    Ok(Action::requeue(requeue))
}

fn verification(
    backup: &str,
    result: VerificationResult,
    message: String,
    at: jiff::Timestamp,
    seconds: Option<i64>,
) -> Verification {
    Verification {
        time: Some(Time(at)),
        backup: backup.into(),
        result,
        message: Some(message),
        duration_seconds: seconds,
    }
}

/// Where the drill reads the backup: its target (else its cluster's), its object and
/// SHA-256; `Err` says why there is nothing to read.
async fn source_of(ctx: &Context, ns: &str, b: Option<&EtcdBackup>) -> Result<Result<SeedSource, String>, Error> {
    let Some(b) = b else { return Ok(Err("the backup is gone".into())) };
    let status = b.status.clone().unwrap_or_default();
    let target = match &b.spec.target {
        Some(t) => Some(t.clone()),
        None => Api::<EtcdCluster>::namespaced(ctx.rt.client.clone(), ns)
            .get_opt(&b.spec.cluster_name)
            .await
            .map_err(observe_err("read the EtcdCluster"))?
            .and_then(|c| c.spec.backup),
    };
    let Some(t) = target else {
        return Ok(Err(format!(
            "the bucket of EtcdBackup {} is unknown (no spec.target, no cluster spec.backup)",
            b.name_any()
        )));
    };
    Ok(Ok(SeedSource {
        restore: format!("drill of {}", b.name_any()),
        bucket: t.bucket.clone(),
        key: status.object_key.unwrap_or_default(),
        sha256: status.sha256.unwrap_or_default(),
        endpoint: t.endpoint.clone(),
        region: t.region.clone(),
        path_style: t.path_style(),
        credentials_secret: t.credentials_secret.clone(),
        bump_revision: 0,
        replaces: None,
        replay: None,
        encryption_keys: t.encryption.map(|e| e.keys).unwrap_or_default(),
    }))
}

/// `HashKV` at `revision` from the first healthy voting member that answers.
async fn live_hash(ctx: &Context, ns: &str, cluster: &str, revision: i64) -> Live {
    let clusters: Api<EtcdCluster> = Api::namespaced(ctx.rt.client.clone(), ns);
    let ec = match clusters.get_opt(cluster).await {
        Ok(Some(ec)) => ec,
        Ok(None) => return Live::Unavailable(format!("EtcdCluster {cluster} does not exist")),
        Err(e) => return Live::Unavailable(format!("reading EtcdCluster {cluster}: {e}")),
    };
    let config = match crate::shared::secrets::etcd_config(&ctx.rt.client, &ec, None).await {
        Ok(c) => c,
        Err(e) => return Live::Unavailable(format!("no client certificate: {e}")),
    };
    let members: Vec<(String, String)> = ec
        .status
        .iter()
        .flat_map(|st| st.members.iter())
        .filter(|m| m.healthy && !m.learner && !m.corrupt)
        .filter_map(|m| Some((m.name.clone(), m.client_urls.first()?.clone())))
        .collect();
    let admin = EtcdAdmin::new(members.iter().map(|(_, e)| e.clone()).collect(), config);
    let mut errors = Vec::new();
    for (member, endpoint) in &members {
        match admin.hash_kv(endpoint, revision).await {
            Ok((hash, compact_revision)) => return Live::Hash { member: member.clone(), hash, compact_revision },
            Err(e) if e.to_string().contains("required revision has been compacted") => {
                return Live::Unavailable(format!("the cluster has compacted past revision {revision}"));
            }
            Err(e) => errors.push(format!("{member}: {e}")),
        }
    }
    admin.disconnect();
    Live::Unavailable(if errors.is_empty() { "no healthy voting member".into() } else { errors.join("; ") })
}
