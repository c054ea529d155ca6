//! The writes a pass plans before its step, from what it read: certificates (first pass,
//! renewals, a lost CA, a CA rotation's step before the leaves it implies), Services and
//! budget, the volumes' bookkeeping, the cluster id.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeStatus};
use serde_json::json;

use super::*;
use crate::controllers::cluster::fixtures;
use crate::etcd::EndpointStatus;

const DOMAIN: &str = "cluster.local";

fn plan(ec: &EtcdCluster, observed: &FixedObserved, pods: &[Pod], members_exist: bool) -> (Vec<Upkeep>, Fixed) {
    fixed(ec, observed, pods, members_exist, (DOMAIN, BudgetApi::V1, OffsetDateTime::now_utc())).unwrap()
}

/// Each write as `Kind name`, in order.
fn kinds(writes: &[Upkeep]) -> Vec<String> {
    writes
        .iter()
        .map(|w| match w {
            Upkeep::RotateCa { secret, .. } => format!("RotateCa {}", secret.name_any()),
            Upkeep::IssueSecret { secret, .. } => format!("IssueSecret {}", secret.name_any()),
            Upkeep::ApplyFixed { .. } => "ApplyFixed".into(),
            Upkeep::OwnVolume { name, .. } => format!("OwnVolume {name}"),
            Upkeep::SweepVolume { name, .. } => format!("SweepVolume {name}"),
            Upkeep::GrowVolume { name, size } => format!("GrowVolume {name} {size}"),
            Upkeep::RecordClusterId { id, on_cluster, volumes } => {
                format!("RecordClusterId {id} cluster={on_cluster} {volumes:?}")
            }
        })
        .collect()
}

/// What a pass reads after `writes` were made (and the Services applied).
fn after(writes: &[Upkeep]) -> FixedObserved {
    let mut observed = FixedObserved::default();
    for w in writes {
        match w {
            Upkeep::RotateCa { secret, .. } | Upkeep::IssueSecret { secret, .. } => {
                observed.secrets.insert(secret.name_any(), secret.clone());
            }
            Upkeep::ApplyFixed { digest, .. } => observed.recently_applied = Some(digest.clone()),
            _ => {}
        }
    }
    observed
}

fn pod(name: &str, trust: Option<&str>) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": trust.map(|t| json!({ca_rotation::TRUST_ANNOTATION: t})).unwrap_or(json!({}))},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }))
    .unwrap()
}

#[test]
fn the_first_pass_issues_the_ca_and_every_certificate_before_the_services() {
    let ec = fixtures::cluster(json!({"size": 3, "version": "3.5.30"}));
    let (writes, fixed) = plan(&ec, &FixedObserved::default(), &[], false);
    assert_eq!(
        kinds(&writes),
        [
            "IssueSecret main-ca",
            "IssueSecret main-peer-tls",
            "IssueSecret main-server-tls",
            "IssueSecret main-client-tls",
            "ApplyFixed"
        ]
    );
    assert_eq!(fixed.certificates, CertState::Ready { generation: 0 });
    assert_eq!(fixed.expiries.len(), 4, "the expiries of what is about to be written");
    assert!(matches!(fixed.trust, Some((_, false))), "trusted CAs known, no rotation");
}

#[test]
fn a_pass_on_what_the_last_one_wrote_writes_nothing() {
    let ec = fixtures::cluster(json!({"size": 3, "version": "3.5.30"}));
    let (first, _) = plan(&ec, &FixedObserved::default(), &[], false);
    let (writes, fixed) = plan(&ec, &after(&first), &[pod("main-0", None)], true);
    assert_eq!(kinds(&writes), Vec::<String>::new());
    assert_eq!(fixed.certificates, CertState::Ready { generation: 0 });
}

#[test]
fn services_and_budget_are_applied_again_when_they_changed_or_not_lately() {
    let ec = fixtures::cluster(json!({"size": 3, "version": "3.5.30"}));
    let (first, _) = plan(&ec, &FixedObserved::default(), &[], false);
    let mut observed = after(&first);
    // Not applied within REAPPLY_FIXED_AFTER (or by another replica): applied again.
    observed.recently_applied = None;
    assert_eq!(kinds(&plan(&ec, &observed, &[], true).0), ["ApplyFixed"]);
    // What they are built from changed: here their owner, a cluster deleted and made
    // again under the same name (the controller remembers clusters by name).
    observed.recently_applied = after(&first).recently_applied;
    let mut again = ec.clone();
    again.metadata.uid = Some("uid-again".into());
    assert_eq!(kinds(&plan(&again, &observed, &[], true).0), ["ApplyFixed"]);
}

