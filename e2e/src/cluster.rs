//! `up`, `down` and `status`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node as KubeNode, Secret};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::error::{Result, TestbedError, io};
use crate::images;
use crate::layout::*;
use crate::procs::{link_exists, which};
use crate::{certs, nodes, procs, teardown};

/// What `up` builds.
#[derive(Clone, Debug)]
pub struct UpOptions {
    pub dir: PathBuf,
    pub tools: PathBuf,
    pub control_planes: u8,
    pub workers: u8,
    /// The etcd-pilot binary for the operator image (e.g. target/release/etcd-pilot).
    pub operator_binary: Option<PathBuf>,
    /// The probe binary for the toolbox image.
    pub probe_binary: Option<PathBuf>,
}

/// An admin client from a testbed's kubeconfig.
pub async fn client(kubeconfig: &Path) -> Result<Client> {
    etcd_pilot::install_crypto_provider();
    let kc =
        Kubeconfig::read_from(kubeconfig).map_err(|e| TestbedError::Other(format!("{}: {e}", kubeconfig.display())))?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| TestbedError::Other(format!("{}: {e}", kubeconfig.display())))?;
    Ok(Client::try_from(config)?)
}

fn check_prerequisites(tools: &Path) -> Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        return Err(TestbedError::Prereq("root (for network interfaces, mounts and iptables)".into()));
    }
    for b in [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kubelet",
        "kube-proxy",
        "kubectl",
        "pause",
        "helm",
    ] {
        if !tools.join(b).exists() {
            return Err(TestbedError::Prereq(format!("{}", tools.join(b).display())));
        }
    }
    for cmd in ["etcd", "containerd", "runc", "ctr", "ip", "iptables", "dnsmasq", "jq", "busybox", "s3s-fs"] {
        if which(cmd).is_none() {
            return Err(TestbedError::Prereq(format!("`{cmd}` on PATH")));
        }
    }
    for plugin in ["bridge", "host-local", "portmap", "loopback"] {
        if !Path::new("/usr/lib/cni").join(plugin).exists() {
            return Err(TestbedError::Prereq(format!("CNI plugin /usr/lib/cni/{plugin}")));
        }
    }
    Ok(())
}

/// Refuses when something of another testbed (or anything else) is in the way.
fn check_free(opts: &UpOptions) -> Result<()> {
    if opts.dir.exists() {
        return Err(TestbedError::Busy(format!(
            "{} exists: a testbed is up or was not torn down; run `make testbed-down` first",
            opts.dir.display()
        )));
    }
    if link_exists(BRIDGE) {
        return Err(TestbedError::Busy(format!("network interface {BRIDGE} exists: run `make testbed-down` first")));
    }
    for i in 0..(opts.control_planes + opts.workers) {
        let b = format!("{POD_BRIDGE_PREFIX}{i}");
        if link_exists(&b) {
            return Err(TestbedError::Busy(format!("network interface {b} exists: run `make testbed-down` first")));
        }
    }
    Ok(())
}

/// Brings a testbed up; on any failure, tears down what it started.
pub async fn up(opts: UpOptions) -> Result<State> {
    check_prerequisites(&opts.tools)?;
    check_free(&opts)?;
    if opts.control_planes + opts.workers == 0 || opts.control_planes + opts.workers > 32 {
        return Err(TestbedError::Other("between 1 and 32 nodes".into()));
    }
    let started = Instant::now();
    let mut state = State { dir: opts.dir.clone(), tools: opts.tools.clone(), ..State::default() };
    std::fs::create_dir_all(state.logs()).map_err(io(state.logs()))?;
    match bring_up(&opts, &mut state).await {
        Ok(()) => {
            println!("testbed: every node Ready {:.1}s after start", started.elapsed().as_secs_f64());
            Ok(state)
        }
        Err(e) => {
            eprintln!("testbed: up failed, tearing down what started: {e}");
            let _ = state.save();
            teardown::down(&opts.dir);
            Err(e)
        }
    }
}

