//! Act: the IO of a pass's step (the writes before it are `objects`'), fenced when it
//! is disruptive.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use super::build::{self, Join};
use super::ca_rotation;
use super::context::{CONTROLLER, Context, FIELD_MANAGER};
use super::error::{self, Error};
use super::maintenance::Outcome;
use super::observe::EtcdView;
use super::step::Step;
use crate::api::EtcdCluster;
use crate::api::cluster::StorageMedium;
use crate::etcd::{AlarmKind, EtcdAdmin, EtcdError, Refusal};
use crate::runtime::events::{EventType, publish};
use crate::runtime::kube_ops::{annotate_if_unchanged, create_if_absent, delete_if_present};
use crate::runtime::operation::{self, Operation, Taken};
use crate::shared::names::{BOOTSTRAP_ANNOTATION, CLUSTER_ID_ANNOTATION, Names};
use crate::shared::names::{REMOVED_ANNOTATION, REMOVED_TO_DELETE};

/// Records the members of a bootstrap before its first pod is created, with the
/// object's resourceVersion as a precondition. Returns false when the object changed
/// meanwhile (look again).
pub async fn record_bootstrap(ec: &EtcdCluster, ctx: &Context, members: &[String]) -> Result<bool, Error> {
    let api: Api<EtcdCluster> = Api::namespaced(ctx.rt.client.clone(), &ec.namespace().unwrap_or_default());
    let members = serde_json::to_string(members).unwrap_or_default();
    annotate_if_unchanged(&api, ec, BOOTSTRAP_ANNOTATION, &members).await.map_err(error::record("record the bootstrap"))
}

/// The fence before a disruptive step: the cluster's operation slot taken with the
/// resourceVersion of a fresh read as precondition (a replica acting on an old view
/// gets a conflict), then the Lease read again. `Ok(Some(why))`: do not act.
pub async fn fence(ec: &EtcdCluster, ctx: &Context, step: &Step) -> Result<Option<String>, Error> {
    let api: Api<EtcdCluster> = Api::namespaced(ctx.rt.client.clone(), &ec.namespace().unwrap_or_default());
    let fresh = api.get(&ec.name_any()).await.map_err(error::record("read the EtcdCluster before acting"))?;
    if fresh.metadata.generation != ec.metadata.generation {
        return Ok(Some("the spec changed since this pass read it".into()));
    }
    let (reason, _) = super::status::describe(step);
    let now = jiff::Timestamp::now();
    let op = Operation {
        kind: reason.to_string(),
        member: step.member().map(str::to_string),
        controller: CONTROLLER.into(),
        holder: ctx.rt.instance.clone(),
        since: now,
        expires: now + jiff::SignedDuration::from_mins(10),
    };
    match operation::take(&api, &fresh, &op).await.map_err(error::record("take the operation slot"))? {
        Taken::Yes => {}
        Taken::Lost(why) => return Ok(Some(why)),
    }
    if !ctx.rt.lease.holds_fresh(&ctx.rt.client).await.map_err(Error::Lease)? {
        return Ok(Some(format!("the leader-election Lease {} is no longer held", ctx.rt.lease.describe())));
    }
    Ok(None)
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
async fn create_member(
    ec: &EtcdCluster,
    ctx: &Context,
    ns: &str,
    member: &str,
    join: &Join,
    trust: Option<&str>,
) -> Result<(), Error> {
    if let Some(pvc) = build::member_pvc(ec, member) {
        let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.rt.client.clone(), ns);
        create_if_absent(&api, FIELD_MANAGER, &pvc)
            .await
            .map_err(error::act_kube(format!("create PVC of {member}")))?;
    }
    let mut pod =
        build::member_pod(ec, member, join, &ctx.settings.etcd_image_repository, &ctx.settings.operator_image);
    if let Some(t) = trust {
        pod.annotations_mut().insert(ca_rotation::TRUST_ANNOTATION.into(), t.into());
    }
    let api: Api<Pod> = Api::namespaced(ctx.rt.client.clone(), ns);
    create_if_absent(&api, FIELD_MANAGER, &pod).await.map_err(error::act_kube(format!("create pod {member}")))?;
    Ok(())
}

/// etcd refuses membership changes for a few seconds after a member (re)connects
/// ("unhealthy cluster"), and promotion of a learner still catching up: both mean "not
/// yet", not failure.
pub fn not_yet(e: &EtcdError) -> bool {
    e.refusal().is_some_and(Refusal::is_not_yet)
}

