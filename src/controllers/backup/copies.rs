//! The copies of a backup that succeeded (`spec.copyTo`): written one at a time, each the
//! very bytes of the original streamed from its store into the copy's and checked there
//! against the original's SHA-256 ([`BackupStore::copy_to`]). No operation slot: etcd
//! is not touched. Deleting the EtcdBackup deletes the copies too, under its
//! `deletionPolicy`.

use std::time::{Duration, Instant};

use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::Action;

use super::plan::{self, CopyStep};
use super::{Context, Error, Key, act, error, write_status};
use crate::api::backup::BackupCopy;
use crate::api::{EtcdBackup, EtcdBackupStatus, EtcdCluster, Phase, S3Target};
use crate::backup_store::BackupStore;
use crate::runtime::events::{EventType, publish};
use crate::runtime::s3::{self, OpenError};

/// The target the original was written to: the backup's, else its cluster's.
pub(super) async fn source_target(b: &EtcdBackup, ctx: &Context) -> Result<Option<S3Target>, Error> {
    if let Some(t) = &b.spec.target {
        return Ok(Some(t.clone()));
    }
    let clusters: Api<EtcdCluster> = Api::namespaced(ctx.rt.client.clone(), &b.namespace().unwrap_or_default());
    Ok(clusters
        .get_opt(&b.spec.cluster_name)
        .await
        .map_err(error::observe(format!("read EtcdCluster {}", b.spec.cluster_name)))?
        .and_then(|c| c.spec.backup))
}

/// One step of the copies: the next one written (or an attempt recorded), or nothing.
pub(super) async fn pass(b: &EtcdBackup, ctx: &Context, status: &EtcdBackupStatus) -> Result<Action, Error> {
    let phases: Vec<(Phase, u32)> =
        status.copies.iter().map(|c| (c.phase, u32::try_from(c.attempts.unwrap_or(0)).unwrap_or(0))).collect();
    let CopyStep::Copy { index, attempt } = plan::copy_step(b.spec.copy_to.len(), &phases) else {
        return Ok(Action::await_change());
    };
    let ns = b.namespace().unwrap_or_default();
    let key: Key = (ns.clone(), format!("{}#copy-{index}", b.name_any()));
    let waited = ctx.failed_at.lock().unwrap_or_else(|p| p.into_inner()).get(&key).copied();
    if let Some(at) = waited {
        let left = act::backoff(attempt.saturating_sub(1)).saturating_sub(at.elapsed());
        if !left.is_zero() {
            return Ok(Action::requeue(left));
        }
    }
    let Some(dest) = b.spec.copy_to.get(index) else { return Ok(Action::await_change()) };
    let object = status.object_key.clone().unwrap_or_default();
    let result = copy(b, ctx, &ns, dest, &object).await;
    let mut copies = status.copies.clone();
    copies.resize_with(b.spec.copy_to.len().max(copies.len()), BackupCopy::default);
    let record = &mut copies[index];
    record.bucket = dest.bucket.clone();
    record.attempts = Some(i32::try_from(attempt).unwrap_or(i32::MAX));
    match result {
        Ok(up) => {
            ctx.failed_at.lock().unwrap_or_else(|p| p.into_inner()).remove(&key);
            *record = BackupCopy {
                phase: Phase::Succeeded,
                object_key: Some(up.key.clone()),
                sha256: Some(up.sha256.clone()),
                completion_time: Some(act::now()),
                error: None,
                ..record.clone()
            };
            let msg = format!("copied to s3://{}/{} (sha256 {}, the original's)", dest.bucket, up.key, up.sha256);
            publish(&ctx.rt, b, EventType::Normal, "BackupCopied", &msg).await;
        }
        Err((why, permanent)) => {
            record.phase = plan::after_failed_copy(attempt, permanent);
            record.error = Some(why.clone());
            if record.phase == Phase::Failed {
                record.completion_time = Some(act::now());
                let msg = format!("the copy to bucket {} failed: {why}", dest.bucket);
                publish(&ctx.rt, b, EventType::Warning, "BackupCopyFailed", &msg).await;
            } else {
                ctx.failed_at.lock().unwrap_or_else(|p| p.into_inner()).insert(key, Instant::now());
            }
        }
    }
    let next = EtcdBackupStatus { copies, ..status.clone() };
    write_status(b, ctx, status, next).await?;
    Ok(Action::requeue(Duration::from_secs(1)))
}

/// Opens both stores and copies the object; the error says whether retrying can help.
async fn copy(
    b: &EtcdBackup,
    ctx: &Context,
    ns: &str,
    dest: &S3Target,
    object: &str,
) -> Result<crate::backup_store::Uploaded, (String, bool)> {
    let open_err = |what: &str, e: OpenError| match e {
        OpenError::Invalid(m) => (format!("{what}: {m}"), true),
        OpenError::Transient(m) => (format!("{what}: {m}"), false),
    };
    let source = source_target(b, ctx).await.map_err(|e| (e.to_string(), false))?.ok_or_else(|| {
        ("the original's target is unknown (no spec.target, no cluster spec.backup)".to_string(), true)
    })?;
    let from = s3::open(&ctx.rt.client, ns, &source).await.map_err(|e| open_err("the original's store", e))?;
    let to = s3::open(&ctx.rt.client, ns, dest).await.map_err(|e| open_err("the copy's store", e))?;
    from.copy_to(object, &to).await.map_err(|e| (e.to_string(), s3::permanent(&e)))
}

/// Deletes the copies written, with the EtcdBackup (its `deletionPolicy` is `Delete`).
/// A copy that cannot be deleted for good (its Secret or bucket is gone) is left, with
/// an Event; one that could not be reached is tried again.
pub(super) async fn delete_all(b: &EtcdBackup, ctx: &Context, status: &EtcdBackupStatus) -> Result<(), Error> {
    let ns = b.namespace().unwrap_or_default();
    for (c, target) in status.copies.iter().zip(&b.spec.copy_to) {
        let Some(object) = &c.object_key else { continue };
        let left = |why: String| format!("the copy s3://{}/{object} was left in its bucket: {why}", c.bucket);
        let store = match s3::credentials(&ctx.rt.client, &ns, target).await {
            Ok(creds) => BackupStore::new(crate::backup_store::StoreConfig::from_target(target, creds))
                .await
                .map_err(|e| Error::Cleanup(e.to_string()))?,
            Err(OpenError::Invalid(m)) => {
                publish(&ctx.rt, b, EventType::Warning, "BackupObjectLeft", &left(m)).await;
                continue;
            }
            Err(OpenError::Transient(m)) => return Err(Error::Cleanup(m)),
        };
        match store.delete(object).await {
            Ok(()) => {}
            Err(e) if s3::permanent(&e) => {
                publish(&ctx.rt, b, EventType::Warning, "BackupObjectLeft", &left(e.to_string())).await
            }
            Err(e) => return Err(Error::Cleanup(e.to_string())),
        }
    }
    Ok(())
}