async fn bring_up(opts: &UpOptions, state: &mut State) -> Result<()> {
    // Ports first: everything else refers to them.
    state.etcd_client_port = procs::free_port("127.0.0.1")?;
    state.etcd_peer_port = procs::free_port("127.0.0.1")?;
    state.controller_manager_port = procs::free_port("127.0.0.1")?;
    state.scheduler_port = procs::free_port("127.0.0.1")?;
    state.proxy_healthz_port = procs::free_port("127.0.0.1")?;
    state.proxy_metrics_port = procs::free_port("127.0.0.1")?;
    let mut index = 0u8;
    for (count, cp) in [(opts.control_planes, true), (opts.workers, false)] {
        for ordinal in 0..count {
            let (p, h) = (procs::free_port("0.0.0.0")?, procs::free_port("127.0.0.1")?);
            state.nodes.push(Node::new(index, cp, ordinal, p, h));
            index += 1;
        }
    }
    state.save()?;

    network_up(state)?;
    // The host IP exists now: ports on it can be picked.
    state.apiserver_port = procs::free_port(HOST_IP)?;
    state.s3_port = procs::free_port(HOST_IP)?;
    state.save()?;
    certs::generate(state)?;

    let logs = state.logs();
    let spawn = |state: &mut State, name: &str, cmd: &mut Command| -> Result<()> {
        let pid = procs::spawn(cmd, &logs.join(format!("{name}.log")))?;
        state.processes.push(Proc { name: name.to_string(), pid });
        state.save()
    };

    // Control plane: etcd, apiserver, controller-manager, scheduler.
    let etcd_url = format!("http://127.0.0.1:{}", state.etcd_client_port);
    let peer_url = format!("http://127.0.0.1:{}", state.etcd_peer_port);
    spawn(
        state,
        "etcd",
        Command::new("etcd")
            .args(["--name", "testbed", "--data-dir"])
            .arg(state.dir.join("etcd"))
            .args(["--listen-client-urls", &etcd_url, "--advertise-client-urls", &etcd_url])
            .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("testbed={peer_url}")])
            .args(["--initial-cluster-token", &format!("testbed-{}", std::process::id())]),
    )?;
    // Generous: right after a large build the machine writes back gigabytes of dirty
    // pages, and etcd's first fsync waits behind them (seen: more than 20 s in CI).
    procs::wait_tcp(&format!("127.0.0.1:{}", state.etcd_client_port), Duration::from_secs(120), "etcd", &logs).await?;

    let pki_dir = state.pki();
    let pki = |n: &str| pki_dir.join(n).display().to_string();
    let mut apiserver = apiserver_command(state, &[]);
    spawn(state, "kube-apiserver", &mut apiserver)?;
    let admin = certs::kubeconfig_path(state, "admin");
    let client = wait_for_apiserver(&admin, &logs).await?;

    spawn(
        state,
        "kube-controller-manager",
        Command::new(state.tools.join("kube-controller-manager"))
            .arg(format!("--kubeconfig={}", certs::kubeconfig_path(state, "controller-manager").display()))
            .arg(format!(
                "--authentication-kubeconfig={}",
                certs::kubeconfig_path(state, "controller-manager").display()
            ))
            .arg(format!(
                "--authorization-kubeconfig={}",
                certs::kubeconfig_path(state, "controller-manager").display()
            ))
            .arg(format!("--service-account-private-key-file={}", pki("sa.key")))
            .arg(format!("--root-ca-file={}", pki("ca.crt")))
            .arg(format!("--cluster-signing-cert-file={}", pki("ca.crt")))
            .arg(format!("--cluster-signing-key-file={}", pki("ca.key")))
            .arg("--use-service-account-credentials=true")
            .arg("--leader-elect=false")
            .arg("--port=0")
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={}", state.controller_manager_port))
            .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
            .arg("--v=1"),
    )?;
    spawn(
        state,
        "kube-scheduler",
        Command::new(state.tools.join("kube-scheduler"))
            .arg(format!("--kubeconfig={}", certs::kubeconfig_path(state, "scheduler").display()))
            .arg(format!("--authentication-kubeconfig={}", certs::kubeconfig_path(state, "scheduler").display()))
            .arg(format!("--authorization-kubeconfig={}", certs::kubeconfig_path(state, "scheduler").display()))
            .arg("--leader-elect=false")
            .arg("--port=0")
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--secure-port={}", state.scheduler_port))
            .arg("--v=1"),
    )?;

    // Cluster DNS and S3 on the host side of the testbed network.
    let dns_dir = state.dir.join("dns");
    std::fs::create_dir_all(&dns_dir).map_err(io(&dns_dir))?;
    std::fs::write(dns_dir.join("hosts"), "").map_err(io(dns_dir.join("hosts")))?;
    spawn(
        state,
        "dnsmasq",
        Command::new("dnsmasq")
            .args(["--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-poll", "--bind-interfaces"])
            .arg(format!("--listen-address={HOST_IP}"))
            .arg("--except-interface=lo")
            .arg(format!("--addn-hosts={}", dns_dir.join("hosts").display()))
            .arg(format!("--local=/{CLUSTER_DOMAIN}/"))
            .arg("--local-ttl=1")
            .arg("--pid-file=")
            .arg("--user=root"),
    )?;
    // dnsmasq answers on TCP too: its port open means it bound port 53.
    procs::wait_tcp(&format!("{HOST_IP}:53"), Duration::from_secs(30), "dnsmasq on port 53", &logs).await?;
    let s3_root = state.dir.join("s3");
    std::fs::create_dir_all(s3_root.join(S3_BUCKET)).map_err(io(&s3_root))?;
    spawn(
        state,
        "s3s-fs",
        Command::new("s3s-fs")
            .args(["--host", HOST_IP, "--port", &state.s3_port.to_string()])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(&s3_root),
    )?;

    procs::wait_tcp(&format!("{HOST_IP}:{}", state.s3_port), Duration::from_secs(30), "s3s-fs", &logs).await?;

    // Images, built once per up, imported into every node.
    let images_dir = state.dir.join("images");
    let tarballs =
        images::build_all(&opts.tools, opts.probe_binary.as_deref(), opts.operator_binary.as_deref(), &images_dir)?;

    // Nodes: containerd, then images, then the kubelet.
    let runc = nodes::write_runc_wrapper(state)?;
    let node_list = state.nodes.clone();
    for n in &node_list {
        let pid = nodes::start_containerd(state, n, &runc)?;
        state.processes.push(Proc { name: format!("containerd-{}", n.name), pid });
    }
    state.save()?;
    for n in &node_list {
        wait_socket(&state.containerd_socket(n), Duration::from_secs(60), &logs).await?;
    }
    images::import_everywhere(state, &tarballs)?;
    for n in &node_list {
        let pid = nodes::start_kubelet(state, n)?;
        state.processes.push(Proc { name: format!("kubelet-{}", n.name), pid });
    }
    state.save()?;

    let first = node_list.first().map(|n| n.name.clone()).unwrap_or_default();
    spawn(
        state,
        "kube-proxy",
        Command::new(state.tools.join("kube-proxy"))
            .arg(format!("--kubeconfig={}", certs::kubeconfig_path(state, "kube-proxy").display()))
            .arg(format!("--hostname-override={first}"))
            .arg(format!("--cluster-cidr={POD_CIDR}"))
            .arg("--proxy-mode=iptables")
            .arg("--masquerade-all=true")
            .arg("--conntrack-max-per-core=0")
            .arg(format!("--healthz-bind-address=127.0.0.1:{}", state.proxy_healthz_port))
            .arg(format!("--metrics-bind-address=127.0.0.1:{}", state.proxy_metrics_port))
            .arg("--v=1"),
    )?;
    let exe = std::env::current_exe().map_err(io("current_exe"))?;
    spawn(state, "agent", Command::new(exe).arg("agent").arg("--dir").arg(&state.dir))?;

    wait_nodes_ready(&client, node_list.len(), &logs).await?;
    configure_cluster(&client, state).await?;
    Ok(())
}