/// What new member pods are made from besides the spec.
#[derive(Clone, Copy, Debug, Default)]
pub struct Making<'a> {
    /// Members with a volume.
    pub volumes: &'a [String],
    /// Fingerprint of the CAs members trust now (recorded on the pod).
    pub trust: Option<&'a str>,
}

/// Does the one step. Returns whether it was done (false: etcd said not yet).
pub async fn act(
    ec: &EtcdCluster,
    ctx: &Context,
    names: &Names,
    step: &Step,
    view: Option<&EtcdView>,
    making: Making<'_>,
    admin: &EtcdAdmin,
) -> Result<bool, Error> {
    let volumes = making.volumes;
    let ns = names.namespace.as_str();
    let pods: Api<Pod> = Api::namespaced(ctx.rt.client.clone(), ns);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.rt.client.clone(), ns);
    let (reason, note) = super::status::describe(step);
    match step {
        Step::Idle | Step::Wait(_) | Step::Blocked(_) => return Ok(false),
        Step::Compact { .. } | Step::Defragment { .. } | Step::Disarm { .. } => {
            return maintain(ec, ctx, names, step, view, admin).await.map(|(done, _)| done);
        }
        Step::Bootstrap { members, create } => {
            let join = Join {
                initial_cluster: members.iter().map(|m| (m.clone(), names.peer_url(m))).collect(),
                existing: false,
            };
            for m in create {
                create_member(ec, ctx, ns, m, &join, making.trust).await?;
            }
        }
        Step::RecreatePod { name } | Step::CreateLearnerPod { name } => {
            create_member(ec, ctx, ns, name, &join_existing(names, view, volumes), making.trust).await?;
        }
        Step::AddLearner { name } => match admin.add_learner(vec![names.peer_url(name)]).await {
            Ok(_) => {}
            Err(e) if not_yet(&e) => return Ok(false),
            Err(e) => return Err(error::act_etcd(format!("add learner {name}"))(e)),
        },
        Step::Promote { id, name } => match admin.promote(*id).await {
            Ok(_) => {}
            Err(e) if not_yet(&e) => return Ok(false),
            Err(e) => return Err(error::act_etcd(format!("promote {name}"))(e)),
        },
        Step::MoveLeader { to, to_name, .. } => {
            admin.move_leader(*to).await.map_err(error::act_etcd(format!("move leadership to {to_name}")))?;
        }
        Step::RemoveMember { id, name, .. } => match admin.remove(*id).await {
            Ok(_) => {}
            Err(e) if not_yet(&e) => return Ok(false),
            Err(e) => return Err(error::act_etcd(format!("remove member {name}"))(e)),
        },
        Step::DeletePod { name, delete_volume } => {
            // The volume is marked as no member's before the pod goes: a crash in between
            // can never bring it back as a member (not even with etcd dark).
            let pvc = names.pvc(name);
            if ec.spec.storage.medium == StorageMedium::Persistent {
                let (mark, owners) = if *delete_volume {
                    (REMOVED_TO_DELETE, json!(build::pvc_owner_references(ec)))
                } else {
                    ("true", json!(null))
                };
                let patch = json!({"metadata": {"annotations": {REMOVED_ANNOTATION: mark}, "ownerReferences": owners}});
                match pvcs.patch(&pvc, &PatchParams::default(), &Patch::Merge(&patch)).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(error::act_kube(format!("mark PVC {pvc} as a removed member's"))(e)),
                }
            }
            delete_if_present(&pods, name, None).await.map_err(error::act_kube(format!("delete pod {name}")))?;
            if *delete_volume {
                delete_if_present(&pvcs, &pvc, None).await.map_err(error::act_kube(format!("delete PVC {pvc}")))?;
            }
        }
        Step::Restart { name, .. } => {
            // The pod comes back (RecreatePod) on its volume, built from the current spec.
            delete_if_present(&pods, name, None)
                .await
                .map_err(error::act_kube(format!("delete pod {name} to restart it")))?;
        }
        Step::ReplacePod { name, initial } => {
            // Read again: a pod a node took meanwhile runs, and is left alone. The delete
            // names that very pod (its uid); an unscheduled pod goes at once, so its
            // successor is created in the same step.
            let read = pods.get_opt(name).await.map_err(error::act_kube(format!("read pod {name}")))?;
            let Some(read) = read.filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none()) else {
                return Ok(false);
            };
            delete_if_present(&pods, name, read.uid())
                .await
                .map_err(error::act_kube(format!("delete pod {name} that no node took")))?;
            let join = match initial {
                Some(members) => Join {
                    initial_cluster: members.iter().map(|m| (m.clone(), names.peer_url(m))).collect(),
                    existing: false,
                },
                None => join_existing(names, view, volumes),
            };
            create_member(ec, ctx, ns, name, &join, making.trust).await?;
        }
    }
    tracing::info!(cluster = %names.cluster, namespace = %ns, reason, "{note}");
    publish(&ctx.rt, ec, EventType::Normal, reason, &note).await;
    Ok(true)
}

