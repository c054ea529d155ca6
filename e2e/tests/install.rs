//! The README's "Install on your own cluster", step by step, on a cluster whose nodes
//! have never seen etcd-pilot's images: the commands are read from README.md and run as
//! written, with `registry.example.com` replaced by a real registry (Debian's
//! `docker-registry`, plain HTTP on the testbed's host address). The nodes pull the
//! operator image from it, and the members' `quay.io/coreos/etcd` images through it as a
//! quay.io mirror (containerd `hosts.toml`, as an air-gapped cluster has it): the testbed
//! has no route to quay.io, and its nodes carry the testbed's etcd images only under
//! `etcd-pilot.local/etcd`.
//!
//! What differs from a user's shell, and why: `podman build` and `docker load/push` are
//! not run (no container engine here; the Containerfile's bases come from docker.io and
//! gcr.io); skopeo gets `--dest-tls-verify=false` (the README's flag for a registry
//! without TLS);
//! `examples/etcdcluster.yaml` is applied into this test's namespace, not `default`
//! (`make demo` has its own `main` there); `kubectl get etcd -w` is a wait for the
//! cluster's readiness. A release `etcd-pilot` already on the testbed (the demo's, the
//! e2e's) is uninstalled first, so that the README's `helm install` finds a cluster
//! without etcd-pilot, and is put back at the end.
//!
//! `make image` here rewrites `target/image/etcd-pilot.tar` with the README's tag, after
//! `make e2e` has loaded its own build of it into the nodes (the next `make e2e` writes
//! it again before it loads it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use etcd_pilot_e2e::fixtures::*;
use etcd_pilot_e2e::images::ETCD_REPOSITORY;
use etcd_pilot_e2e::kit::{Kit, OPERATOR_NS};
use etcd_pilot_e2e::layout::HOST_IP;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

/// The README's placeholder for the user's registry.
const PLACEHOLDER: &str = "registry.example.com";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").to_path_buf()
}

/// The commands of the README's install section, continuation lines joined, comments and
/// blank lines dropped.
fn readme_install_commands(readme: &str) -> Vec<String> {
    let section = readme.split("\n## Install on your own cluster").nth(1).expect("README: an install section");
    let block = section.split("```sh\n").nth(1).and_then(|b| b.split("```").next()).expect("README: its sh block");
    let mut commands = Vec::new();
    let mut current = String::new();
    for line in block.lines() {
        let line = line.trim();
        if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => current.push_str(head),
            None => {
                current.push_str(line);
                commands.push(std::mem::take(&mut current));
            }
        }
    }
    commands
}