/// The testbed's kube-apiserver command line, with `extra` flags after `up`'s own.
fn apiserver_command(state: &State, extra: &[String]) -> Command {
    let pki_dir = state.pki();
    let pki = |n: &str| pki_dir.join(n).display().to_string();
    let etcd_url = format!("http://127.0.0.1:{}", state.etcd_client_port);
    let mut apiserver = Command::new(state.tools.join("kube-apiserver"));
    apiserver
        .arg(format!("--etcd-servers={etcd_url}"))
        .arg(format!("--bind-address={HOST_IP}"))
        .arg(format!("--advertise-address={HOST_IP}"))
        .arg(format!("--secure-port={}", state.apiserver_port))
        .arg("--insecure-port=0")
        .arg(format!("--tls-cert-file={}", pki("apiserver.crt")))
        .arg(format!("--tls-private-key-file={}", pki("apiserver.key")))
        .arg(format!("--client-ca-file={}", pki("ca.crt")))
        .arg(format!("--kubelet-client-certificate={}", pki("apiserver-kubelet-client.crt")))
        .arg(format!("--kubelet-client-key={}", pki("apiserver-kubelet-client.key")))
        .arg("--kubelet-preferred-address-types=InternalIP")
        .arg(format!("--service-account-key-file={}", pki("sa.pub")))
        .arg(format!("--service-account-signing-key-file={}", pki("sa.key")))
        .arg(format!("--service-account-issuer=https://kubernetes.default.svc.{CLUSTER_DOMAIN}"))
        .arg("--authorization-mode=Node,RBAC")
        .arg("--enable-admission-plugins=NodeRestriction")
        .arg("--allow-privileged=true")
        .arg(format!("--service-cluster-ip-range={SERVICE_CIDR}"))
        .arg("--endpoint-reconciler-type=lease")
        .arg("--v=1");
    apiserver.args(extra);
    apiserver
}

