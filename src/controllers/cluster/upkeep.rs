//! Plan, for what a pass writes before its step: the cluster's fixed objects (the
//! certificate Secrets and the CA rotation's steps, the Services, the disruption budget)
//! and its volumes' bookkeeping (owners, sweeps, growth, the recorded cluster id). Pure:
//! [`fixed`] and [`volumes`] decide the [`Upkeep`] writes from what `read` observed;
//! `objects` makes them, in order, before the step.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use time::OffsetDateTime;

use super::error::Error;
use super::observe::{EtcdView, pod_ready};
use super::tls::CertState;
use super::volumes::Sizing;
use super::{build, ca_rotation, tls};
use crate::api::EtcdCluster;
use crate::api::cluster::TlsMode;
use crate::shared::names::{CLUSTER_ID_ANNOTATION, Names, REMOVED_ANNOTATION, REMOVED_TO_DELETE};
use crate::shared::secrets::ca_secret_of;

/// Which PodDisruptionBudget this Kubernetes serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BudgetApi {
    V1,
    /// Kubernetes before 1.21.
    V1beta1,
    /// Neither: no budget, and a Warning once.
    None,
}

/// What a pass read for its fixed objects (operator-issued TLS; the rotation's inputs only
/// while one is asked for).
#[derive(Clone, Debug, Default)]
pub struct FixedObserved {
    /// The certificate Secrets and the CA's that exist, by name.
    pub secrets: BTreeMap<String, Secret>,
    /// Stacked: the control-plane nodes' addresses, which certificates name.
    pub node_addresses: Vec<String>,
    /// A CA rotation asked for that may not start: why (read only while one is asked
    /// for and none is under way).
    pub rotation_refused: Option<String>,
    /// The members' TLS checks a rotation phase waits for, when it does.
    pub checked: Option<Result<(), String>>,
    /// What the Services and budget were applied from, within the last
    /// `REAPPLY_FIXED_AFTER` (they are not applied again unless they changed).
    pub recently_applied: Option<String>,
}

/// One write of a pass before its step.
#[derive(Clone, Debug, PartialEq)]
pub enum Upkeep {
    /// A CA rotation's step: the CA Secret replaced, on the condition that it is still as
    /// read (its resourceVersion), and only while the Lease is held.
    RotateCa { secret: Secret, note: Option<String> },
    /// A certificate Secret issued, reissued or re-trusted (or the CA made).
    IssueSecret { secret: Secret, reason: String },
    /// The Services and the disruption budget applied.
    ApplyFixed { services: Vec<Service>, budget: PodDisruptionBudget, api: BudgetApi, digest: String },
    /// A member volume's owner references set to follow `retention.whenDeleted`.
    OwnVolume { name: String, owners: Option<Vec<OwnerReference>> },
    /// A volume marked for deletion whose pod is gone, deleted (what a pass that stopped
    /// between marking and deleting left).
    SweepVolume { name: String, uid: Option<String> },
    /// A claim's storage request raised to the spec's size.
    GrowVolume { name: String, size: String },
    /// The etcd cluster id recorded, durable evidence that the cluster formed: on the
    /// EtcdCluster (when not yet) and on these volumes.
    RecordClusterId { id: String, on_cluster: bool, volumes: Vec<String> },
}

/// What the plan of the fixed objects found about certificates, as if its writes are made.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fixed {
    pub certificates: CertState,
    /// Fingerprint of the CAs members trust now (recorded on new pods), and whether a CA
    /// rotation asks every member to run with exactly those.
    pub trust: Option<(String, bool)>,
    /// When each certificate expires (Unix seconds), operator-issued TLS only.
    pub expiries: Vec<(&'static str, i64)>,
}

/// Whether a CA rotation is asked for or under way.
pub fn rotation_asked(ec: &EtcdCluster, auth: &ca_rotation::Authority) -> bool {
    auth.phase != ca_rotation::Phase::Stable || ec.spec.tls.ca_generation > auth.generation
}

/// The members as a CA rotation sees them.
pub fn pod_trusts(pods: &[Pod]) -> Vec<ca_rotation::PodTrust> {
    pods.iter()
        .map(|p| ca_rotation::PodTrust {
            name: p.name_any(),
            trust: p.annotations().get(ca_rotation::TRUST_ANNOTATION).cloned(),
            ready: pod_ready(p),
            terminating: p.metadata.deletion_timestamp.is_some(),
        })
        .collect()
}

