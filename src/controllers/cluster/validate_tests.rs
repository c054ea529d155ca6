use super::*;
use crate::controllers::cluster::fixtures::cluster;
use crate::shared::names::{MEDIUM_ANNOTATION, TLS_MODE_ANNOTATION, TOPOLOGY_ANNOTATION, VERSION_ANNOTATION};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use serde_json::json;

fn pod(version: &str, topology: &str) -> Pod {
    serde_json::from_value(json!({"metadata": {"name": "main-0", "annotations": {
        VERSION_ANNOTATION: version, TOPOLOGY_ANNOTATION: topology, MEDIUM_ANNOTATION: "Persistent"}}}))
    .unwrap()
}

#[test]
fn problems_compare_the_spec_with_what_runs() {
    let ok = cluster(json!({"size": 3, "version": "3.5.1"}));
    assert!(problems(&ok, &[pod("3.4.23", "External")], &[]).is_empty(), "one minor up is fine");
    let jump = cluster(json!({"size": 3, "version": "3.6.0"}));
    let p = problems(&jump, &[pod("3.4.23", "External"), pod("3.5.1", "External")], &[]);
    assert!(p.len() == 1 && p[0].starts_with("spec.version"), "measured from the lowest running: {p:?}");
    let stacked = cluster(json!({"size": 3, "version": "3.4.23", "topology": "Stacked"}));
    let p = problems(&stacked, &[pod("3.4.23", "External")], &[]);
    assert!(p.len() == 1 && p[0].starts_with("spec.topology"), "{p:?}");
    assert!(problems(&stacked, &[], &[]).is_empty(), "a new cluster may pick any topology");
    let mut operator_tls = pod("3.4.23", "External");
    operator_tls
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(TLS_MODE_ANNOTATION.into(), "Operator".into());
    let plain = cluster(json!({"size": 3, "version": "3.4.23", "tls": {"mode": "Disabled"}}));
    let p = problems(&plain, &[operator_tls], &[]);
    assert!(p.len() == 1 && p[0].starts_with("spec.tls.mode"), "{p:?}");
    let cm = cluster(
        json!({"size": 3, "version": "3.4.23", "tls": {"mode": "CertManager", "certManager": {"issuerRef": {"name": "ca"}}}}),
    );
    assert!(problems(&cm, &[], &[])[0].contains("CertManager is not supported"));
}

#[test]
fn two_compactors_are_named() {
    let one = cluster(json!({"size": 3, "version": "3.5.1", "compaction": {"schedule": "@hourly"}}));
    assert_eq!(compaction_conflict(&one), None, "etcd's own auto-compaction is off by default (0)");
    let etcd_only = cluster(json!({"size": 3, "version": "3.5.1", "etcd": {"autoCompactionRetention": "1h"}}));
    assert_eq!(compaction_conflict(&etcd_only), None);
    let off = cluster(
        json!({"size": 3, "version": "3.5.1", "compaction": {"schedule": "@hourly"}, "etcd": {"autoCompactionRetention": "0h"}}),
    );
    assert_eq!(compaction_conflict(&off), None);
    let both = cluster(
        json!({"size": 3, "version": "3.5.1", "compaction": {"schedule": "@hourly"}, "etcd": {"autoCompactionRetention": "1h"}}),
    );
    assert!(compaction_conflict(&both).is_some_and(|w| w.contains("both compact this cluster")));
    let revisions = cluster(
        json!({"size": 3, "version": "3.5.1", "compaction": {"schedule": "@hourly"}, "etcd": {"autoCompactionMode": "Revision", "autoCompactionRetention": "1000"}}),
    );
    assert!(compaction_conflict(&revisions).is_some());
}

#[test]
fn a_pvc_of_an_earlier_cluster_of_the_same_name_is_refused() {
    let ec = cluster(json!({"size": 1, "version": "3.4.23"}));
    let pvc = |uid: &str| -> PersistentVolumeClaim {
        serde_json::from_value(
            json!({"metadata": {"name": "data-main-0", "annotations": {crate::shared::names::CLUSTER_UID_ANNOTATION: uid}}}),
        )
        .unwrap()
    };
    assert!(problems(&ec, &[], &[pvc("uid-now")]).is_empty());
    let p = problems(&ec, &[], &[pvc("uid-old")]);
    assert!(p[0].contains("PVC data-main-0 holds data of an earlier EtcdCluster"), "{p:?}");
}