/// Restarts the testbed's kube-apiserver with `up`'s flags and `extra` ones (a later
/// flag wins), as a control plane is rolled onto new etcd flags; waits until it serves.
/// The new process is recorded so that `down` stops it.
pub async fn restart_apiserver(dir: &Path, extra: &[String]) -> Result<()> {
    let mut state = State::load(dir)?;
    let logs = state.logs();
    let old: Vec<u32> = state.processes.iter().filter(|p| p.name == "kube-apiserver").map(|p| p.pid).collect();
    procs::stop_all(&old, Duration::from_secs(60));
    state.processes.retain(|p| p.name != "kube-apiserver");
    let pid = procs::spawn(&mut apiserver_command(&state, extra), &logs.join("kube-apiserver.log"))?;
    state.processes.push(Proc { name: "kube-apiserver".into(), pid });
    state.save()?;
    wait_for_apiserver(&certs::kubeconfig_path(&state, "admin"), &logs).await?;
    Ok(())
}

fn network_up(state: &State) -> Result<()> {
    // Best effort: both are needed for Services to work between pods; some sandboxes
    // set them already and do not let us.
    let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", "1");
    let _ = std::fs::write("/proc/sys/net/bridge/bridge-nf-call-iptables", "1");
    procs::run(Command::new("ip").args(["link", "add", BRIDGE, "type", "bridge"]))?;
    procs::run(Command::new("ip").args(["addr", "add", HOST_CIDR, "dev", BRIDGE]))?;
    for n in &state.nodes {
        procs::run(Command::new("ip").args(["addr", "add", &format!("{}/32", n.ip), "dev", BRIDGE]))?;
    }
    procs::run(Command::new("ip").args(["link", "set", BRIDGE, "up"]))?;
    Ok(())
}