/// The members of a recorded bootstrap.
pub fn recorded_bootstrap(ec: &EtcdCluster) -> Option<Vec<String>> {
    ec.annotations().get(BOOTSTRAP_ANNOTATION).and_then(|v| serde_json::from_str(v).ok())
}

/// The EtcdCluster's own record of its cluster id (annotation, else status).
pub fn cluster_id_recorded(ec: &EtcdCluster) -> bool {
    // An in-place restore replaces the cluster: the replaced cluster's id is no record.
    let replaced = crate::seed::SeedSource::from_cluster(ec).and_then(|s| s.replaces);
    let counts = |id: &String| Some(id) != replaced.as_ref();
    ec.annotations().get(CLUSTER_ID_ANNOTATION).is_some_and(counts)
        || ec.status.as_ref().and_then(|s| s.cluster_id.as_ref()).is_some_and(counts)
}

/// Label of the EtcdRestores etcd-pilot starts by itself after quorum loss.
pub const AUTO_RECOVERY_LABEL: &str = "etcdpilot.io/auto-recovery";

/// Starts an in-place EtcdRestore from the most advanced surviving member (highest raft
/// index), unless one it started is still under way or the cluster has no backup target
/// to stage the survivor's snapshot in. Returns what it did, for an Event.
pub async fn start_quorum_recovery(
    ec: &EtcdCluster,
    ctx: &Context,
    names: &Names,
    view: Option<&EtcdView>,
    obs: &super::plan::Observation,
    lost: &[String],
) -> Result<Option<String>, Error> {
    use crate::api::EtcdRestore;
    if ec.spec.backup.is_none() {
        return Ok(None);
    }
    let ns = ec.namespace().unwrap_or_default();
    let restores: Api<EtcdRestore> = Api::namespaced(ctx.rt.client.clone(), &ns);
    let mine = restores
        .list(&kube::api::ListParams::default().labels(&format!("{AUTO_RECOVERY_LABEL}={}", ec.name_any())))
        .await
        .map_err(error::act_kube("list automatic recoveries"))?;
    if mine.items.iter().any(|r| !r.status.as_ref().is_some_and(|s| s.phase.is_finished())) {
        return Ok(None);
    }
    let Some(view) = view else { return Ok(None) };
    let survivor = view
        .members
        .iter()
        .filter(|m| !m.is_learner)
        .filter_map(|m| {
            let name = m.peer_urls.iter().find_map(|u| names.member_of_peer_url(u))?;
            let status = view.statuses.get(&m.id)?;
            obs.pods.iter().any(|p| p.name == name).then_some((status.raft_index, name))
        })
        .max();
    let Some((index, survivor)) = survivor else { return Ok(None) };
    let name = format!("{}-recovery-{}", ec.name_any(), jiff::Timestamp::now().as_second());
    let mut restore = EtcdRestore::new(
        &name,
        crate::api::EtcdRestoreSpec {
            source: crate::api::restore::RestoreSource { member: Some(survivor.clone()), ..Default::default() },
            mode: crate::api::restore::RestoreMode::InPlace,
            cluster_name: ec.name_any(),
            new_cluster: None,
            force: false,
            point_in_time: None,
        },
    );
    restore.metadata.namespace = Some(ns.clone());
    restore.metadata.labels = Some([(AUTO_RECOVERY_LABEL.to_string(), ec.name_any())].into());
    create_if_absent(&restores, FIELD_MANAGER, &restore).await.map_err(error::act_kube("start the recovery"))?;
    Ok(Some(format!(
        "quorum lost for good ({} gone with their volumes): started EtcdRestore {name}, in place from the most advanced survivor {survivor} (raft index {index})",
        lost.join(", ")
    )))
}

