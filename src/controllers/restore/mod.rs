//! The EtcdRestore controller. observe (the restore, its source, the cluster it names)
//! -> [`plan`] (pure) -> act -> status (`status.steps` records each step done).
//!
//! `NewCluster`: the object is read through every check first (the SHA-256 recorded when
//! it was written, etcd's own hash of the db), and only then is the EtcdCluster created,
//! carrying the seed annotation ([`crate::seed`]): its bootstrap member (one; the others join it as learners) seeds its
//! volume from the same object before etcd starts, with the revision bumped above what
//! the source cluster served and older revisions marked compacted.

mod in_place;
#[cfg(test)]
mod pass_tests;
pub mod plan;
mod point;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use self::plan::{Observation, Step, Target};
use crate::api::restore::RestoreStep;
use crate::api::{EtcdBackup, EtcdCluster, EtcdRestore, EtcdRestoreStatus, Phase, S3Target};
use crate::etcd::bbolt;
use crate::runtime::events::{EventType, publish};
use crate::runtime::operation;
use crate::runtime::runner::{self, Category, LeaseRead, PassError};
use crate::runtime::s3::{self, OpenError};
use crate::runtime::{Runtime, kube_ops};
use crate::seed::{self, SeedSource};
use crate::shared::snapshot::{Failure, ObjectPages};

pub const CONTROLLER: &str = "restore";
pub const FIELD_MANAGER: &str = "etcd-pilot-restore";
/// Added to the highest revision known for the source: writes the operator did not see
/// between its last look and the loss are covered.
pub const REVISION_MARGIN: i64 = 1_000_000;
/// When nothing is known of the source's revisions.
pub const REVISION_BUMP_UNKNOWN: i64 = 1_000_000_000;

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

fn observe_err(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Observe { what, source }
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
    let restores: Api<EtcdRestore> = match &namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    runner::run(
        CONTROLLER,
        runner::controller(restores),
        ctx.clone(),
        (ctx.rt.clone(), LeaseRead::Fresh),
        reconcile,
        shutdown,
    )
    .await;
}

pub async fn reconcile(r: Arc<EtcdRestore>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = r.namespace().unwrap_or_default();
    runner::metered(&ctx.rt.metrics, CONTROLLER, &ns, &r.spec.cluster_name, pass(&r, &ctx)).await
}

/// Where the snapshot is, as the source names it.
struct Source {
    target: S3Target,
    key: String,
    /// SHA-256 recorded by the backup, when the source is one.
    sha256: Option<String>,
    /// The cluster the snapshot came from, if known.
    cluster: Option<String>,
    /// A restore to a point: the segments the seed replays onto the base, and what the
    /// restore reaches.
    point: Option<(crate::replay::ReplayTo, crate::api::restore::PointReached)>,
}

async fn resolve(r: &EtcdRestore, ctx: &Context, ns: &str, cluster: Option<&EtcdCluster>) -> Result<Source, OpenError> {
    let client = &ctx.rt.client;
    if let Some(member) = &r.spec.source.member {
        // The survivor's snapshot is staged in the cluster's own backup target.
        let target = cluster.and_then(|c| c.spec.backup.clone()).ok_or_else(|| {
            OpenError::Invalid(format!(
                "source.member {member}: the cluster has no spec.backup to stage the survivor's snapshot in; set one"
            ))
        })?;
        let staged = r.status.as_ref().and_then(|s| s.source_object.clone()).unwrap_or_default();
        let key = staged.strip_prefix(&format!("s3://{}/", target.bucket)).unwrap_or_default().to_string();
        return Ok(Source { target, key, sha256: None, cluster: Some(r.spec.cluster_name.clone()), point: None });
    }
    if let Some(sched) = &r.spec.source.schedule {
        return point::resolve(r, ctx, ns, &sched.name).await;
    }
    match (&r.spec.source.backup, &r.spec.source.s3) {
        (Some(b), None) => {
            let backups: Api<EtcdBackup> = Api::namespaced(client.clone(), ns);
            let backup = backups
                .get_opt(&b.name)
                .await
                .map_err(|e| OpenError::Transient(format!("reading EtcdBackup {}: {e}", b.name)))?
                .ok_or_else(|| OpenError::Invalid(format!("EtcdBackup {} does not exist in namespace {ns}", b.name)))?;
            let status = backup.status.clone().unwrap_or_default();
            if status.phase != Phase::Succeeded {
                return Err(OpenError::Invalid(format!(
                    "EtcdBackup {} is {:?}, not Succeeded: only a finished, verified backup can be restored",
                    b.name, status.phase
                )));
            }
            let target = match backup.spec.target.clone() {
                Some(t) => Some(t),
                None => Api::<EtcdCluster>::namespaced(client.clone(), ns)
                    .get_opt(&backup.spec.cluster_name)
                    .await
                    .map_err(|e| OpenError::Transient(e.to_string()))?
                    .and_then(|c| c.spec.backup),
            };
            if let Some(bucket) = &r.spec.source.copy {
                return from_copy(&backup, bucket, target.and_then(|t| t.encryption));
            }
            let target = target.ok_or_else(|| {
                OpenError::Invalid(format!(
                    "the bucket of EtcdBackup {} is unknown: it has no spec.target and its cluster no spec.backup; restore with source.s3",
                    b.name
                ))
            })?;
            Ok(Source {
                target,
                key: status.object_key.clone().unwrap_or_default(),
                sha256: status.sha256.clone(),
                cluster: Some(backup.spec.cluster_name.clone()),
                point: None,
            })
        }
        (None, Some(o)) => {
            Ok(Source { target: o.target.clone(), key: o.key.clone(), sha256: None, cluster: None, point: None })
        }
        _ => Err(OpenError::Invalid("spec.source: set exactly one of backup or s3".into())),
    }
}

