//! The status of an EtcdCluster, built from what was observed and the step planned:
//! pure, so every condition is unit-tested.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;

use super::maintenance::{self, Outcome};
use super::observe::{self, EtcdView};
use super::plan::quorum;
use super::step::Step;
use super::tls::CertState;
use crate::api::cluster::{EtcdClusterStatus, MemberStatus};
use crate::shared::names::Names;

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
pub const SPEC_VALID: &str = "SpecValid";
pub const ALARM: &str = "Alarm";
pub const CERTIFICATES_READY: &str = "CertificatesReady";
pub const QUOTA_HIGH: &str = "QuotaHigh";
pub const MAINTENANCE_FAILING: &str = "MaintenanceFailing";
pub const COMPACTION_CONFLICT: &str = "CompactionConflict";
pub const STORAGE_AT_SIZE: &str = "StorageAtSize";
pub const MEMBERS_PLACED: &str = "MembersPlaced";
pub const VERSION_SUPPORTED: &str = "VersionSupported";
/// Whether the last pass succeeded; when it failed, its step and what it failed on.
pub const RECONCILED: &str = "Reconciled";
/// Every condition this controller writes (the others' are theirs).
pub const OWN_CONDITIONS: [&str; 13] = [
    AVAILABLE,
    PROGRESSING,
    DEGRADED,
    SPEC_VALID,
    ALARM,
    CERTIFICATES_READY,
    QUOTA_HIGH,
    MAINTENANCE_FAILING,
    COMPACTION_CONFLICT,
    STORAGE_AT_SIZE,
    MEMBERS_PLACED,
    VERSION_SUPPORTED,
    RECONCILED,
];

/// A short CamelCase reason and a sentence for a step.
pub fn describe(step: &Step) -> (&'static str, String) {
    match step {
        Step::Idle => ("Idle", "nothing to do".into()),
        Step::Wait(why) => ("Waiting", why.clone()),
        Step::Bootstrap { members, create } => {
            ("Bootstrapping", format!("starting {} as the initial cluster {}", create.join(", "), members.join(",")))
        }
        Step::RecreatePod { name } => ("RecreatingPod", format!("recreating the pod of {name} on its volume")),
        Step::AddLearner { name } => ("AddingLearner", format!("adding {name} as a learner")),
        Step::CreateLearnerPod { name } => ("StartingLearner", format!("starting learner {name}")),
        Step::Promote { name, .. } => ("PromotingLearner", format!("promoting learner {name} to a voting member")),
        Step::MoveLeader { to_name, reason, .. } => {
            ("MovingLeader", format!("moving leadership to {to_name}: {reason}"))
        }
        Step::RemoveMember { name, reason, .. } => ("RemovingMember", format!("removing {name}: {reason}")),
        Step::DeletePod { name, .. } => ("DeletingPod", format!("deleting the pod of removed member {name}")),
        Step::Restart { name, reason } => ("RestartingMember", format!("restarting {name}: {reason}")),
        Step::ReplacePod { name, .. } => (
            "ReplacingPod",
            format!("replacing the pod of {name}, which no node took, by one built from the current spec"),
        ),
        Step::Compact { revision, reason, .. } => {
            ("Compacting", format!("compacting history below revision {revision}: {reason}"))
        }
        Step::Defragment { name, reason, .. } => ("Defragmenting", format!("defragmenting {name}: {reason}")),
        Step::Disarm { reason } => ("DisarmingNoSpace", format!("disarming the NOSPACE alarm: {reason}")),
        Step::Blocked(why) => ("Blocked", why.clone()),
    }
}

