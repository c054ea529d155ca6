//! Observe: what a pass reads (the cluster's pods and volumes, nodes, StorageClasses,
//! etcd's member list and statuses) and what it derives from that, without writing.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::context::{Context, Key, LEARNER_RETRY_AFTER_SECS, REAPPLY_FIXED_AFTER};
use super::error::{self, Error};
use super::observe::{self, EtcdView};
use super::plan::Desired;
use super::{build, ca_rotation, maintenance, placement, upkeep, volumes};
use crate::api::EtcdCluster;
use crate::api::cluster::{StorageMedium, TlsMode, Topology};
use crate::api::validation;
use crate::etcd::{EndpointStatus, EtcdAdmin};
use crate::shared::names::{Names, member_selector, pvc_selector};
use crate::shared::secrets::{ca_secret_of, secret_names};

/// What the fixed objects' plan needs (see [`upkeep::fixed`]): with operator-issued TLS,
/// the certificate Secrets, the control-plane nodes' addresses (Stacked), and, while a
/// CA rotation is asked for, whether it may start and what the members' TLS checks say;
/// and what the Services and budget were last applied from.
pub async fn observe_fixed(
    ec: &EtcdCluster,
    ctx: &Context,
    key: &Key,
    pods: &[Pod],
    members_exist: bool,
) -> Result<upkeep::FixedObserved, Error> {
    let mut observed = upkeep::FixedObserved {
        recently_applied: ctx.with_memory(key, |m| {
            m.fixed_applied.as_ref().filter(|(_, at)| at.elapsed() < REAPPLY_FIXED_AFTER).map(|(d, _)| d.clone())
        }),
        ..Default::default()
    };
    if ec.spec.tls.mode != TlsMode::Operator {
        return Ok(observed);
    }
    let secrets: Api<Secret> = Api::namespaced(ctx.rt.client.clone(), &key.0);
    let names = secret_names(ec).into_iter().flat_map(|s| [s.peer, s.server, s.client]);
    for name in names.chain([ca_secret_of(ec)]) {
        if let Some(s) = secrets.get_opt(&name).await.map_err(error::observe(format!("read Secret {name}")))? {
            observed.secrets.insert(name, s);
        }
    }
    if ec.spec.topology == Topology::Stacked {
        observed.node_addresses = control_plane_addresses(ctx).await?;
    }
    if let Some(auth) = upkeep::rotating_authority(ec, &observed.secrets, members_exist) {
        if auth.phase == ca_rotation::Phase::Stable {
            observed.rotation_refused = rotation_refused(ec, ctx).await?;
        }
        let trusts = upkeep::pod_trusts(pods);
        let size = usize::try_from(ec.spec.size).unwrap_or(0);
        if let Some(ca) = auth.checked_ca()
            && ca_rotation::needs_check(&auth, &trusts, size)
        {
            observed.checked = Some(check_members(ec, &auth, ca, &trusts).await);
        }
    }
    Ok(observed)
}

/// The addresses (`InternalIP`) of the control-plane nodes, where Stacked members serve
/// and their certificates must be valid.
async fn control_plane_addresses(ctx: &Context) -> Result<Vec<String>, Error> {
    use k8s_openapi::api::core::v1::Node;
    let nodes: Api<Node> = Api::all(ctx.rt.client.clone());
    let lp = kube::api::ListParams::default().labels(crate::shared::names::CONTROL_PLANE_LABEL);
    let list = nodes.list(&lp).await.map_err(error::observe("list control-plane nodes"))?;
    Ok(upkeep::internal_addresses(&list.items))
}