/// The authority whose rotation a pass must read inputs for, if any: operator TLS, a CA
/// that is there (not lost), members that trust it, and a rotation asked for.
pub fn rotating_authority(
    ec: &EtcdCluster,
    secrets: &BTreeMap<String, Secret>,
    members_exist: bool,
) -> Option<ca_rotation::Authority> {
    if ec.spec.tls.mode != TlsMode::Operator || !members_exist || tls::ca_lost(ec, secrets, members_exist).is_some() {
        return None;
    }
    tls::authority(ec, secrets).filter(|auth| rotation_asked(ec, auth))
}

/// The fixed objects' writes, in order (a CA rotation's step, then the certificates it
/// implies, then the Services and budget), and the certificates' state once they are made.
pub fn fixed(
    ec: &EtcdCluster,
    observed: &FixedObserved,
    pods: &[Pod],
    members_exist: bool,
    (domain, budget_api, now): (&str, BudgetApi, OffsetDateTime),
) -> Result<(Vec<Upkeep>, Fixed), Error> {
    let mut writes = Vec::new();
    let mut fixed = Fixed::default();
    if ec.spec.tls.mode == TlsMode::Operator {
        let mut existing = observed.secrets.clone();
        if let Some(why) = tls::ca_lost(ec, &existing, members_exist) {
            fixed.certificates = CertState::Lost(why);
        } else if let Some(auth) = rotating_authority(ec, &existing, members_exist) {
            fixed.certificates = rotation(ec, &auth, observed, pods, &mut existing, &mut writes)?;
        } else if let Some(auth) = tls::authority(ec, &existing).filter(|_| members_exist) {
            fixed.certificates = CertState::Ready { generation: auth.generation };
        }
        for w in tls::operator_secrets(ec, &existing, now, domain, members_exist, &observed.node_addresses)? {
            existing.insert(w.secret.name_any(), w.secret.clone());
            writes.push(Upkeep::IssueSecret { secret: w.secret, reason: w.reason });
        }
        fixed.expiries = tls::expiries(ec, &existing);
        fixed.trust =
            tls::authority(ec, &existing).map(|a| (a.trust_fingerprint(), a.phase != ca_rotation::Phase::Stable));
    }
    // Services and the budget follow from the spec alone and nothing else writes them:
    // applied when they change, and again every REAPPLY_FIXED_AFTER (a deleted one comes
    // back within that), not on every idle pass.
    let services = vec![build::peer_service(ec), build::client_service(ec)];
    let budget = build::pod_disruption_budget(ec);
    let digest = fixed_digest(&services, &budget);
    if observed.recently_applied.as_deref() != Some(digest.as_str()) {
        writes.push(Upkeep::ApplyFixed { services, budget, api: budget_api, digest });
    }
    Ok((writes, fixed))
}

/// The next step of a CA rotation asked for or under way, planned as a write of the CA
/// Secret (added to `writes`, and to `existing` for the certificates that follow).
fn rotation(
    ec: &EtcdCluster,
    auth: &ca_rotation::Authority,
    observed: &FixedObserved,
    pods: &[Pod],
    existing: &mut BTreeMap<String, Secret>,
    writes: &mut Vec<Upkeep>,
) -> Result<CertState, Error> {
    use ca_rotation::Rotation;
    let ready = CertState::Ready { generation: auth.generation };
    let trusts = pod_trusts(pods);
    let size = usize::try_from(ec.spec.size).unwrap_or(0);
    let refused = match auth.phase {
        ca_rotation::Phase::Stable => observed.rotation_refused.clone(),
        _ => None,
    };
    let checked = match auth.checked_ca() {
        Some(_) if ca_rotation::needs_check(auth, &trusts, size) => observed.checked.clone(),
        _ => None,
    };
    let step = ca_rotation::next(
        auth,
        &ca_rotation::Inputs { requested: ec.spec.tls.ca_generation, refused, pods: &trusts, size, checked },
    );
    let state = match &step {
        Rotation::None => return Ok(ready),
        Rotation::Wait(why) => return Ok(CertState::Rotating(why.clone())),
        Rotation::Refused(why) => return Ok(CertState::RotationRefused(why.clone())),
        Rotation::Start { generation } => {
            ca_rotation::apply(auth, &step, Some(tls::new_ca(&Names::of(ec), *generation)?))
        }
        _ => ca_rotation::apply(auth, &step, None),
    };
    let Some(state) = state else { return Ok(ready) };
    let name = ca_secret_of(ec);
    let Some(read) = existing.get(&name) else { return Ok(ready) };
    let secret = state.to_secret(read);
    let note = ca_rotation::describe(&step, state.generation);
    existing.insert(name, secret.clone());
    writes.push(Upkeep::RotateCa { secret, note: note.clone() });
    Ok(match state.phase {
        ca_rotation::Phase::Stable => CertState::Ready { generation: state.generation },
        _ => CertState::Rotating(note.unwrap_or_default()),
    })
}