/// The source of a restore from a backup's copy in `bucket`: the copy's target, read
/// with the original's encryption keys (a copy holds the original's very bytes).
fn from_copy(
    backup: &EtcdBackup,
    bucket: &str,
    encryption: Option<crate::api::Encryption>,
) -> Result<Source, OpenError> {
    let status = backup.status.clone().unwrap_or_default();
    let found = backup.spec.copy_to.iter().zip(&status.copies).find(|(t, c)| t.bucket == bucket && c.bucket == bucket);
    match found {
        Some((target, copy)) if copy.phase == Phase::Succeeded => Ok(Source {
            target: S3Target { encryption, ..target.clone() },
            key: copy.object_key.clone().unwrap_or_default(),
            sha256: copy.sha256.clone(),
            cluster: Some(backup.spec.cluster_name.clone()),
            point: None,
        }),
        Some((_, copy)) => Err(OpenError::Invalid(format!(
            "the copy of EtcdBackup {} in bucket {bucket} is {:?}, not Succeeded{}",
            backup.name_any(),
            copy.phase,
            copy.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
        ))),
        None => Err(OpenError::Invalid(format!(
            "EtcdBackup {} has no copy in bucket {bucket} (its spec.copyTo: {})",
            backup.name_any(),
            backup.spec.copy_to.iter().map(|t| t.bucket.as_str()).collect::<Vec<_>>().join(", ")
        ))),
    }
}

fn step_record(name: &str, message: String) -> RestoreStep {
    RestoreStep {
        name: name.into(),
        phase: Phase::Succeeded,
        message: Some(message),
        time: Some(Time(jiff::Timestamp::now())),
    }
}

