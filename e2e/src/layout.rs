//! Where everything of a testbed lives: addresses, ports, directories, and the state
//! file that `down` and `status` read.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, io};

/// Bridge that holds the host's testbed address and the node IPs.
/// The containerd snapshotter of every node (images are imported into it).
pub const SNAPSHOTTER: &str = "overlayfs";
pub const BRIDGE: &str = "eptb0";
/// Prefix of the per-node pod bridges.
pub const POD_BRIDGE_PREFIX: &str = "eptbn";
/// The host side of the testbed network: apiserver, DNS and S3 listen here.
pub const HOST_IP: &str = "10.213.0.1";
pub const HOST_CIDR: &str = "10.213.0.1/24";
/// Pods: node i gets 10.214.i.0/24.
pub const POD_CIDR: &str = "10.214.0.0/16";
pub const SERVICE_CIDR: &str = "10.215.0.0/16";
/// The `kubernetes` Service's ClusterIP: first address of the service range.
pub const KUBERNETES_SERVICE_IP: &str = "10.215.0.1";
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// Namespace of the testbed's own objects (the S3 Service and credentials).
pub const TESTBED_NAMESPACE: &str = "etcd-pilot-testbed";
pub const STORAGE_CLASS: &str = "local-path";
pub const PROVISIONER: &str = "etcdpilot.io/testbed-local";
pub const S3_ACCESS_KEY: &str = "testbed";
pub const S3_SECRET_KEY: &str = "testbed-secret-key";
pub const S3_BUCKET: &str = "etcd-backups";
/// Port of the in-cluster S3 Service (`s3.etcd-pilot-testbed.svc`).
pub const S3_SERVICE_PORT: u16 = 9000;

/// One node: its own containerd, kubelet, CNI bridge and pod subnet.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub index: u8,
    pub control_plane: bool,
    pub ip: String,
    pub pod_subnet: String,
    pub pod_gateway: String,
    pub bridge: String,
    pub kubelet_port: u16,
    pub kubelet_healthz_port: u16,
}

impl Node {
    pub fn new(index: u8, control_plane: bool, ordinal: u8, kubelet_port: u16, kubelet_healthz_port: u16) -> Node {
        Node {
            name: if control_plane { format!("cp-{ordinal}") } else { format!("worker-{ordinal}") },
            index,
            control_plane,
            ip: format!("10.213.0.{}", 11 + u16::from(index)),
            pod_subnet: format!("10.214.{index}.0/24"),
            pod_gateway: format!("10.214.{index}.1"),
            bridge: format!("{POD_BRIDGE_PREFIX}{index}"),
            kubelet_port,
            kubelet_healthz_port,
        }
    }
}

/// A process the testbed started.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Proc {
    pub name: String,
    pub pid: u32,
}

/// Everything `down` and `status` need, written by `up`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub dir: PathBuf,
    pub tools: PathBuf,
    pub nodes: Vec<Node>,
    pub etcd_client_port: u16,
    pub etcd_peer_port: u16,
    pub apiserver_port: u16,
    pub controller_manager_port: u16,
    pub scheduler_port: u16,
    pub proxy_healthz_port: u16,
    pub proxy_metrics_port: u16,
    pub s3_port: u16,
    pub processes: Vec<Proc>,
}

impl State {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("testbed.json")
    }

    pub fn load(dir: &Path) -> Result<State> {
        let p = Self::path(dir);
        let text = std::fs::read_to_string(&p).map_err(io(&p))?;
        serde_json::from_str(&text).map_err(|e| crate::error::TestbedError::Other(format!("{}: {e}", p.display())))
    }

    pub fn save(&self) -> Result<()> {
        let p = Self::path(&self.dir);
        let tmp = p.with_extension("json.tmp");
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        std::fs::write(&tmp, text).map_err(io(&tmp))?;
        std::fs::rename(&tmp, &p).map_err(io(&p))
    }

    pub fn apiserver_url(&self) -> String {
        format!("https://{HOST_IP}:{}", self.apiserver_port)
    }

    pub fn s3_url(&self) -> String {
        format!("http://{HOST_IP}:{}", self.s3_port)
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }

    pub fn node_dir(&self, node: &Node) -> PathBuf {
        self.dir.join("nodes").join(&node.name)
    }

    pub fn containerd_socket(&self, node: &Node) -> PathBuf {
        self.node_dir(node).join("containerd/containerd.sock")
    }

    pub fn pki(&self) -> PathBuf {
        self.dir.join("pki")
    }

    /// Every node's containerd registry hosts directory (`config_path`): a
    /// `<host[:port]>/hosts.toml` here sets how images of that registry are pulled (the
    /// install test points a registry and a quay.io mirror at its own registry server).
    pub fn registry_hosts(&self) -> PathBuf {
        self.dir.join("registry-hosts")
    }
}
