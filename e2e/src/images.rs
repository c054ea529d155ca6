//! The testbed's images, built with etcd-pilot-image (the builder `make image` uses) and
//! imported into every node's containerd: no registry, no Docker engine.

use std::path::Path;
use std::process::Command;

pub use etcd_pilot_image::Image;

use crate::error::{Result, TestbedError};
use crate::procs;

pub const PAUSE: &str = "registry.k8s.io/pause:3.6";
pub const ETCD_REPOSITORY: &str = "etcd-pilot.local/etcd";
/// The etcd 3.5 images besides 3.4.23: 3.5.1 (old), 3.5.16 and 3.5.30 (current).
pub const ETCD_35_VERSIONS: [&str; 3] = ["3.5.1", "3.5.16", "3.5.30"];
pub const OPERATOR: &str = "etcd-pilot.local/etcd-pilot:dev";
/// The etcdutl the operator image carries to seed restored members (`make image` takes
/// the same one).
pub const ETCDUTL_VERSION: &str = "3.5.30";
pub const TOOLBOX: &str = "etcd-pilot.local/toolbox:v1";
/// The testbed's own kube-apiserver build, for hosted control planes run as pods.
pub const KUBE_APISERVER: &str = "etcd-pilot.local/kube-apiserver:v1.20.2";

/// Imports a tarball into a node's containerd, where the kubelet finds it.
pub fn import(socket: &Path, tarball: &Path) -> Result<()> {
    procs::run(
        Command::new("ctr")
            .arg("--address")
            .arg(socket)
            .args(["-n", "k8s.io", "images", "import", "--snapshotter", crate::nodes::SNAPSHOTTER])
            .arg(tarball),
    )
    .map(|_| ())
    .map_err(|e| TestbedError::Other(format!("importing {} into {}: {e}", tarball.display(), socket.display())))
}