/// Does one maintenance step (compact, defragment, disarm). Returns whether it was done
/// and what it did. A failed defragmentation is an outcome, not an error: it is
/// recorded, announced, and retried with backoff, and never stops the pass.
pub async fn maintain(
    ec: &EtcdCluster,
    ctx: &Context,
    names: &Names,
    step: &Step,
    view: Option<&EtcdView>,
    admin: &EtcdAdmin,
) -> Result<(bool, Outcome), Error> {
    let now = jiff::Timestamp::now;
    match step {
        Step::Compact { revision, all_history, reason } => {
            let done = admin
                .compact_to(*revision)
                .await
                .map_err(error::act_etcd(format!("compact to revision {revision}")))?;
            let note = match done {
                Some(r) => format!("compacted history below revision {r}: {reason}"),
                None => format!("nothing to compact yet: {reason}"),
            };
            publish(&ctx.rt, ec, EventType::Normal, "Compacted", &note).await;
            Ok((true, Outcome::Compacted { revision: done.unwrap_or(0), all_history: *all_history, at: now() }))
        }
        Step::Disarm { reason } => {
            let alarms = admin.alarms().await.map_err(error::act_etcd("list alarms"))?;
            for a in alarms.iter().filter(|a| a.kind == AlarmKind::NoSpace) {
                admin.disarm(a).await.map_err(error::act_etcd("disarm NOSPACE"))?;
            }
            tracing::info!(cluster = %names.cluster, "NOSPACE disarmed: {reason}");
            Ok((true, Outcome::Disarmed { at: now() }))
        }
        Step::Defragment { name, reason, .. } => {
            let ep = names.client_url(name);
            let member_name = |id: u64| -> String {
                view.and_then(|v| v.members.iter().find(|m| m.id == id))
                    .and_then(|m| m.peer_urls.iter().find_map(|u| names.member_of_peer_url(u)))
                    .unwrap_or_else(|| format!("{id:x}"))
            };
            let voters = view.map_or(1, |v| v.members.iter().filter(|m| !m.is_learner).count());
            // Checked right before: a member that leads is not defragmented (leadership
            // is moved away first), unless it is the only voter.
            let before = admin.status(&ep).await.map_err(error::act_etcd(format!("status of {name}")))?;
            if before.is_leader() && voters > 1 {
                return Ok((false, Outcome::None));
            }
            let leader = member_name(before.leader);
            publish(
                &ctx.rt,
                ec,
                EventType::Normal,
                "Defragmenting",
                &format!(
                    "defragmenting {name} ({reason}); leader {leader}; db file {} MiB, {} MiB in use",
                    before.db_size >> 20,
                    before.db_size_in_use >> 20
                ),
            )
            .await;
            let start = std::time::Instant::now();
            match admin.defragment(&ep).await {
                Ok(()) => {
                    let blocked = start.elapsed();
                    let after = admin.status(&ep).await.map(|s| s.db_size).unwrap_or(before.db_size);
                    let note = format!(
                        "defragmented {name}: db file {} MiB -> {} MiB, member blocked {:.2}s; leader {leader}",
                        before.db_size >> 20,
                        after >> 20,
                        blocked.as_secs_f64()
                    );
                    tracing::info!(cluster = %names.cluster, "{note}");
                    publish(&ctx.rt, ec, EventType::Normal, "Defragmented", &note).await;
                    let blocked_ms = i64::try_from(blocked.as_millis()).unwrap_or(i64::MAX);
                    Ok((
                        true,
                        Outcome::Defragmented {
                            name: name.clone(),
                            at: now(),
                            blocked_ms,
                            before: before.db_size,
                            after,
                        },
                    ))
                }
                Err(e) => {
                    let note = format!("defragmenting {name} failed: {e}; retried later with backoff");
                    tracing::warn!(cluster = %names.cluster, "{note}");
                    publish(&ctx.rt, ec, EventType::Warning, "DefragmentationFailed", &note).await;
                    Ok((true, Outcome::DefragFailed { name: name.clone(), at: now() }))
                }
            }
        }
        _ => Ok((false, Outcome::None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
