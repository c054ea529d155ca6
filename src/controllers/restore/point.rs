//! A restore to a point: the source is a schedule's continuous backup (its index names
//! the bases and segments); what the restore reads and reaches is resolved here.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;

use super::{Context, Source};
use crate::api::{EtcdCluster, EtcdRestore};
use crate::runtime::s3::{self, OpenError};

/// A schedule's continuous backup as the source: the point recorded when the source was
/// verified, or else the one the index resolves now (the newest base at or before it and
/// the segments after it; a time resolved to the last revision received by then, read from
/// the segment that holds it). A point outside the window is refused, the window named.
pub(super) async fn resolve(r: &EtcdRestore, ctx: &Context, ns: &str, schedule: &str) -> Result<Source, OpenError> {
    use crate::shared::window::Point;
    let client = &ctx.rt.client;
    let s = Api::<crate::api::EtcdBackupSchedule>::namespaced(client.clone(), ns)
        .get_opt(schedule)
        .await
        .map_err(|e| OpenError::Transient(format!("reading EtcdBackupSchedule {schedule}: {e}")))?
        .ok_or_else(|| OpenError::Invalid(format!("EtcdBackupSchedule {schedule} does not exist in namespace {ns}")))?;
    let cluster = s.spec.cluster_name.clone();
    let target = match s.spec.target.clone() {
        Some(t) => Some(t),
        None => Api::<EtcdCluster>::namespaced(client.clone(), ns)
            .get_opt(&cluster)
            .await
            .map_err(|e| OpenError::Transient(e.to_string()))?
            .and_then(|c| c.spec.backup),
    }
    .ok_or_else(|| {
        OpenError::Invalid(format!(
            "the bucket of EtcdBackupSchedule {schedule} is unknown: it has no spec.target and its cluster no spec.backup"
        ))
    })?;
    // From a copy (`source.copy`): the copy's store, read with the original's keys.
    let target = match &r.spec.source.copy {
        None => target,
        Some(bucket) => {
            let copy = s.spec.copy_to.iter().find(|t| &t.bucket == bucket).ok_or_else(|| {
                OpenError::Invalid(format!(
                    "EtcdBackupSchedule {schedule} has no copy in bucket {bucket} (spec.copyTo)"
                ))
            })?;
            crate::api::S3Target { encryption: target.encryption.clone(), ..copy.clone() }
        }
    };
    let store = s3::open(client, ns, &target).await?;
    let prefix = store.stream_prefix(ns, &cluster, schedule);
    let status = r.status.clone().unwrap_or_default();
    if let (Some(p), Some(sha)) = (status.point_in_time.clone(), status.source_sha256.clone()) {
        let to = crate::replay::ReplayTo { prefix, base_revision: p.base_revision, upto: p.revision };
        return Ok(Source {
            target,
            key: p.base_object.clone(),
            sha256: Some(sha),
            cluster: Some(cluster),
            point: Some((to, p)),
        });
    }
    let index = crate::shared::stream::read_index(&store, &prefix)
        .await
        .map_err(|e| OpenError::Transient(format!("reading the continuous backup's index: {e}")))?;
    let point = match &r.spec.point_in_time {
        None => Point::Latest,
        Some(p) => match (p.revision, &p.time) {
            (Some(rev), _) => Point::Revision(rev),
            (None, Some(t)) => Point::Time(t.0.as_millisecond()),
            (None, None) => Point::Latest,
        },
    };
    let plan = index.plan(point).map_err(|e| {
        OpenError::Invalid(format!("spec.pointInTime: {e} (EtcdBackupSchedule {schedule}'s continuous backup)"))
    })?;
    let (revision, segments) = match plan.upto {
        crate::shared::window::Upto::Revision(rev) => (rev, plan.segments.clone()),
        crate::shared::window::Upto::Time(t) => {
            let revision = match plan.segments.last() {
                None => plan.base.revision,
                Some(last) => {
                    let seg = crate::replay::read_segment(&store, last)
                        .await
                        .map_err(|e| OpenError::Transient(format!("resolving the time: {e}")))?;
                    let at = crate::replay::revision_at(std::slice::from_ref(&seg), plan.base.revision, t);
                    // None of the last segment's revisions came by then: the one before ends it.
                    if at == plan.base.revision && seg.first > plan.base.revision + 1 { seg.first - 1 } else { at }
                }
            };
            (revision, plan.segments.iter().filter(|s| s.first <= revision).cloned().collect())
        }
    };
    let time = segments
        .last()
        .filter(|s| s.last == revision)
        .map(|s| s.last_ms)
        .or_else(|| (revision == plan.base.revision).then_some(plan.base.time_ms))
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map(Time);
    let reached = crate::api::restore::PointReached {
        base_object: plan.base.key.clone(),
        base_revision: plan.base.revision,
        segments: segments.iter().map(|s| s.key.clone()).collect(),
        revision,
        time,
    };
    let to = crate::replay::ReplayTo { prefix, base_revision: plan.base.revision, upto: revision };
    Ok(Source {
        target,
        key: plan.base.key.clone(),
        sha256: Some(plan.base.sha256.clone()),
        cluster: Some(cluster),
        point: Some((to, reached)),
    })
}