/// What the applied Services and budget were built from.
pub fn fixed_digest(services: &[Service], pdb: &PodDisruptionBudget) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for s in services {
        h.update(serde_json::to_vec(s).unwrap_or_default());
    }
    h.update(serde_json::to_vec(pdb).unwrap_or_default());
    hex::encode(h.finalize())
}

/// The volumes' bookkeeping: owners that follow `retention.whenDeleted`, volumes marked
/// for deletion whose pod is gone, claims to grow to the spec's size.
pub fn volumes(ec: &EtcdCluster, pvcs: &[PersistentVolumeClaim], pods: &[Pod], sizing: &Sizing) -> Vec<Upkeep> {
    let owners = build::pvc_owner_references(ec);
    let mut writes: Vec<Upkeep> = pvcs
        .iter()
        .filter(|pvc| !pvc.annotations().contains_key(REMOVED_ANNOTATION) && pvc.metadata.owner_references != owners)
        .map(|pvc| Upkeep::OwnVolume { name: pvc.name_any(), owners: owners.clone() })
        .collect();
    for pvc in pvcs {
        let name = pvc.name_any();
        let member = name.strip_prefix("data-").unwrap_or_default();
        let marked = pvc.annotations().get(REMOVED_ANNOTATION).map(String::as_str) == Some(REMOVED_TO_DELETE);
        if marked && pvc.metadata.deletion_timestamp.is_none() && !pods.iter().any(|p| p.name_any() == member) {
            writes.push(Upkeep::SweepVolume { name, uid: pvc.uid() });
        }
    }
    if let Sizing::Grow(claims) = sizing {
        let size = &ec.spec.storage.size.0;
        writes.extend(claims.iter().map(|name| Upkeep::GrowVolume { name: name.clone(), size: size.clone() }));
    }
    writes
}

/// The etcd cluster id to record, as soon as etcd reports one: on the EtcdCluster and on
/// every member volume that lacks it (not on volumes set aside).
pub fn cluster_id(ec: &EtcdCluster, pvcs: &[PersistentVolumeClaim], view: Option<&EtcdView>) -> Option<Upkeep> {
    let id = view?.statuses.values().map(|s| s.cluster_id).find(|id| *id != 0)?;
    let id = format!("{id:x}");
    let on_cluster = ec.annotations().get(CLUSTER_ID_ANNOTATION) != Some(&id);
    let volumes: Vec<String> = pvcs
        .iter()
        .filter(|p| {
            !p.annotations().contains_key(CLUSTER_ID_ANNOTATION) && !p.annotations().contains_key(REMOVED_ANNOTATION)
        })
        .map(|p| p.name_any())
        .collect();
    (on_cluster || !volumes.is_empty()).then_some(Upkeep::RecordClusterId { id, on_cluster, volumes })
}

/// Every `InternalIP` of these nodes.
pub fn internal_addresses(nodes: &[k8s_openapi::api::core::v1::Node]) -> Vec<String> {
    nodes
        .iter()
        .flat_map(|n| n.status.iter().flat_map(|s| s.addresses.iter().flatten()))
        .filter(|a| a.type_ == "InternalIP")
        .map(|a| a.address.clone())
        .collect()
}

#[cfg(test)]
#[path = "upkeep_tests.rs"]
mod tests;