/// Why this cluster's CA may not rotate now, if so: kube-apiserver (wired) and other
/// clusters (sharing the CA) load it only at start, and etcd-pilot cannot restart them
/// between the phases.
async fn rotation_refused(ec: &EtcdCluster, ctx: &Context) -> Result<Option<String>, Error> {
    if let Some(from) = &ec.spec.tls.ca_from {
        return Ok(Some(format!(
            "spec.tls.caGeneration: the CA belongs to EtcdCluster {} (spec.tls.caFrom); rotating a shared CA is not supported: its clusters and kube-apiserver would have to restart between the phases",
            from.cluster
        )));
    }
    if ec.spec.api_server.is_some() {
        return Ok(Some("spec.tls.caGeneration: kube-apiserver is wired to this cluster (spec.apiServer) and loads its etcd CA only at start; a rotation would need it restarted between the phases, which etcd-pilot cannot do: not supported".into()));
    }
    let api: Api<EtcdCluster> = Api::namespaced(ctx.rt.client.clone(), &ec.namespace().unwrap_or_default());
    let all = api.list(&Default::default()).await.map_err(error::observe("list EtcdClusters"))?;
    let me = ec.name_any();
    let sharing: Vec<String> = all
        .items
        .iter()
        .filter(|c| c.spec.tls.ca_from.as_ref().is_some_and(|f| f.cluster == me))
        .map(|c| c.name_any())
        .collect();
    Ok((!sharing.is_empty()).then(|| {
        format!(
            "spec.tls.caGeneration: EtcdCluster {} shares this CA (spec.tls.caFrom); rotating a shared CA is not supported: those clusters would have to restart between the phases",
            sharing.join(", ")
        )
    }))
}

/// Every member, on its client and its peer port, serves a certificate the phase's
/// roots accept and accepts a client certificate of `ca` (phase 1: of the new CA, while
/// the old signs; phase 2: only the new CA's, both ways).
async fn check_members(
    ec: &EtcdCluster,
    auth: &ca_rotation::Authority,
    ca: &crate::pki::CertPair,
    pods: &[ca_rotation::PodTrust],
) -> Result<(), String> {
    let roots = match auth.phase {
        ca_rotation::Phase::TrustBoth => auth.trust_pem(),
        _ => ca.cert_pem.clone(),
    };
    let probe = crate::pki::issue(
        ca,
        crate::shared::secrets::PEER_CN,
        &[],
        crate::pki::Usage::Peer,
        std::time::Duration::from_secs(3600),
    )
    .map_err(|e| e.to_string())?;
    let n = Names::of(ec);
    let urls: Vec<String> = pods.iter().flat_map(|p| [n.client_url(&p.name), n.peer_url(&p.name)]).collect();
    let results = futures::future::join_all(urls.iter().map(|u| {
        crate::etcd::probe::tls_version(u, &roots, &probe.cert_pem, &probe.key_pem, std::time::Duration::from_secs(3))
    }))
    .await;
    let failed: Vec<String> = results.into_iter().filter_map(|r| r.err().map(|e| e.to_string())).collect();
    match failed.is_empty() {
        true => Ok(()),
        false => Err(failed.join("; ")),
    }
}

/// Member volumes against `spec.storage.size`; the StorageClass is read only when a
/// claim has to grow.
pub async fn observe_sizing(
    ec: &EtcdCluster,
    ctx: &Context,
    pvcs: &[PersistentVolumeClaim],
) -> Result<volumes::Sizing, Error> {
    use k8s_openapi::api::storage::v1::StorageClass;
    let want = &ec.spec.storage.size.0;
    let claims = volumes::member_claims(pvcs);
    let first = volumes::sizing(want, &claims, &|_| Some(true));
    let volumes::Sizing::Grow(_) = first else { return Ok(first) };
    let mut classes = BTreeMap::new();
    for class in claims.iter().filter_map(|c| c.class.clone()) {
        if classes.contains_key(&class) {
            continue;
        }
        let sc = Api::<StorageClass>::all(ctx.rt.client.clone())
            .get_opt(&class)
            .await
            .map_err(error::observe(format!("read StorageClass {class}")))?;
        classes.insert(class, sc.map(|sc| sc.allow_volume_expansion == Some(true)));
    }
    Ok(volumes::sizing(want, &claims, &|c| classes.get(c).copied().flatten()))
}

/// The nodes that can take a member of a cluster whose members never share a node.
pub async fn placeable_nodes(ec: &EtcdCluster, ctx: &Context) -> Result<Vec<String>, Error> {
    use k8s_openapi::api::core::v1::Node;
    let nodes: Api<Node> = Api::all(ctx.rt.client.clone());
    let list = nodes.list(&ListParams::default()).await.map_err(error::observe("list nodes"))?;
    let join = build::Join { initial_cluster: Vec::new(), existing: true };
    let pod =
        build::member_pod(ec, "placement", &join, &ctx.settings.etcd_image_repository, &ctx.settings.operator_image);
    Ok(placement::placeable_nodes(&pod, &list.items))
}