async fn wait_for_apiserver(kubeconfig: &Path, logs: &Path) -> Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(c) = client(kubeconfig).await
            && c.apiserver_version().await.is_ok()
        {
            // Ready also means RBAC's bootstrap roles exist.
            let roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(c.clone());
            if roles.get_opt("system:node-proxier").await.ok().flatten().is_some() {
                return Ok(c);
            }
        }
        if Instant::now() > deadline {
            return Err(procs::timeout("kube-apiserver", Duration::from_secs(60), logs));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn wait_socket(sock: &Path, within: Duration, logs: &Path) -> Result<()> {
    let deadline = Instant::now() + within;
    while tokio::net::UnixStream::connect(sock).await.is_err() {
        if Instant::now() > deadline {
            return Err(procs::timeout(&format!("containerd at {}", sock.display()), within, logs));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

async fn wait_nodes_ready(client: &Client, want: usize, logs: &Path) -> Result<()> {
    let nodes: Api<KubeNode> = Api::all(client.clone());
    // Usually 20-40 s; a machine busy compiling has needed more than 120 s.
    let within = Duration::from_secs(300);
    let deadline = Instant::now() + within;
    let is_ready = |n: &KubeNode| {
        n.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    loop {
        let listed = nodes.list(&ListParams::default()).await.map(|l| l.items).unwrap_or_default();
        let ready = listed.iter().filter(|n| is_ready(n)).count();
        if ready == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            // Say which node and why, and the end of its kubelet's log: `up` tears the
            // testbed (and its log directory) down after this.
            for n in listed.iter().filter(|n| !is_ready(n)) {
                let name = n.metadata.name.clone().unwrap_or_default();
                let cond = n
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
                    .map(|c| {
                        format!(
                            "{} {}: {}",
                            c.status,
                            c.reason.clone().unwrap_or_default(),
                            c.message.clone().unwrap_or_default()
                        )
                    })
                    .unwrap_or_else(|| "no Ready condition".into());
                eprintln!("testbed: node {name} not Ready: {cond}");
            }
            let registered: Vec<String> = listed.iter().filter_map(|n| n.metadata.name.clone()).collect();
            eprintln!("testbed: registered nodes: {registered:?}");
            for entry in std::fs::read_dir(logs).into_iter().flatten().flatten() {
                let path = entry.path();
                let file = path.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default();
                let node = file.trim_start_matches("kubelet-").trim_end_matches(".log");
                let not_ready = listed.iter().any(|n| n.metadata.name.as_deref() == Some(node) && !is_ready(n));
                let missing = !registered.iter().any(|r| r == node);
                if file.starts_with("kubelet-") && (not_ready || missing) {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    let tail: Vec<&str> = text.lines().rev().take(30).collect();
                    eprintln!("testbed: last lines of {file}:");
                    for l in tail.into_iter().rev() {
                        eprintln!("  {l}");
                    }
                }
            }
            return Err(procs::timeout(&format!("{want} nodes Ready ({ready} are)"), within, logs));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn configure_cluster(client: &Client, state: &State) -> Result<()> {
    let pp = PatchParams::apply("etcd-pilot-testbed").force();
    let nodes: Api<KubeNode> = Api::all(client.clone());
    for n in state.nodes.iter().filter(|n| n.control_plane) {
        let patch = serde_json::json!({"metadata": {"labels": {"node-role.kubernetes.io/control-plane": ""}}});
        nodes.patch(&n.name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    let objects = serde_json::json!([
        {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
         "metadata": {"name": STORAGE_CLASS, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
         "provisioner": PROVISIONER, "volumeBindingMode": "WaitForFirstConsumer", "reclaimPolicy": "Delete"},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": TESTBED_NAMESPACE}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s3", "namespace": TESTBED_NAMESPACE},
         "spec": {"ports": [{"name": "http", "protocol": "TCP", "port": S3_SERVICE_PORT, "targetPort": state.s3_port}]}},
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "s3", "namespace": TESTBED_NAMESPACE},
         "subsets": [{"addresses": [{"ip": HOST_IP}], "ports": [{"name": "http", "protocol": "TCP", "port": state.s3_port}]}]},
    ]);
    for obj in objects.as_array().into_iter().flatten() {
        apply(client, obj, &pp).await?;
    }
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("s3-credentials".into()),
            namespace: Some(TESTBED_NAMESPACE.into()),
            ..Default::default()
        },
        string_data: Some(
            [("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY), ("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), TESTBED_NAMESPACE).create(&PostParams::default(), &secret).await?;
    Ok(())
}

/// Server-side apply of one object given as JSON.
pub async fn apply(client: &Client, obj: &serde_json::Value, pp: &PatchParams) -> Result<()> {
    let gvk = kube::api::GroupVersionKind::try_from(
        &serde_json::from_value::<kube::api::TypeMeta>(obj.clone()).map_err(|e| TestbedError::Other(e.to_string()))?,
    )
    .map_err(|e| TestbedError::Other(e.to_string()))?;
    let (ar, caps) = kube::discovery::pinned_kind(client, &gvk).await?;
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    let api: Api<kube::api::DynamicObject> = match (caps.scope, obj["metadata"]["namespace"].as_str()) {
        (kube::discovery::Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    };
    api.patch(name, pp, &Patch::Apply(obj)).await?;
    Ok(())
}

/// What runs, for `status`; with `check`, an error unless all is well.
pub async fn status(dir: &Path, check: bool) -> Result<String> {
    let state = State::load(dir).map_err(|_| TestbedError::Other(format!("no testbed at {}", dir.display())))?;
    let mut out = format!("testbed at {}\n", dir.display());
    let mut healthy = true;
    for p in &state.processes {
        let alive = procs::alive(p.pid);
        healthy &= alive;
        out.push_str(&format!("  {:<28} pid {:<8} {}\n", p.name, p.pid, if alive { "running" } else { "DEAD" }));
    }
    let listed = match client(&state.kubeconfig()).await {
        Ok(c) => Api::<KubeNode>::all(c).list(&ListParams::default()).await.map_err(TestbedError::from),
        Err(e) => Err(e),
    };
    match listed {
        Ok(list) => {
            healthy &= list.items.len() == state.nodes.len();
            for n in list.items {
                let ready = n
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
                    .map(|c| c.status.clone())
                    .unwrap_or_default();
                healthy &= ready == "True";
                out.push_str(&format!("  node {:<12} Ready={ready}\n", n.metadata.name.unwrap_or_default()));
            }
        }
        Err(e) => {
            healthy = false;
            out.push_str(&format!("  API unreachable: {e}\n"));
        }
    }
    // Everything of the testbed: its processes, and the shims and containers of its nodes.
    let mut pids: Vec<u32> = state.processes.iter().map(|p| p.pid).collect();
    pids.extend(procs::trees_mentioning(&dir.display().to_string()));
    pids.sort_unstable();
    pids.dedup();
    let rss: u64 = pids.iter().map(|&p| procs::rss_kib(p)).sum();
    out.push_str(&format!("  memory: {} MiB resident in {} processes\n", rss / 1024, pids.len()));
    out.push_str(&usage(&state));
    if check && !healthy {
        return Err(TestbedError::Other(format!("{out}\nthe testbed is not healthy")));
    }
    Ok(out)
}

/// How to use a running testbed.
pub fn usage(state: &State) -> String {
    format!(
        "\nexport KUBECONFIG={kc}\n\
         export PATH={tools}:$PATH   # kubectl and helm\n\
         kubectl get nodes\n\
         S3: {s3} from the host, http://s3.{ns}.svc.{domain}:{port} from pods; \
         bucket {bucket}, key {ak}, secret {sk} (Secret {ns}/s3-credentials)\n\
         logs: {logs}\n",
        kc = state.kubeconfig().display(),
        tools = state.tools.display(),
        s3 = state.s3_url(),
        ns = TESTBED_NAMESPACE,
        domain = CLUSTER_DOMAIN,
        port = S3_SERVICE_PORT,
        bucket = S3_BUCKET,
        ak = S3_ACCESS_KEY,
        sk = S3_SECRET_KEY,
        logs = state.logs().display(),
    )
}

/// Stops a node for good, as a lost machine would: its kubelet, every container on it and
/// its container runtime are killed at once (no graceful pod shutdown). Its state stays on
/// disk for `start_node`.
pub fn stop_node(dir: &Path, name: &str) -> Result<()> {
    let state = State::load(dir)?;
    let node = state
        .nodes
        .iter()
        .find(|n| n.name == name)
        .ok_or_else(|| TestbedError::Other(format!("no node {name} on the testbed")))?;
    let named = |what: &str| -> Vec<u32> {
        state.processes.iter().filter(|p| p.name == format!("{what}-{name}")).map(|p| p.pid).collect()
    };
    let kill = Duration::ZERO;
    procs::stop_all(&named("kubelet"), kill);
    let containerd = named("containerd");
    let node_dir = state.node_dir(node).display().to_string();
    let shims: Vec<u32> = procs::trees_mentioning(&node_dir).into_iter().filter(|p| !containerd.contains(p)).collect();
    procs::stop_all(&shims, kill);
    procs::stop_all(&containerd, kill);
    Ok(())
}

/// Starts a node stopped by `stop_node` again: its container runtime, then its kubelet.
pub async fn start_node(dir: &Path, name: &str) -> Result<()> {
    let mut state = State::load(dir)?;
    let node = state
        .nodes
        .iter()
        .find(|n| n.name == name)
        .cloned()
        .ok_or_else(|| TestbedError::Other(format!("no node {name} on the testbed")))?;
    let runc = nodes::write_runc_wrapper(&state)?;
    let containerd = nodes::start_containerd(&state, &node, &runc)?;
    wait_socket(&state.containerd_socket(&node), Duration::from_secs(60), &state.logs()).await?;
    let kubelet = nodes::start_kubelet(&state, &node)?;
    for p in state.processes.iter_mut() {
        if p.name == format!("containerd-{name}") {
            p.pid = containerd;
        } else if p.name == format!("kubelet-{name}") {
            p.pid = kubelet;
        }
    }
    state.save()
}