#[test]
fn a_lost_ca_with_members_writes_no_certificate() {
    let ec = fixtures::cluster(json!({"size": 3, "version": "3.5.30"}));
    let (first, _) = plan(&ec, &FixedObserved::default(), &[], false);
    let mut observed = after(&first);
    observed.secrets.remove("main-ca");
    let (writes, fixed) = plan(&ec, &observed, &[pod("main-0", None)], true);
    assert_eq!(kinds(&writes), Vec::<String>::new());
    assert!(matches!(fixed.certificates, CertState::Lost(_)), "{:?}", fixed.certificates);
    // Before any member: the CA is simply made.
    let (writes, _) = plan(&ec, &observed, &[], false);
    assert_eq!(kinds(&writes)[0], "IssueSecret main-ca");
}

#[test]
fn a_ca_rotation_writes_its_step_before_the_leaves_it_implies() {
    let ec = fixtures::cluster(json!({"size": 1, "version": "3.5.30"}));
    let (first, _) = plan(&ec, &FixedObserved::default(), &[], false);
    let rotate = fixtures::cluster(json!({"size": 1, "version": "3.5.30", "tls": {"caGeneration": 1}}));
    let pods = [pod("main-0", None)];

    // Asked for and refused (a shared CA, kube-apiserver wired): nothing written.
    let mut observed = after(&first);
    observed.rotation_refused = Some("shared".into());
    let (writes, fixed) = plan(&rotate, &observed, &pods, true);
    assert_eq!(kinds(&writes), Vec::<String>::new());
    assert_eq!(fixed.certificates, CertState::RotationRefused("shared".into()));

    // Phase 1: the new CA, then every leaf re-trusted (old + new) from it, in that order.
    let (writes, fixed) = plan(&rotate, &after(&first), &pods, true);
    assert_eq!(
        kinds(&writes),
        ["RotateCa main-ca", "IssueSecret main-peer-tls", "IssueSecret main-server-tls", "IssueSecret main-client-tls"]
    );
    assert!(matches!(fixed.certificates, CertState::Rotating(_)));
    let (fingerprint, rotating) = fixed.trust.clone().unwrap();
    assert!(rotating, "members are asked to run with the new trust");

    // The next pass, members not yet restarted with it: wait, write nothing.
    let mut observed = after(&first);
    observed.secrets.extend(after(&writes).secrets);
    let (again, waiting) = plan(&rotate, &observed, &pods, true);
    assert_eq!(kinds(&again), Vec::<String>::new());
    assert!(matches!(waiting.certificates, CertState::Rotating(ref why) if why.contains("0 of 1")), "{waiting:?}");

    // Restarted and ready, the check not made yet: still waiting, nothing written.
    let restarted = [pod("main-0", Some(&fingerprint))];
    let (writes, _) = plan(&rotate, &observed, &restarted, true);
    assert_eq!(kinds(&writes), Vec::<String>::new());
    // Checked: the new CA signs; every leaf is reissued by it.
    observed.checked = Some(Ok(()));
    let (writes, fixed) = plan(&rotate, &observed, &restarted, true);
    assert_eq!(
        kinds(&writes),
        ["RotateCa main-ca", "IssueSecret main-peer-tls", "IssueSecret main-server-tls", "IssueSecret main-client-tls"]
    );
    assert!(matches!(fixed.certificates, CertState::Rotating(ref why) if why.contains("2/3")));
}

