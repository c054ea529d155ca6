//! The names, labels and annotations of a cluster's objects, and the addresses of its
//! members: what every controller agrees on about an EtcdCluster's Kubernetes objects.

use std::collections::BTreeMap;

use kube::ResourceExt;

use crate::api::EtcdCluster;
use crate::api::cluster::TlsMode;

pub const CLIENT_PORT: i32 = 2379;
pub const PEER_PORT: i32 = 2380;
pub const METRICS_PORT: i32 = 2381;
pub const DATA_DIR: &str = "/var/lib/etcd";
pub const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";
/// The control-plane taint before Kubernetes 1.24.
pub const MASTER_LABEL: &str = "node-role.kubernetes.io/master";
/// Annotations of member pods: the etcd version, topology and storage medium they run.
pub const VERSION_ANNOTATION: &str = "etcdpilot.io/version";
pub const TOPOLOGY_ANNOTATION: &str = "etcdpilot.io/topology";
pub const MEDIUM_ANNOTATION: &str = "etcdpilot.io/storage-medium";
pub const TLS_MODE_ANNOTATION: &str = "etcdpilot.io/tls-mode";
/// Annotation of member pods: the cluster whose CA signed their certificates when it is
/// another's (`spec.tls.caFrom`), empty for the cluster's own.
pub const CA_FROM_ANNOTATION: &str = "etcdpilot.io/ca-from";
/// Annotation of member PVCs: uid of the EtcdCluster they were made for.
pub const CLUSTER_UID_ANNOTATION: &str = "etcdpilot.io/cluster-uid";
/// Annotation of member PVCs and of the EtcdCluster: the etcd cluster id, recorded once
/// the cluster formed. Durable evidence that it did: a cluster that formed is never
/// bootstrapped again, whatever happens to its status.
pub const CLUSTER_ID_ANNOTATION: &str = "etcdpilot.io/cluster-id";
/// Annotation of the EtcdCluster: the members of a bootstrap, recorded before its first
/// pod is created.
pub const BOOTSTRAP_ANNOTATION: &str = "etcdpilot.io/bootstrap";
/// Annotation of member pods: hash of everything in the pod that follows from the spec;
/// a pod with another hash is restarted (one at a time, the leader last).
pub const SPEC_HASH_ANNOTATION: &str = "etcdpilot.io/spec-hash";
/// What member pods' health probes ask etcd: `/health` with NOSPACE excluded, since
/// etcd reports every alarm in every member and a full cluster must keep serving reads
/// (etcd 3.4.16+ and 3.5 take `exclude`).
pub const HEALTH_PATH: &str = "/health?exclude=NOSPACE";
/// Label of the backups a schedule made: the schedule's name.
pub const SCHEDULE_LABEL: &str = "etcdpilot.io/schedule";

/// Names and addresses of one cluster's objects and members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    pub cluster: String,
    pub namespace: String,
    pub tls: bool,
}

impl Names {
    pub fn of(ec: &EtcdCluster) -> Names {
        Names {
            cluster: ec.name_any(),
            namespace: ec.namespace().unwrap_or_default(),
            tls: ec.spec.tls.mode != TlsMode::Disabled,
        }
    }

    /// Headless Service that gives members their DNS names.
    pub fn peer_service(&self) -> String {
        format!("{}-peers", self.cluster)
    }

    /// Service clients use.
    pub fn client_service(&self) -> String {
        format!("{}-client", self.cluster)
    }

    pub fn pvc(&self, member: &str) -> String {
        format!("data-{member}")
    }

    fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// `<member>.<cluster>-peers.<ns>.svc`
    pub fn member_host(&self, member: &str) -> String {
        format!("{member}.{}.{}.svc", self.peer_service(), self.namespace)
    }

    pub fn peer_url(&self, member: &str) -> String {
        format!("{}://{}:{PEER_PORT}", self.scheme(), self.member_host(member))
    }

    pub fn client_url(&self, member: &str) -> String {
        format!("{}://{}:{CLIENT_PORT}", self.scheme(), self.member_host(member))
    }

    pub fn client_service_url(&self) -> String {
        format!("{}://{}.{}.svc:{CLIENT_PORT}", self.scheme(), self.client_service(), self.namespace)
    }

    /// The member a peer URL belongs to: the first label of its host.
    pub fn member_of_peer_url(&self, url: &str) -> Option<String> {
        let host = url.split("://").nth(1)?.split([':', '/']).next()?;
        let (member, rest) = host.split_once('.')?;
        rest.starts_with(&format!("{}.", self.peer_service())).then(|| member.to_string())
    }
}

/// Labels every object of a cluster carries.
pub fn labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "etcd".to_string()),
        ("app.kubernetes.io/instance".to_string(), cluster.to_string()),
        ("app.kubernetes.io/managed-by".to_string(), "etcd-pilot".to_string()),
    ])
}

/// Selects the member pods of a cluster.
pub fn selector(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "etcd".to_string()),
        ("app.kubernetes.io/instance".to_string(), cluster.to_string()),
    ])
}

/// Label selector of a cluster's member pods.
pub fn member_selector(cluster: &str) -> String {
    format!("app.kubernetes.io/name=etcd,app.kubernetes.io/instance={cluster},app.kubernetes.io/component=member")
}

/// Label selector of a cluster's member volumes.
pub fn pvc_selector(cluster: &str) -> String {
    format!("app.kubernetes.io/name=etcd,app.kubernetes.io/instance={cluster},etcdpilot.io/member")
}

/// Annotation of a PVC kept after its member was removed.
pub const REMOVED_ANNOTATION: &str = "etcdpilot.io/removed-member";
/// Value of the removed-member mark on a volume that is to be deleted (any other value:
/// kept by retention).
pub const REMOVED_TO_DELETE: &str = "delete";