async fn pass(r: &EtcdRestore, ctx: &Context) -> Result<Action, Error> {
    let ns = r.namespace().unwrap_or_default();
    let status = r.status.clone().unwrap_or_default();
    if status.phase.is_finished() {
        return Ok(Action::await_change());
    }
    let clusters: Api<EtcdCluster> = Api::namespaced(ctx.rt.client.clone(), &ns);
    let existing = clusters.get_opt(&r.spec.cluster_name).await.map_err(observe_err("read the EtcdCluster"))?;
    let available = |ec: &EtcdCluster| {
        ec.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Available" && c.status == "True"))
    };
    let target = match &existing {
        None => Target::Absent,
        Some(ec) => match SeedSource::from_cluster(ec) {
            // Ours, and Available as the restored cluster: with an id other than the one
            // it replaced.
            Some(seed) if seed.restore == r.name_any() => Target::Ours {
                available: available(ec)
                    && ec
                        .status
                        .as_ref()
                        .and_then(|s| s.cluster_id.clone())
                        .is_some_and(|id| Some(id) != seed.replaces),
            },
            _ => Target::Other,
        },
    };
    let holder = operation::Holder::Restore(&r.name_any()).id();
    let slot =
        operation::decide(existing.as_ref().and_then(operation::recorded).as_ref(), &holder, jiff::Timestamp::now());
    let source = resolve(r, ctx, &ns, existing.as_ref()).await;
    let (source, source_problem) = match source {
        Ok(s) => (Some(s), None),
        Err(OpenError::Invalid(m)) => (None, Some(m)),
        Err(OpenError::Transient(m)) => {
            tracing::info!(restore = %r.name_any(), error = %m, "source not reachable; retrying");
            return Ok(Action::requeue(Duration::from_secs(10)));
        }
    };
    let problems: Vec<String> =
        crate::api::validation::validate_restore(&r.spec).iter().map(ToString::to_string).collect();
    let obs = Observation {
        phase: status.phase,
        spec_problem: (!problems.is_empty()).then(|| problems.join("; ")),
        mode: r.spec.mode,
        has_new_cluster: r.spec.new_cluster.is_some(),
        source_problem,
        done: status.steps.iter().filter(|s| s.phase == Phase::Succeeded).map(|s| s.name.clone()).collect(),
        target,
        force: r.spec.force,
        has_quorum: existing.as_ref().is_some_and(available),
        from_member: r.spec.source.member.is_some(),
        slot,
    };
    let step = plan::plan(&obs);
    let mut next = EtcdRestoreStatus {
        start_time: status.start_time.clone().or_else(|| Some(Time(jiff::Timestamp::now()))),
        ..status.clone()
    };
    let requeue = match step {
        Step::Done => return Ok(Action::await_change()),
        Step::Fail(why) => {
            next.phase = Phase::Failed;
            next.error = Some(why.clone());
            next.completion_time = Some(Time(jiff::Timestamp::now()));
            publish(&ctx.rt, r, EventType::Warning, "RestoreFailed", &why).await;
            None
        }
        Step::Wait(why) => {
            next.phase = Phase::Running;
            next.error = Some(why);
            Some(Duration::from_secs(3))
        }
        Step::Verify => {
            let Some(src) = source else { return Ok(Action::requeue(Duration::from_secs(5))) };
            next.phase = Phase::Running;
            match verify(ctx, &ns, &src).await {
                Ok((size, sha, meta, revision)) => {
                    // The snapshot's own revision, not what a backup recorded beside it.
                    let revision = Some(revision);
                    let source_cluster = src.cluster.clone().or_else(|| meta.get("cluster").cloned());
                    let seen = match &source_cluster {
                        Some(c) => clusters
                            .get_opt(c)
                            .await
                            .map_err(observe_err("read the source cluster"))?
                            .and_then(|ec| ec.status.and_then(|s| s.revision)),
                        None => None,
                    };
                    // A restore to a point holds the source's state at the point.
                    let revision = src.point.as_ref().map(|(to, _)| to.upto).or(revision);
                    next.source_revision = revision;
                    next.source_sha256 = Some(sha.clone());
                    next.restored_revision = revision.map(|rev| rev + bump(rev, seen));
                    next.point_in_time = src.point.as_ref().map(|(_, p)| p.clone());
                    if r.spec.source.member.is_none() {
                        next.source_object = Some(format!("s3://{}/{}", src.target.bucket, src.key));
                    }
                    next.steps.push(step_record(
                        plan::VERIFIED,
                        format!(
                            "s3://{}/{}: {size} bytes, sha256 {sha}, etcd revision {}; etcd's own hash checked",
                            src.target.bucket,
                            src.key,
                            revision.map(|r| r.to_string()).unwrap_or_else(|| "unknown".into())
                        ),
                    ));
                    next.error = None;
                    Some(Duration::from_millis(200))
                }
                Err(Failure { message: why, permanent: true }) => {
                    next.phase = Phase::Failed;
                    next.error = Some(why.clone());
                    next.completion_time = Some(Time(jiff::Timestamp::now()));
                    publish(&ctx.rt, r, EventType::Warning, "RestoreFailed", &why).await;
                    None
                }
                Err(Failure { message: why, permanent: false }) => {
                    next.error = Some(format!("reading the snapshot: {why}; retrying"));
                    Some(Duration::from_secs(10))
                }
            }
        }
        Step::CreateCluster => {
            let Some(src) = source else { return Ok(Action::requeue(Duration::from_secs(5))) };
            next.phase = Phase::Running;
            if obs.target == Target::Absent {
                let Some(spec) = r.spec.new_cluster.clone() else { return Ok(Action::requeue(Duration::from_secs(5))) };
                let ec = new_cluster(r, spec, &src, &status);
                match clusters
                    .create(&PostParams { field_manager: Some(FIELD_MANAGER.into()), ..Default::default() }, &ec)
                    .await
                {
                    Ok(_) => {}
                    // Created meanwhile: the next pass sees whose it is.
                    Err(kube::Error::Api(s)) if s.code == 409 => return Ok(Action::requeue(Duration::from_secs(1))),
                    Err(source) => return Err(Error::Act { what: "create the EtcdCluster".into(), source }),
                }
                publish(
                    &ctx.rt,
                    r,
                    EventType::Normal,
                    "ClusterCreated",
                    &format!(
                        "EtcdCluster {} created; its members seed their volumes from s3://{}/{}",
                        r.spec.cluster_name, src.target.bucket, src.key
                    ),
                )
                .await;
            }
            next.steps.push(step_record(plan::CREATED, format!("EtcdCluster {} created", r.spec.cluster_name)));
            Some(Duration::from_secs(3))
        }
        Step::SnapshotSurvivor => {
            let (Some(src), Some(ec)) = (source, existing.as_ref()) else {
                return Ok(Action::requeue(Duration::from_secs(5)));
            };
            next.phase = Phase::Running;
            match in_place::snapshot_survivor(r, ctx, &ns, ec, &src.target).await {
                Ok((object, message)) => {
                    next.source_object = Some(object);
                    next.steps.push(step_record(plan::SURVIVOR, message));
                    next.error = None;
                    Some(Duration::from_millis(200))
                }
                Err(Failure { message: why, permanent: true }) => {
                    next.phase = Phase::Failed;
                    next.error = Some(why.clone());
                    next.completion_time = Some(Time(jiff::Timestamp::now()));
                    publish(&ctx.rt, r, EventType::Warning, "RestoreFailed", &why).await;
                    None
                }
                Err(Failure { message: why, permanent: false }) => {
                    next.error = Some(format!("snapshot of the survivor: {why}; retrying"));
                    Some(Duration::from_secs(10))
                }
            }
        }
        Step::StopMembers => {
            let Some(ec) = existing.as_ref() else { return Ok(Action::requeue(Duration::from_secs(5))) };
            next.phase = Phase::Running;
            match in_place::stop_members(r, ctx, &ns, ec, &holder).await? {
                in_place::Stopped::Done(message) => {
                    publish(&ctx.rt, r, EventType::Normal, "MembersStopped", &message).await;
                    next.steps.push(step_record(plan::STOPPED, message));
                    next.error = None;
                    Some(Duration::from_millis(200))
                }
                in_place::Stopped::NotYet(why) => {
                    next.error = Some(why);
                    Some(Duration::from_secs(2))
                }
            }
        }
        Step::ReplaceData => {
            let (Some(src), Some(ec)) = (source, existing.as_ref()) else {
                return Ok(Action::requeue(Duration::from_secs(5)));
            };
            next.phase = Phase::Running;
            let seed = seed_source(r, &src, &status);
            let message = in_place::replace_data(ctx, &ns, ec, seed, &holder).await?;
            if !status.steps.iter().any(|s| s.name == plan::REPLACED) {
                publish(&ctx.rt, r, EventType::Normal, "DataReplaced", &message).await;
                next.steps.push(step_record(plan::REPLACED, message));
            }
            Some(Duration::from_secs(3))
        }
        Step::Succeed => {
            next.phase = Phase::Succeeded;
            next.error = None;
            next.completion_time = Some(Time(jiff::Timestamp::now()));
            next.steps.push(step_record(plan::AVAILABLE, format!("EtcdCluster {} is Available", r.spec.cluster_name)));
            let note = format!(
                "EtcdCluster {} restored and Available; revisions start above {} (snapshot at {})",
                r.spec.cluster_name,
                next.restored_revision.map(|v| v.to_string()).unwrap_or_else(|| "unknown".into()),
                next.source_revision.map(|v| v.to_string()).unwrap_or_else(|| "unknown".into())
            );
            publish(&ctx.rt, r, EventType::Normal, "RestoreSucceeded", &note).await;
            None
        }
    };
    if r.status.is_none() || next != status {
        let api: Api<EtcdRestore> = Api::namespaced(ctx.rt.client.clone(), &ns);
        let value = serde_json::to_value(&next).unwrap_or_default();
        kube_ops::apply_status(&api, FIELD_MANAGER, &r.name_any(), value).await.map_err(Error::Status)?;
    }
    Ok(match requeue {
        Some(d) => Action::requeue(d),
        None => Action::await_change(),
    })
}