/// Everything the status is built from.
pub struct Input<'a> {
    pub names: &'a Names,
    pub size: usize,
    pub generation: Option<i64>,
    pub pods: &'a [Pod],
    pub etcd: Option<&'a EtcdView>,
    pub step: &'a Step,
    pub paused: bool,
    /// Problems of the spec; non-empty means nothing was done.
    pub problems: &'a [String],
    /// The certificates: lost CA, rotation under way or refused.
    pub certificates: &'a super::tls::CertState,
    pub previous: Option<&'a EtcdClusterStatus>,
    pub now: Time,
    /// `spec.etcd.quotaBackendBytes` and `spec.quota.warnAtPercent`.
    pub quota: i64,
    pub warn_at_percent: i64,
    /// Why two compactors are configured, if they are.
    pub compaction_conflict: Option<String>,
    /// What this pass's maintenance step did.
    pub outcome: &'a Outcome,
    /// The volumes against `spec.storage.size`: (at size, reason, message).
    pub storage: (bool, &'static str, String),
    /// Why members the spec asks for cannot be placed ([`super::plan::placement`]).
    pub placement: Option<(&'static str, &'a str)>,
    /// `spec.version`, for `VersionSupported` before any member reports its own.
    pub spec_version: &'a str,
    /// The pass's step failed: the category's reason and the error (which names the step).
    pub failure: Option<(&'a str, String)>,
}

/// The members as etcd and Kubernetes show them.
pub fn members(names: &Names, pods: &[Pod], etcd: Option<&EtcdView>) -> Vec<MemberStatus> {
    let mut out: Vec<MemberStatus> = Vec::new();
    if let Some(view) = etcd {
        for m in &view.members {
            let name = m.peer_urls.iter().find_map(|u| names.member_of_peer_url(u)).unwrap_or_else(|| m.name.clone());
            let s = view.statuses.get(&m.id);
            // Alarms are the cluster's (condition `Alarm`), not this member's.
            let mut errors: Vec<String> = s.map(|s| s.own_errors().cloned().collect()).unwrap_or_default();
            if s.is_none() {
                errors.push("does not answer".into());
            }
            out.push(MemberStatus {
                name,
                id: format!("{:x}", m.id),
                peer_urls: m.peer_urls.clone(),
                client_urls: m.client_urls.clone(),
                learner: m.is_learner,
                leader: s.is_some_and(|s| s.is_leader()),
                healthy: observe::member_healthy(s, m.is_learner),
                db_size: s.map(|s| s.db_size),
                db_size_in_use: s.map(|s| s.db_size_in_use),
                version: s.map(|s| s.version.clone()),
                errors,
                ..MemberStatus::default()
            });
        }
    }
    for p in pods {
        let name = p.name_any();
        if let Some(problem) = observe::pod_problem(p)
            && let Some(m) = out.iter_mut().find(|m| m.name == name)
        {
            m.errors.push(format!("pod: {problem}"));
        }
        if !out.iter().any(|m| m.name == name) {
            let why = match (etcd.is_some(), p.metadata.deletion_timestamp.is_some()) {
                // On a lost node a pod never finishes terminating: say what it is.
                (true, true) => "removed from etcd; its pod is terminating (its node may be unreachable)",
                (true, false) => "not a member of etcd",
                (false, _) => "no etcd member answers",
            };
            let mut errors = vec![why.to_string()];
            errors.extend(observe::pod_problem(p).map(|problem| format!("pod: {problem}")));
            out.push(MemberStatus { name, errors, ..MemberStatus::default() });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn condition(
    previous: Option<&EtcdClusterStatus>,
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if ok { "True" } else { "False" }.to_string();
    // The transition time moves only when the status does.
    let last_transition_time = previous
        .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == status)
        .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// The whole status.
pub fn build(i: &Input) -> EtcdClusterStatus {
    let mut members = members(i.names, i.pods, i.etcd);
    let corrupt_ids: Vec<String> = i
        .etcd
        .map(observe::alarm_members)
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, kind)| kind == "CORRUPT")
        .map(|(id, _)| format!("{id:x}"))
        .collect();
    for m in &mut members {
        if let Some(size) = m.db_size.filter(|s| *s > 0) {
            let in_use = m.db_size_in_use.unwrap_or(size);
            m.fragmentation_percent = Some(maintenance::fragmentation_percent(size, in_use) as i32);
            if i.quota > 0 {
                m.quota_used_percent = Some((size * 100 / i.quota) as i32);
            }
        }
        m.corrupt = !m.id.is_empty() && corrupt_ids.contains(&m.id);
    }
    maintenance::member_records(&mut members, i.previous, i.outcome);
    let voters: Vec<&MemberStatus> = members.iter().filter(|m| !m.learner && !m.id.is_empty()).collect();
    let healthy = voters.iter().filter(|m| m.healthy).count();
    let leader = members.iter().find(|m| m.leader).map(|m| m.name.clone());
    let version = i
        .etcd
        .into_iter()
        .flat_map(|v| v.statuses.values())
        .filter_map(|s| semver::Version::parse(&s.version).ok())
        .min()
        .map(|v| v.to_string())
        .or_else(|| i.previous.and_then(|p| p.version.clone()));
    let cluster_id = i
        .etcd
        .into_iter()
        .flat_map(|v| v.statuses.values())
        .map(|s| s.cluster_id)
        .find(|id| *id != 0)
        .map(|id| format!("{id:x}"))
        .or_else(|| i.previous.and_then(|p| p.cluster_id.clone()));
    let mut client_endpoints = vec![i.names.client_service_url()];
    client_endpoints.extend(voters.iter().map(|m| i.names.client_url(&m.name)));

    let available = i.etcd.is_some() && leader.is_some() && !voters.is_empty() && healthy >= quorum(voters.len());
    let (avail_reason, avail_msg) = if available {
        (
            "Quorum",
            format!(
                "{healthy} of {} voting members healthy, {} leads",
                voters.len(),
                leader.clone().unwrap_or_default()
            ),
        )
    } else if i.etcd.is_none() {
        ("NoAnswer", "no etcd member answers".to_string())
    } else {
        ("NoQuorum", format!("{healthy} of {} voting members healthy", voters.len()))
    };
    let (step_reason, step_msg) = describe(i.step);
    let (prog_ok, prog_reason, prog_msg) = if !i.problems.is_empty() {
        (false, "SpecInvalid", "the spec is invalid; nothing changes until it is fixed".to_string())
    } else if i.paused {
        (false, "Paused", "spec.paused is set: no action is taken".to_string())
    } else {
        match i.step {
            Step::Idle if healthy < i.size || voters.len() != i.size => (
                true,
                "Settling",
                format!("{healthy} of {} wanted voting members are healthy; waiting for the rest", i.size),
            ),
            Step::Idle => (false, "Idle", "the cluster matches its spec".to_string()),
            Step::Blocked(_) => (false, step_reason, step_msg.clone()),
            _ => (true, step_reason, step_msg.clone()),
        }
    };
    let pod_problems: Vec<String> =
        i.pods.iter().filter_map(|p| observe::pod_problem(p).map(|why| format!("{}: {why}", p.name_any()))).collect();
    let (deg, deg_reason, deg_msg) = if let Step::Blocked(why) = i.step {
        (true, "Blocked", why.clone())
    } else if !pod_problems.is_empty() {
        (true, "MembersNotRunning", pod_problems.join("; "))
    } else if healthy < i.size {
        (true, "MembersUnhealthy", format!("{healthy} of {} desired voting members healthy", i.size))
    } else {
        (false, "AllHealthy", format!("{healthy} healthy voting members"))
    };
    let (valid, valid_reason, valid_msg) = if i.problems.is_empty() {
        (true, "Valid", "the spec is valid".to_string())
    } else {
        (false, "Invalid", i.problems.join("; "))
    };
    let alarms = i.etcd.map(observe::alarms).unwrap_or_default();
    let (alarm_reason, alarm_msg) = if alarms.is_empty() {
        ("None", "no alarm is raised".to_string())
    } else if alarms.iter().any(|a| a == "CORRUPT") {
        (
            "CORRUPT",
            format!(
                "alarms raised: {}; a member's data may be corrupt: find it and replace it, never disarm blindly",
                alarms.join(", ")
            ),
        )
    } else {
        (
            "NOSPACE",
            format!(
                "alarms raised: {}; etcd refuses writes (reads are served) until space is freed (compact, defragment) and the alarm disarmed, which etcd-pilot does unless spec.quota.remediateNoSpace is false",
                alarms.join(", ")
            ),
        )
    };
    let high: Vec<String> = members
        .iter()
        .filter(|m| m.quota_used_percent.is_some_and(|p| i64::from(p) >= i.warn_at_percent))
        .map(|m| format!("{} {}% (db {} MiB)", m.name, m.quota_used_percent.unwrap_or(0), m.db_size.unwrap_or(0) >> 20))
        .collect();
    let (quota_reason, quota_msg) = if high.is_empty() {
        ("BelowWarnLevel", format!("every member's db file is below {}% of the quota", i.warn_at_percent))
    } else {
        (
            "AboveWarnLevel",
            format!(
                "db files at or above {}% of the {} MiB quota: {}; at 100% etcd raises NOSPACE and refuses writes: compact and defragment, delete data, or raise spec.etcd.quotaBackendBytes",
                i.warn_at_percent,
                i.quota >> 20,
                high.join(", ")
            ),
        )
    };
    let failing: Vec<String> = members
        .iter()
        .filter(|m| m.defrag_failures >= maintenance::FAILURES_FOR_CONDITION as i32)
        .map(|m| format!("{} ({} in a row)", m.name, m.defrag_failures))
        .collect();
    let (fail_reason, fail_msg) = if failing.is_empty() {
        ("Succeeding", "maintenance steps succeed".to_string())
    } else {
        (
            "DefragmentationFailing",
            format!("defragmentation keeps failing on {}; retried with backoff (see Events)", failing.join(", ")),
        )
    };
    let (conflict_reason, conflict_msg) = match &i.compaction_conflict {
        Some(why) => ("TwoCompactors", why.clone()),
        None => ("OneCompactor", "at most one compactor is configured".to_string()),
    };
    let c = |t, ok, r, m| condition(i.previous, t, ok, r, m, i.generation, &i.now);
    EtcdClusterStatus {
        conditions: vec![
            c(AVAILABLE, available, avail_reason, avail_msg),
            c(PROGRESSING, prog_ok, prog_reason, prog_msg),
            c(DEGRADED, deg, deg_reason, deg_msg),
            c(SPEC_VALID, valid, valid_reason, valid_msg),
            c(ALARM, !alarms.is_empty(), alarm_reason, alarm_msg),
            match i.certificates {
                CertState::Lost(why) => c(CERTIFICATES_READY, false, "CALost", why.clone()),
                CertState::Rotating(phase) => c(CERTIFICATES_READY, true, "Rotating", phase.clone()),
                CertState::RotationRefused(why) => c(CERTIFICATES_READY, true, "RotationRefused", why.clone()),
                CertState::Ready { generation: 0 } => {
                    c(CERTIFICATES_READY, true, "Ready", "certificates are issued and renewed".to_string())
                }
                CertState::Ready { generation } => c(
                    CERTIFICATES_READY,
                    true,
                    "Ready",
                    format!("certificates are issued and renewed (CA generation {generation})"),
                ),
            },
            c(QUOTA_HIGH, !high.is_empty(), quota_reason, quota_msg),
            c(MAINTENANCE_FAILING, !failing.is_empty(), fail_reason, fail_msg),
            c(COMPACTION_CONFLICT, i.compaction_conflict.is_some(), conflict_reason, conflict_msg),
            c(STORAGE_AT_SIZE, i.storage.0, i.storage.1, i.storage.2.clone()),
            {
                // What runs (the lowest member version), else what is asked for.
                let v = version.clone().unwrap_or_else(|| i.spec_version.to_string());
                let (ok, reason, message) = crate::api::validation::version_support(&v);
                c(VERSION_SUPPORTED, ok, reason, message)
            },
            match i.placement {
                Some((reason, message)) => c(MEMBERS_PLACED, false, reason, message.to_string()),
                None => c(MEMBERS_PLACED, true, "Placed", "every member can be placed".to_string()),
            },
            match &i.failure {
                None => c(RECONCILED, true, "Succeeded", "the last pass succeeded".to_string()),
                Some((reason, message)) => failure_condition(i.previous, reason, message.clone(), i.generation, &i.now),
            },
        ],
        maintenance: maintenance::status(
            i.previous.and_then(|p| p.maintenance.as_ref()),
            i.etcd.map(|v| observe::alarms(v).iter().any(|a| a == "NOSPACE")),
            members.iter().filter_map(|m| m.db_size).max().unwrap_or(0),
            i.outcome,
            i.now.0,
        ),
        observed_generation: i.generation,
        ready_members: healthy as i32,
        leader,
        version,
        cluster_id,
        client_endpoints,
        // The backup and wiring controllers' fields: never written here.
        last_backup: None,
        api_server: None,
        highest_ordinal: i.previous.and_then(|p| p.highest_ordinal),
        // Never lower than recorded: a member behind the others answers with less.
        revision: i
            .etcd
            .and_then(|v| v.statuses.values().map(|s| s.revision).max())
            .filter(|r| *r > 0)
            .max(i.previous.and_then(|p| p.revision)),
        members,
    }
}

/// The status after a pass that failed on `reason` (its category's) with `message` (which
/// names the step): what the last successful pass recorded, with `Reconciled=False`
/// saying where and why. Only this controller's fields: the others' are left to them.
pub fn failed(
    previous: Option<&EtcdClusterStatus>,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> EtcdClusterStatus {
    let mut s = previous.cloned().unwrap_or_default();
    s.last_backup = None;
    s.api_server = None;
    s.conditions.retain(|c| OWN_CONDITIONS.contains(&c.type_.as_str()) && c.type_ != RECONCILED);
    s.conditions.push(failure_condition(previous, reason, message, generation, now));
    s
}

/// `Reconciled=False` for a failure. A failure already reported for the same category and
/// step keeps its first message: one that varies from try to try (addresses, durations)
/// would change the status on every retry, and its watch event would start the next pass
/// at once, past the retry's backoff.
fn failure_condition(
    previous: Option<&EtcdClusterStatus>,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let step = |m: &str| m.split(':').next().unwrap_or_default().to_string();
    let kept = previous
        .and_then(|p| p.conditions.iter().find(|c| c.type_ == RECONCILED))
        .filter(|c| c.status == "False" && c.reason == reason && step(&c.message) == step(&message))
        .map(|c| c.message.clone());
    condition(previous, RECONCILED, false, reason, kept.unwrap_or(message), generation, now)
}

/// Whether `previous` already reports the failure `failed` reports: `Reconciled=False`
/// for the same category and step (the message's text before its first `:`).
pub fn same_failure(previous: Option<&EtcdClusterStatus>, failed: &EtcdClusterStatus) -> bool {
    let reconciled = |s: &EtcdClusterStatus| s.conditions.iter().find(|c| c.type_ == RECONCILED).cloned();
    let step = |m: &str| m.split(':').next().unwrap_or_default().to_string();
    match (previous.and_then(reconciled), reconciled(failed)) {
        (Some(p), Some(f)) => p.status == "False" && p.reason == f.reason && step(&p.message) == step(&f.message),
        _ => false,
    }
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