/// Pods and PVCs of the cluster, straight from the API server (not a cache: a plan must
/// see its last step's effect).
pub async fn observe_kube(
    ec: &EtcdCluster,
    ctx: &Context,
    names: &Names,
) -> Result<(Vec<Pod>, Vec<PersistentVolumeClaim>), Error> {
    let uid = ec.uid();
    let pods_api: Api<Pod> = Api::namespaced(ctx.rt.client.clone(), &names.namespace);
    let pvcs_api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.rt.client.clone(), &names.namespace);
    let pods: Vec<Pod> = pods_api
        .list(&ListParams::default().labels(&member_selector(&names.cluster)))
        .await
        .map_err(error::observe("list member pods"))?
        .items
        .into_iter()
        // A pod of an earlier cluster of this name is being collected: not ours.
        .filter(|p| p.owner_references().iter().any(|o| Some(&o.uid) == uid.as_ref()))
        .collect();
    let pvcs: Vec<PersistentVolumeClaim> = if ec.spec.storage.medium == StorageMedium::Persistent {
        pvcs_api
            .list(&ListParams::default().labels(&pvc_selector(&names.cluster)))
            .await
            .map_err(error::observe("list member PVCs"))?
            .items
    } else {
        Vec::new()
    };
    Ok((pods, pvcs))
}

/// What maintenance looks at: each voter's db with the status' records, alarms, the
/// revision, and which scheduled rounds are due. `None` without an answer from etcd.
pub fn maintenance_observed(
    ec: &EtcdCluster,
    names: &Names,
    view: Option<&EtcdView>,
    now: jiff::Timestamp,
) -> Option<maintenance::Observed> {
    let view = view?;
    let status = ec.status.as_ref();
    let mut members = Vec::new();
    for m in view.members.iter().filter(|m| !m.is_learner) {
        let Some(s) = view.statuses.get(&m.id) else { continue };
        let name = m.peer_urls.iter().find_map(|u| names.member_of_peer_url(u)).unwrap_or_else(|| m.name.clone());
        let recorded = status.and_then(|st| st.members.iter().find(|r| r.name == name));
        members.push(maintenance::MemberDb {
            name,
            id: m.id,
            leader: s.is_leader(),
            db_size: s.db_size,
            in_use: s.db_size_in_use,
            last_defrag: recorded.and_then(|r| r.last_defragmentation.as_ref()).map(|d| d.time.0),
            failures: recorded.map_or(0, |r| u32::try_from(r.defrag_failures).unwrap_or(0)),
            last_failure: recorded.and_then(|r| r.last_defrag_failure.as_ref()).map(|t| t.0),
        });
    }
    let alarms = observe::alarms(view);
    let created = ec.metadata.creation_timestamp.as_ref().map_or(now, |t| t.0);
    let slot = |cron: &Option<String>, since: jiff::Timestamp| {
        let cron = validation::parse_cron(cron.as_ref()?).ok()?;
        crate::shared::cron::due_slot(&cron, &jiff::tz::TimeZone::UTC, since, now)
    };
    let recorded = status.and_then(|s| s.maintenance.as_ref());
    let last_compaction = recorded.and_then(|m| m.last_compaction.as_ref()).map(|c| c.time.0);
    Some(maintenance::Observed {
        now,
        members,
        no_space: alarms.iter().any(|a| a == "NOSPACE"),
        corrupt: alarms.iter().any(|a| a == "CORRUPT"),
        recovery: recorded.and_then(|m| m.no_space.as_ref()).map(|r| maintenance::Recovery {
            compacted: r.compacted.as_ref().map(|t| t.0),
            all_history: r.all_history,
        }),
        revision: view.statuses.values().map(|s| s.revision).max().unwrap_or(0),
        defrag_slot: slot(&ec.spec.defrag.schedule, created),
        compaction_due: slot(&ec.spec.compaction.schedule, last_compaction.unwrap_or(created).max(created)).is_some(),
        streamed: None,
    })
}

