//! Objects the cluster controller's unit tests start from.

use serde_json::json;

use crate::api::EtcdCluster;

/// An EtcdCluster `main` in namespace `prod` (uid `uid-now`) with this spec.
pub fn cluster(spec: serde_json::Value) -> EtcdCluster {
    let mut ec: EtcdCluster = serde_json::from_value(json!({
        "apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdCluster",
        "metadata": {"name": "main", "namespace": "prod", "uid": "uid-now"},
        "spec": spec,
    }))
    .expect("an EtcdCluster");
    ec.metadata.uid = Some("uid-now".into());
    ec
}