/// What the test does with one README command.
#[derive(Debug, PartialEq)]
enum Step {
    Run,
    /// `skopeo copy`: with the README's flag for a registry without TLS.
    Push,
    /// Not runnable here, with the reason.
    Skip(&'static str),
    /// `kubectl apply -f examples/etcdcluster.yaml`: into the test's namespace.
    ApplyExample,
    /// `kubectl get etcd -w`: a wait for the cluster instead.
    Watch,
}

fn step(command: &str) -> Step {
    if command.starts_with("podman ") || command.starts_with("docker ") {
        Step::Skip("no container engine on this machine")
    } else if command.starts_with("skopeo copy ") {
        Step::Push
    } else if command == "kubectl apply -f examples/etcdcluster.yaml" {
        Step::ApplyExample
    } else if command.starts_with("kubectl get etcd -w") {
        Step::Watch
    } else {
        Step::Run
    }
}

/// The registry server, stopped on drop.
struct Registry {
    child: Child,
    address: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    async fn start() -> Registry {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = etcd_pilot_e2e::procs::free_port(HOST_IP).expect("a free port");
        let address = format!("{HOST_IP}:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}\n",
                dir.path().join("data").display()
            ),
        )
        .expect("registry config");
        let log = dir.path().join("registry.log");
        let out = std::fs::File::create(&log).expect("registry log");
        let err = out.try_clone().expect("registry log");
        let child = Command::new("docker-registry")
            .args(["serve"])
            .arg(&config)
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("start docker-registry (e2e/hack/install.sh installs Debian's docker-registry)");
        let registry = Registry { child, address, log, _dir: dir };
        wait_for("the registry to answer /v2/", Duration::from_secs(30), || async {
            http_get(HOST_IP, port.into(), "/v2/").await.starts_with("HTTP/1.1 200").then_some(())
        })
        .await;
        registry
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A node's containerd resolved a tag of the repository here. It may fetch nothing
    /// more: the nodes already hold the manifests and layers of the same digests (the
    /// testbed's own images are built from the same binary and tarballs).
    fn pulled_by_a_node(&self, repository: &str) -> bool {
        let manifest = format!(" /v2/{repository}/manifests/");
        self.log().lines().any(|l| l.contains(&manifest) && l.contains("containerd"))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs one command the way a user's shell does, with the testbed's tools first on PATH;
/// panics with its output if it fails or takes longer than `within`.
fn sh(kit: &Kit, command: &str, within: Duration) -> String {
    let path = format!("{}:{}", kit.state.tools.display(), std::env::var("PATH").unwrap_or_default());
    println!("install: $ {command}");
    let mut cmd = Command::new("timeout");
    cmd.arg(within.as_secs().to_string()).args(["bash", "-euo", "pipefail", "-c", command]);
    // A user's shell, not this test's: `cargo test` gives the test the variables it sets
    // for the package under test (CARGO_PKG_NAME, CARGO_MANIFEST_DIR, OUT_DIR, ...), and
    // build scripts such as ring's rerun when those change, so the README's
    // `make image` would rebuild the whole release tree (4.5 min) on every run.
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(set_by_cargo_for_the_test) {
            cmd.env_remove(&name);
        }
    }
    let out = cmd
        .current_dir(repo_root())
        .env("PATH", path)
        .env("KUBECONFIG", kit.state.kubeconfig())
        .output()
        .expect("run bash");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "`{command}` failed ({}):\n{text}", out.status);
    text
}

/// What `cargo test` sets for the test binary (and a user's shell lacks); cargo's own
/// settings (CARGO_HOME, CARGO_TARGET_DIR, CARGO_BUILD_*, ...) stay.
fn set_by_cargo_for_the_test(name: &str) -> bool {
    const PREFIXES: &[&str] =
        &["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_CRATE_", "CARGO_BIN_", "CARGO_CFG_", "CARGO_FEATURE_"];
    const NAMES: &[&str] =
        &["CARGO", "CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "CARGO_RUSTC_CURRENT_DIR", "OUT_DIR"];
    NAMES.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The testbed's etcd image tarballs (`etcd-pilot.local/etcd:v<version>`), by tag.
fn testbed_etcd_images(kit: &Kit) -> Vec<(String, PathBuf)> {
    let dir = kit.state.dir.join("images");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("dir entry").path();
        if path.extension().is_none_or(|e| e != "tar") {
            continue;
        }
        let mut archive = tar::Archive::new(std::fs::File::open(&path).expect("image tarball"));
        for file in archive.entries().expect("tar entries") {
            let mut file = file.expect("tar entry");
            if file.path().ok().is_some_and(|p| p == Path::new("manifest.json")) {
                let manifest: serde_json::Value = serde_json::from_reader(&mut file).expect("manifest.json");
                for tag in manifest[0]["RepoTags"].as_array().into_iter().flatten().filter_map(|t| t.as_str()) {
                    if let Some(version) = tag.strip_prefix(&format!("{ETCD_REPOSITORY}:")) {
                        found.push((version.to_string(), path.clone()));
                    }
                }
                break;
            }
        }
    }
    found
}

/// (the image a container asks for, the image it runs by repository digest). Not the
/// status' `image`: the runtime names it by any tag of the same digest, and the testbed's
/// nodes hold the same etcd images under `etcd-pilot.local/etcd`; the imageID says where
/// the node pulled it from.
fn image_ids(pods: &[Pod]) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for pod in pods {
        let specs = pod.spec.as_ref().map(|s| s.containers.clone()).unwrap_or_default();
        let statuses = pod.status.as_ref().and_then(|s| s.container_statuses.clone()).unwrap_or_default();
        for status in statuses {
            let asked = specs.iter().find(|c| c.name == status.name).and_then(|c| c.image.clone()).unwrap_or_default();
            found.push((asked, status.image_id));
        }
    }
    found
}

#[test]
fn the_readme_lists_the_commands_this_test_runs() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let commands = readme_install_commands(&readme);
    let steps: Vec<Step> = commands.iter().map(|c| step(c)).collect();
    assert_eq!(
        steps,
        [
            Step::Run,
            Step::Skip("no container engine on this machine"),
            Step::Push,
            Step::Skip("no container engine on this machine"),
            Step::Run,
            Step::Run,
            Step::ApplyExample,
            Step::Watch
        ],
        "{commands:#?}"
    );
    assert!(commands[0].starts_with("make image IMAGE=registry.example.com/etcd-pilot:0.1.0"), "{commands:#?}");
    assert!(commands[4].starts_with("helm install etcd-pilot charts/etcd-pilot"), "{commands:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_install_section_works_with_images_from_a_registry() {
    let kit = Kit::connect().await;
    let hosts = kit.state.registry_hosts();
    let node_config = kit.state.node_dir(&kit.state.nodes[0]).join("containerd/config.toml");
    assert!(
        std::fs::read_to_string(&node_config).unwrap_or_default().contains("config_path"),
        "this testbed's containerd has no registry hosts directory (it predates this test): make testbed-down"
    );
    let registry = Registry::start().await;
    let reg = registry.address.clone();
    println!("install: registry at {reg}");

    let conf_dir = tempfile::tempdir().expect("temp dir");
    // Every node's containerd: the registry over plain HTTP, and the registry as quay.io's mirror.
    let reg_hosts = hosts.join(&reg);
    let quay_hosts = hosts.join("quay.io");
    for (dir, server) in [(&reg_hosts, format!("http://{reg}")), (&quay_hosts, "https://quay.io".to_string())] {
        std::fs::create_dir_all(dir).expect("hosts dir");
        std::fs::write(
            dir.join("hosts.toml"),
            format!("server = \"{server}\"\n\n[host.\"http://{reg}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"),
        )
        .expect("hosts.toml");
    }
    // The stand-in for quay.io/coreos/etcd: the testbed's etcd images, under the mirror.
    let etcd_images = testbed_etcd_images(&kit);
    assert!(etcd_images.iter().any(|(v, _)| v == "v3.5.30"), "{etcd_images:?}");
    for (version, tarball) in &etcd_images {
        sh(
            &kit,
            &format!(
                "skopeo copy -q --dest-tls-verify=false docker-archive:{} docker://{reg}/coreos/etcd:{version}",
                tarball.display()
            ),
            Duration::from_secs(120),
        );
    }

    // Nodes that have never pulled quay.io/coreos/etcd nor an image of this test's
    // registries (an earlier run on this testbed did; a pod's imageID names any of them).
    for node in &kit.state.nodes {
        let socket = kit.state.containerd_socket(node);
        let ctr = |args: &[&str]| {
            Command::new("ctr").arg("--address").arg(&socket).args(["-n", "k8s.io", "images"]).args(args).output()
        };
        let listed = ctr(&["ls", "-q"]).expect("ctr images ls");
        let refs = String::from_utf8_lossy(&listed.stdout).into_owned();
        let pulled: Vec<&str> = refs
            .lines()
            .filter(|r| r.starts_with("quay.io/coreos/etcd") || r.starts_with(&format!("{HOST_IP}:")))
            .collect();
        if !pulled.is_empty() {
            let mut args = vec!["rm"];
            args.extend(&pulled);
            let out = ctr(&args).expect("ctr images rm");
            assert!(out.status.success(), "{}: {}", node.name, String::from_utf8_lossy(&out.stderr));
        }
    }

    // A cluster without etcd-pilot.
    if kit.helm_ok(&["status", "etcd-pilot", "--namespace", OPERATOR_NS]) {
        println!("install: uninstalling the testbed's release etcd-pilot first");
        kit.helm(&["uninstall", "etcd-pilot", "--namespace", OPERATOR_NS, "--wait"]);
    }
    let ns = kit.namespace("install").await;
    let example = std::fs::read_to_string(repo_root().join("examples/etcdcluster.yaml")).expect("the example");
    assert_eq!(example.matches("namespace: default\n").count(), 1, "{example}");
    let example_here = conf_dir.path().join("etcdcluster.yaml");
    std::fs::write(&example_here, example.replace("namespace: default\n", &format!("namespace: {ns}\n")))
        .expect("the example, in the test's namespace");

    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    for command in readme_install_commands(&readme) {
        let command = command.replace(PLACEHOLDER, &reg);
        match step(&command) {
            Step::Run => {
                let out = sh(&kit, &command, Duration::from_secs(600));
                print!(
                    "{}",
                    out.lines()
                        .rev()
                        .take(3)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .map(|l| format!("  {l}\n"))
                        .collect::<String>()
                );
            }
            Step::Push => {
                let command = command.replacen("skopeo copy ", "skopeo copy --dest-tls-verify=false ", 1);
                sh(&kit, &command, Duration::from_secs(120));
            }
            Step::Skip(why) => println!("install: not run ({why}): {command}"),
            Step::ApplyExample => {
                let command = command.replace("examples/etcdcluster.yaml", &example_here.display().to_string());
                sh(&kit, &command, Duration::from_secs(60));
            }
            Step::Watch => {
                let ec = wait_ready(&kit, &ns, "main", 3).await;
                println!("install: {ns}/main Available with 3 members");
                assert!(ec.status.is_some());
            }
        }
    }

    // What runs came from the registry (not the pods of the release uninstalled above,
    // which may still be terminating).
    let operator_pods: Vec<Pod> = Api::<Pod>::namespaced(kit.client.clone(), OPERATOR_NS)
        .list(&ListParams::default().labels("app.kubernetes.io/instance=etcd-pilot"))
        .await
        .expect("operator pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect();
    let operator = image_ids(&operator_pods);
    assert!(
        !operator.is_empty()
            && operator.iter().all(|(image, id)| image == &format!("{reg}/etcd-pilot:0.1.0")
                && id.starts_with(&format!("{reg}/etcd-pilot@sha256:"))),
        "the operator runs the pushed image: {operator:?}"
    );
    let members = image_ids(&member_pods(&kit, &ns, "main").await);
    assert!(
        members.len() == 3
            && members
                .iter()
                .all(|(image, id)| image == "quay.io/coreos/etcd:v3.5.30"
                    && id.starts_with("quay.io/coreos/etcd@sha256:")),
        "members run the chart's default etcd image: {members:?}"
    );
    assert!(registry.pulled_by_a_node("etcd-pilot"), "a node resolved the operator image here:\n{}", registry.log());
    assert!(registry.pulled_by_a_node("coreos/etcd"), "nodes resolved etcd through the mirror:\n{}", registry.log());
    println!("install: operator {operator:?}; members {members:?}");

    // Back as found: the example cluster gone, the e2e's release with the testbed's
    // images (before the registry stops: clusters of other namespaces may have been
    // rolled onto the mirror's images by the README's release).
    kit.delete_namespace(&ns).await;
    kit.helm_upgrade_operator(&[]);
    for dir in [&reg_hosts, &quay_hosts] {
        let _ = std::fs::remove_dir_all(dir);
    }
    drop(registry);
}