/// How far to move the revision: past the highest revision seen of the source cluster,
/// plus a margin for what was written after that look.
pub fn bump(snapshot_revision: i64, seen: Option<i64>) -> i64 {
    match seen {
        Some(s) => (s - snapshot_revision).max(0) + REVISION_MARGIN,
        None => REVISION_MARGIN,
    }
}

/// Reads the object through its checks.
/// Verifies the source object (its SHA-256 and etcd's own hash) and reads the revision
/// it holds from the snapshot itself: its size, hash, metadata and revision.
async fn verify(
    ctx: &Context,
    ns: &str,
    src: &Source,
) -> Result<(u64, String, std::collections::HashMap<String, String>, i64), Failure> {
    let store = s3::open(&ctx.rt.client, ns, &src.target).await?;
    let failed =
        |e: String, permanent| Failure { message: format!("s3://{}/{}: {e}", src.target.bucket, src.key), permanent };
    let (size, sha, meta) = seed::verify_object(&store, &src.key, src.sha256.as_deref()).await.map_err(|e| {
        let permanent = match &e {
            seed::SeedError::Download(se) => s3::permanent(se),
            seed::SeedError::Mismatch { .. } | seed::SeedError::NotASnapshot { .. } => true,
            _ => false,
        };
        failed(e.to_string(), permanent)
    })?;
    // A restore to a point: every segment it replays read through its checks too (the
    // SHA-256 the index recorded, whole consecutive revisions, every revision covered).
    if let Some((to, _)) = &src.point {
        let index = crate::shared::stream::read_index(&store, &to.prefix)
            .await
            .map_err(|e| Failure::transient(format!("reading the continuous backup's index: {e}")))?;
        let refs = crate::replay::segments_for(&index, to.base_revision, to.upto)
            .map_err(|e| Failure { message: e.to_string(), permanent: true })?;
        for r in &refs {
            crate::replay::read_segment(&store, r).await.map_err(|e| {
                let permanent = matches!(
                    e,
                    crate::replay::ReplayError::Mismatch { .. } | crate::replay::ReplayError::Invalid { .. }
                );
                Failure { message: e.to_string(), permanent }
            })?;
        }
    }
    let mut pages = ObjectPages { store: &store, key: &src.key };
    let revision = bbolt::snapshot_revision(&mut pages).await.map_err(|e| {
        let permanent = matches!(e, bbolt::Unreadable::Format(_) | bbolt::Unreadable::NoBucket(_));
        failed(format!("reading its revision: {e}"), permanent)
    })?;
    Ok((size, sha, meta, revision))
}

