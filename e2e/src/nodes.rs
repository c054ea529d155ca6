//! A node: its containerd (own root, state, socket and CNI config), its CNI bridge and
//! pod subnet, and its kubelet.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::certs;
use crate::error::{Result, io};
use crate::layout::{CLUSTER_DOMAIN, HOST_IP, Node, SNAPSHOTTER, State};
use crate::procs;

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(io(d))?;
    }
    std::fs::write(path, text).map_err(io(path))
}

/// The runc wrapper: this sandbox lacks CAP_SYS_RESOURCE, and the kubelet asks for a
/// negative oomScoreAdj, which makes runc fail every container. It resets a negative
/// value to 0 in the bundle's config.json, then runs the real runc.
pub fn write_runc_wrapper(state: &State) -> Result<PathBuf> {
    let path = state.dir.join("bin/runc-wrapper");
    write(
        &path,
        r#"#!/bin/sh
bundle=""
prev=""
for a in "$@"; do
  case "$prev" in --bundle|-b) bundle="$a" ;; esac
  prev="$a"
done
if [ -n "$bundle" ] && [ -f "$bundle/config.json" ]; then
  tmp="$bundle/config.json.oom"
  jq 'if (.process.oomScoreAdj // 0) < 0 then .process.oomScoreAdj = 0 else . end' "$bundle/config.json" > "$tmp" \
    && mv "$tmp" "$bundle/config.json"
fi
exec runc "$@"
"#,
    )?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).map_err(io(&path))?;
    Ok(path)
}

/// Writes the node's containerd config and CNI config; starts containerd.
pub fn start_containerd(state: &State, node: &Node, runc: &Path) -> Result<u32> {
    let d = state.node_dir(node);
    let c = d.join("containerd");
    let cni_conf = d.join("cni/net.d");
    std::fs::create_dir_all(&cni_conf).map_err(io(&cni_conf))?;
    std::fs::create_dir_all(state.registry_hosts()).map_err(io(&state.registry_hosts()))?;
    let config = format!(
        r#"version = 2
root = "{root}"
state = "{st}"
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[debug]
  level = "warn"
[plugins."io.containerd.internal.v1.opt"]
  path = "{c}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "{snap}"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{hosts}"
"#,
        root = c.join("root").display(),
        st = c.join("state").display(),
        sock = state.containerd_socket(node).display(),
        c = c.display(),
        pause = crate::images::PAUSE,
        snap = SNAPSHOTTER,
        runc = runc.display(),
        cni = cni_conf.display(),
        hosts = state.registry_hosts().display(),
    );
    write(&c.join("config.toml"), &config)?;
    let cni = serde_json::json!({
        "cniVersion": "0.4.0",
        "name": format!("testbed-{}", node.name),
        "plugins": [
            {
                "type": "bridge",
                "bridge": node.bridge,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "dataDir": d.join("cni/ipam").display().to_string(),
                    "ranges": [[{"subnet": node.pod_subnet, "gateway": node.pod_gateway}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "loopback"},
        ],
    });
    write(&cni_conf.join("10-testbed.conflist"), &serde_json::to_string_pretty(&cni).unwrap_or_default())?;
    procs::spawn(
        Command::new("containerd").arg("--config").arg(c.join("config.toml")),
        &state.logs().join(format!("containerd-{}.log", node.name)),
    )
}

/// Writes the kubelet's configuration and starts it.
pub fn start_kubelet(state: &State, node: &Node) -> Result<u32> {
    let d = state.node_dir(node);
    let ca = certs::pki_path(state, "ca.crt");
    let config = format!(
        r#"apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 0.0.0.0
port: {port}
healthzBindAddress: 127.0.0.1
healthzPort: {healthz}
readOnlyPort: 0
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%"
  nodefs.inodesFree: "1%"
  imagefs.available: "1%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
staticPodPath: {manifests}
clusterDomain: {domain}
clusterDNS: ["{dns}"]
resolvConf: ""
serializeImagePulls: false
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: {ca}
authorization:
  mode: Webhook
maxPods: 110
nodeStatusUpdateFrequency: 4s
"#,
        port = node.kubelet_port,
        healthz = node.kubelet_healthz_port,
        manifests = d.join("manifests").display(),
        domain = CLUSTER_DOMAIN,
        dns = HOST_IP,
        ca = ca.display(),
    );
    let cfg = d.join("kubelet/config.yaml");
    write(&cfg, &config)?;
    std::fs::create_dir_all(d.join("manifests")).map_err(io(d.join("manifests")))?;
    let mut cmd = Command::new(state.tools.join("kubelet"));
    // Our kubelet build reads these (e2e/hack/patch-kubelet-logs.py): a kubelet deletes
    // the log directories of pods it does not know, so nodes must not share them.
    cmd.env("KUBELET_POD_LOGS_DIR", d.join("logs/pods")).env("KUBELET_CONTAINER_LOGS_DIR", d.join("logs/containers"));
    cmd.arg("--config")
        .arg(&cfg)
        .arg("--kubeconfig")
        .arg(certs::kubeconfig_path(state, &format!("node-{}", node.name)))
        .arg("--root-dir")
        .arg(d.join("kubelet/root"))
        .arg("--cert-dir")
        .arg(d.join("kubelet/pki"))
        .arg("--container-runtime=remote")
        .arg(format!("--container-runtime-endpoint=unix://{}", state.containerd_socket(node).display()))
        .arg(format!("--hostname-override={}", node.name))
        .arg(format!("--node-ip={}", node.ip))
        .arg(format!("--node-labels=etcdpilot.io/testbed-node={}", node.name))
        .arg("--v=1");
    if node.control_plane {
        cmd.arg("--register-with-taints=node-role.kubernetes.io/control-plane=:NoSchedule");
    }
    procs::spawn(&mut cmd, &state.logs().join(format!("kubelet-{}.log", node.name)))
}
