//! Events and metrics of a pass, from the status it built.

use super::context::{Context, Key};
use super::maintenance;
use super::observe::{self, EtcdView};
use super::status;
use crate::api::EtcdCluster;
use crate::api::cluster::EtcdClusterStatus;
use crate::metrics::{ClusterLabels, MemberLabels};
use crate::runtime::events::{EventType, publish};

/// Publishes a Warning unless it is the one published last for this cluster.
pub async fn warn_once(ctx: &Context, ec: &EtcdCluster, key: &Key, reason: &str, note: String) {
    let fresh = ctx.with_memory(key, |m| m.last_warning.insert(reason.to_string(), note.clone()) != Some(note.clone()));
    if fresh {
        publish(&ctx.rt, ec, EventType::Warning, reason, &note).await;
    }
}

/// Events and metrics of maintenance: a finished NOSPACE recovery, a quota near full,
/// defragmentation figures.
pub async fn record_maintenance(
    ctx: &Context,
    ec: &EtcdCluster,
    key: &Key,
    s: &EtcdClusterStatus,
    outcome: &maintenance::Outcome,
) {
    let m = &ctx.rt.metrics;
    let c = ClusterLabels { namespace: key.0.clone(), cluster: key.1.clone() };
    match outcome {
        maintenance::Outcome::Disarmed { .. } => {
            m.nospace_recoveries.get_or_create(&c).inc();
            if let Some(r) = s.maintenance.as_ref().and_then(|m| m.last_no_space_recovery.as_ref()) {
                publish(&ctx.rt, ec, EventType::Normal, "NoSpaceRecovered", &maintenance::describe_recovery(r)).await;
            }
        }
        maintenance::Outcome::Compacted { .. } => {
            m.compactions.get_or_create(&c).inc();
        }
        maintenance::Outcome::Defragmented { .. } | maintenance::Outcome::DefragFailed { .. } => {
            let ok = matches!(outcome, maintenance::Outcome::Defragmented { .. });
            let l = crate::metrics::BackupResultLabels {
                namespace: key.0.clone(),
                cluster: key.1.clone(),
                result: if ok { "success" } else { "failure" }.into(),
            };
            m.defrags.get_or_create(&l).inc();
        }
        maintenance::Outcome::None => {}
    }
    for member in s.members.iter().filter(|m| !m.id.is_empty()) {
        let l = MemberLabels { namespace: key.0.clone(), cluster: key.1.clone(), member: member.name.clone() };
        if let Some(p) = member.quota_used_percent {
            let ratio = member.db_size.unwrap_or(0) as f64 / ec.spec.etcd.quota_backend_bytes.max(1) as f64;
            m.quota_used_ratio.get_or_create(&l).set(if p >= 0 { ratio } else { 0.0 });
        }
        if let (Some(size), Some(used)) = (member.db_size, member.db_size_in_use) {
            let frag = if size > 0 { (size - used).max(0) as f64 / size as f64 } else { 0.0 };
            m.fragmentation_ratio.get_or_create(&l).set(frag);
        }
        if let Some(d) = &member.last_defragmentation {
            m.last_defrag_timestamp.get_or_create(&l).set(d.time.0.as_second());
            m.last_defrag_blocked.get_or_create(&l).set(d.blocked_millis as f64 / 1000.0);
        }
    }
    // NOSPACE and CORRUPT: a Warning when raised (CORRUPT is never disarmed here).
    if let Some(cond) = s.conditions.iter().find(|c| c.type_ == status::ALARM && c.status == "True") {
        warn_once(ctx, ec, key, "AlarmRaised", cond.message.clone()).await;
    }
    if let Some(cond) = s.conditions.iter().find(|c| c.type_ == status::QUOTA_HIGH && c.status == "True") {
        warn_once(ctx, ec, key, "QuotaHigh", cond.message.clone()).await;
    }
    if let Some(cond) = s.conditions.iter().find(|c| c.type_ == status::COMPACTION_CONFLICT && c.status == "True") {
        warn_once(ctx, ec, key, "CompactionConflict", cond.message.clone()).await;
    }
}

pub fn record_metrics(ctx: &Context, ec: &EtcdCluster, key: &Key, s: &EtcdClusterStatus, view: Option<&EtcdView>) {
    let m = &ctx.rt.metrics;
    let c = ClusterLabels { namespace: key.0.clone(), cluster: key.1.clone() };
    let known: Vec<&crate::api::cluster::MemberStatus> = s.members.iter().filter(|m| !m.id.is_empty()).collect();
    m.members.get_or_create(&c).set(known.len() as i64);
    m.healthy_members.get_or_create(&c).set(i64::from(s.ready_members));
    m.learners.get_or_create(&c).set(known.iter().filter(|m| m.learner).count() as i64);
    m.desired_members.get_or_create(&c).set(i64::from(ec.spec.size));
    m.has_leader.get_or_create(&c).set(i64::from(s.members.iter().any(|m| m.leader)));
    m.quota_warn_ratio.get_or_create(&c).set(f64::from(ec.spec.quota.warn_at_percent) / 100.0);
    if let Some(v) = view {
        m.set_alarms(&key.0, &key.1, &observe::alarms(v));
    }
    m.quota_bytes.get_or_create(&c).set(ec.spec.etcd.quota_backend_bytes);
    for member in &known {
        let l = MemberLabels { namespace: key.0.clone(), cluster: key.1.clone(), member: member.name.clone() };
        if let (Some(size), Some(used)) = (member.db_size, member.db_size_in_use) {
            m.db_size_bytes.get_or_create(&l).set(size);
            m.db_size_in_use_bytes.get_or_create(&l).set(used);
        }
    }
    let leader = view.and_then(|v| v.statuses.values().find(|s| s.is_leader()).map(|s| s.member_id));
    let names: Vec<String> = known.iter().map(|m| m.name.clone()).collect();
    let gone = ctx.with_memory(key, |mem| {
        if let Some(l) = leader {
            if mem.leader.is_some_and(|old| old != l) {
                m.leader_changes.get_or_create(&c).inc();
            }
            mem.leader = Some(l);
        }
        let gone: Vec<String> = mem.member_names.iter().filter(|n| !names.contains(n)).cloned().collect();
        mem.member_names = names.clone();
        gone
    });
    for g in gone {
        m.forget_member(&key.0, &key.1, &g);
    }
}