/// The lowest revision the continuous backups of `ec` have made durable (their
/// schedules' `status.continuous.lastRevision`); asked only when a compaction is due.
pub async fn streamed(ec: &EtcdCluster, ctx: &Context) -> Result<Option<i64>, Error> {
    let ns = ec.namespace().unwrap_or_default();
    let api: kube::Api<crate::api::EtcdBackupSchedule> = kube::Api::namespaced(ctx.rt.client.clone(), &ns);
    let list =
        api.list(&kube::api::ListParams::default()).await.map_err(error::observe("list the backup schedules"))?;
    Ok(list
        .items
        .iter()
        .filter(|s| s.spec.cluster_name == ec.name_any() && s.spec.streams())
        .map(|s| s.status.as_ref().and_then(|st| st.continuous.as_ref()).and_then(|c| c.last_revision).unwrap_or(0))
        .min())
}

/// How long each member has been unhealthy (by the one definition of member health),
/// kept between passes.
pub fn track_health(ctx: &Context, key: &Key, names: &Names, view: Option<&EtcdView>) -> HashMap<String, u64> {
    ctx.with_memory(key, |m| {
        let Some(v) = view else { return HashMap::new() };
        let now = Instant::now();
        let mut out = HashMap::new();
        let current: Vec<String> =
            v.members.iter().filter_map(|m| m.peer_urls.iter().find_map(|u| names.member_of_peer_url(u))).collect();
        m.unhealthy_since.retain(|name, _| current.contains(name));
        for member in &v.members {
            let name = member.peer_urls.iter().find_map(|u| names.member_of_peer_url(u)).unwrap_or_default();
            if observe::member_healthy(v.statuses.get(&member.id), member.is_learner) {
                m.unhealthy_since.remove(&name);
            } else {
                let since = *m.unhealthy_since.entry(name.clone()).or_insert(now);
                out.insert(name, now.duration_since(since).as_secs());
            }
        }
        out
    })
}

/// What the user asked for, as the planner reads it.
pub fn desired(ec: &EtcdCluster, repository: &str) -> Desired {
    Desired {
        size: usize::try_from(ec.spec.size).unwrap_or(0),
        version: ec.spec.version.clone(),
        spec_hash: build::spec_hash(ec, repository),
        trust: None,
        paused: ec.spec.paused,
        replace_unhealthy_after_secs: u64::try_from(ec.spec.healing.replace_unhealthy_after_seconds).unwrap_or(300),
        learner_retry_after_secs: LEARNER_RETRY_AFTER_SECS,
        memory: ec.spec.storage.medium == StorageMedium::Memory,
        allow_data_loss: ec.spec.storage.allow_data_loss,
        one_per_node: placement::one_per_node(ec),
        maintenance: Some(maintenance::Policy {
            defrag_enabled: ec.spec.defrag.enabled,
            threshold_percent: i64::from(ec.spec.defrag.fragmentation_threshold_percent),
            min_db_size: ec.spec.defrag.min_db_size_bytes,
            retain_revisions: ec.spec.compaction.retain_revisions,
            remediate_no_space: ec.spec.quota.remediate_no_space,
            quota: ec.spec.etcd.quota_backend_bytes,
        }),
    }
}

/// Asks etcd for its member list and every reachable member's own status.
/// Both at once: a member that does not answer costs one timeout, not two.
///
/// The planner deletes the pod and volume of a member etcd does not list, so the list
/// it plans on is the leader's when the leader answered (one more call, to the member
/// whose status says it leads): a follower (etcd 3.4 serves MemberList from what a
/// member has applied, not through raft) may not have applied a membership change yet,
/// and under load may lag by seconds. The first answer is kept for when no leader
/// answers, marked unconfirmed.
pub async fn observe_etcd(admin: &EtcdAdmin) -> Option<EtcdView> {
    let (first_answer, statuses) = futures::join!(admin.member_list(), admin.statuses());
    let statuses: HashMap<u64, EndpointStatus> =
        statuses.into_iter().filter_map(|(_, r)| r.ok()).map(|s| (s.member_id, s)).collect();
    let from_leader = match statuses.values().find(|s| s.is_leader()) {
        Some(leader) => admin.member_list_at(&leader.endpoint).await.ok(),
        None => None,
    };
    let (members, unconfirmed) = match from_leader {
        Some(members) => (members, false),
        None => (first_answer.ok()?, true),
    };
    Some(EtcdView { members, statuses, unconfirmed })
}