#[test]
fn volume_bookkeeping_follows_retention_sweeps_and_size() {
    let pvc = |name: &str, annotations: serde_json::Value, owned: bool| -> PersistentVolumeClaim {
        let owners = owned.then(|| {
            json!([{"apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdCluster", "name": "main",
                    "uid": "uid-now", "controller": true, "blockOwnerDeletion": true}])
        });
        serde_json::from_value(json!({"metadata": {"name": name, "uid": format!("uid-{name}"),
                                                   "annotations": annotations, "ownerReferences": owners}}))
        .unwrap()
    };
    let retain = fixtures::cluster(json!({"size": 3, "version": "3.5.30"}));
    let pvcs = [
        pvc("data-main-0", json!({}), false),
        // Set aside (removed member): neither owned nor swept unless marked for deletion.
        pvc("data-main-1", json!({REMOVED_ANNOTATION: "retain"}), false),
        pvc("data-main-2", json!({REMOVED_ANNOTATION: REMOVED_TO_DELETE}), false),
        pvc("data-main-3", json!({REMOVED_ANNOTATION: REMOVED_TO_DELETE}), false),
    ];
    let pods = [pod("main-0", None), pod("main-3", None)];
    let grow = Sizing::Grow(vec!["data-main-0".into()]);
    assert_eq!(
        kinds(&volumes(&retain, &pvcs, &pods, &grow)),
        // main-3's pod still runs: its volume waits for it.
        ["SweepVolume data-main-2", "GrowVolume data-main-0 4Gi"]
    );
    let delete =
        fixtures::cluster(json!({"size": 3, "version": "3.5.30", "storage": {"retention": {"whenDeleted": "Delete"}}}));
    assert_eq!(
        kinds(&volumes(&delete, &pvcs, &pods, &Sizing::AtSize)),
        ["OwnVolume data-main-0", "SweepVolume data-main-2"]
    );
}

#[test]
fn the_cluster_id_is_recorded_once_where_it_is_missing() {
    let status = |cluster_id| EndpointStatus {
        endpoint: "e".into(),
        member_id: 1,
        cluster_id,
        version: "3.5.30".into(),
        db_size: 0,
        db_size_in_use: 0,
        leader: 1,
        raft_index: 0,
        raft_term: 0,
        raft_applied_index: 0,
        is_learner: false,
        errors: Vec::new(),
        revision: 0,
    };
    let view = |cluster_id| EtcdView {
        members: Vec::new(),
        statuses: HashMap::from([(1, status(cluster_id))]),
        unconfirmed: false,
    };
    let pvc = |name: &str, annotations: serde_json::Value| -> PersistentVolumeClaim {
        serde_json::from_value(json!({"metadata": {"name": name, "annotations": annotations}})).unwrap()
    };
    let ec = fixtures::cluster(json!({"size": 3, "version": "3.5.30"}));
    let pvcs = [
        pvc("data-main-0", json!({CLUSTER_ID_ANNOTATION: "ab"})),
        pvc("data-main-1", json!({})),
        pvc("data-main-2", json!({REMOVED_ANNOTATION: "retain"})),
    ];
    assert_eq!(cluster_id(&ec, &pvcs, None), None, "no etcd answer: nothing");
    assert_eq!(cluster_id(&ec, &pvcs, Some(&view(0))), None, "no id reported yet");
    assert_eq!(
        kinds(&cluster_id(&ec, &pvcs, Some(&view(0xab))).into_iter().collect::<Vec<_>>()),
        ["RecordClusterId ab cluster=true [\"data-main-1\"]"]
    );
    let mut recorded = ec.clone();
    recorded.annotations_mut().insert(CLUSTER_ID_ANNOTATION.into(), "ab".into());
    let done = [pvc("data-main-0", json!({CLUSTER_ID_ANNOTATION: "ab"}))];
    assert_eq!(cluster_id(&recorded, &done, Some(&view(0xab))), None, "recorded everywhere: nothing");
}

fn node(addresses: &[(&str, &str)]) -> Node {
    Node {
        status: Some(NodeStatus {
            addresses: Some(
                addresses.iter().map(|(t, a)| NodeAddress { type_: t.to_string(), address: a.to_string() }).collect(),
            ),
            ..NodeStatus::default()
        }),
        ..Node::default()
    }
}

#[test]
fn control_plane_addresses_are_the_internal_ips() {
    let nodes =
        [node(&[("Hostname", "cp-0"), ("InternalIP", "10.0.0.1")]), node(&[("InternalIP", "fd00::2")]), node(&[])];
    assert_eq!(internal_addresses(&nodes), ["10.0.0.1", "fd00::2"]);
}