fn seed_source(r: &EtcdRestore, src: &Source, status: &EtcdRestoreStatus) -> SeedSource {
    let bump = match (status.restored_revision, status.source_revision) {
        (Some(to), Some(from)) => to - from,
        _ => REVISION_BUMP_UNKNOWN,
    };
    SeedSource {
        restore: r.name_any(),
        bucket: src.target.bucket.clone(),
        key: src.key.clone(),
        sha256: status.source_sha256.clone().or_else(|| src.sha256.clone()).unwrap_or_default(),
        endpoint: src.target.endpoint.clone(),
        region: src.target.region.clone(),
        path_style: src.target.path_style(),
        credentials_secret: src.target.credentials_secret.clone(),
        bump_revision: bump,
        replaces: None,
        replay: src.point.as_ref().map(|(to, _)| to.clone()),
        encryption_keys: src.target.encryption.as_ref().map(|e| e.keys.clone()).unwrap_or_default(),
    }
}

fn new_cluster(
    r: &EtcdRestore,
    spec: crate::api::EtcdClusterSpec,
    src: &Source,
    status: &EtcdRestoreStatus,
) -> EtcdCluster {
    let seed = seed_source(r, src, status);
    let mut ec = EtcdCluster::new(&r.spec.cluster_name, spec);
    ec.meta_mut().namespace = r.namespace();
    ec.meta_mut().annotations =
        Some(BTreeMap::from([(seed::ANNOTATION.to_string(), serde_json::to_string(&seed).unwrap_or_default())]));
    ec.meta_mut().labels = Some(BTreeMap::from([("etcdpilot.io/restored-by".to_string(), r.name_any())]));
    ec
}
