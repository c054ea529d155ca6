//! Helpers for end-to-end tests on a running testbed.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use k8s_openapi::api::core::v1::{Event, Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::images::ETCD_REPOSITORY;
use crate::layout::State;

/// Namespace the e2e tests and benchmarks install etcd-pilot into: the same release
/// (`etcd-pilot`) and namespace as `make demo`, so the demo and the tests share one
/// operator on one testbed, in either order.
pub const OPERATOR_NS: &str = "etcd-pilot";

/// A connection to the running testbed.
pub struct Kit {
    pub state: State,
    pub client: Client,
}

impl Kit {
    /// Connects to the testbed at `ETCD_PILOT_TESTBED_DIR` (or the default directory).
    pub async fn connect() -> Kit {
        let dir = crate::default_dir();
        let state = State::load(&dir)
            .unwrap_or_else(|e| panic!("no testbed at {} ({e}): run `make testbed-up` or `make e2e`", dir.display()));
        let client = crate::cluster::client(&state.kubeconfig()).await.expect("testbed kubeconfig");
        Kit { state, client }
    }

    /// A fresh namespace for one test.
    pub async fn namespace(&self, prefix: &str) -> String {
        let ns: Namespace =
            serde_json::from_value(json!({"metadata": {"generateName": format!("{prefix}-")}})).unwrap();
        let created =
            Api::<Namespace>::all(self.client.clone()).create(&PostParams::default(), &ns).await.expect("namespace");
        created.name_any()
    }

    pub async fn delete_namespace(&self, ns: &str) {
        match Api::<Namespace>::all(self.client.clone()).delete(ns, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => panic!("delete namespace {ns}: {e}"),
        }
    }

    /// Deletes `ns` and waits until it is gone, with every pod and volume in it: a
    /// benchmark's timed step then does not share the machine with the teardown of the
    /// one before it.
    pub async fn delete_namespace_and_wait(&self, ns: &str) {
        self.delete_namespace(ns).await;
        let api = Api::<Namespace>::all(self.client.clone());
        let deadline = Instant::now() + Duration::from_secs(300);
        while api.get_opt(ns).await.ok().flatten().is_some() {
            assert!(Instant::now() < deadline, "namespace {ns} still there 300 s after its deletion");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    pub async fn create<K>(&self, ns: &str, obj: Value) -> K
    where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + serde::Serialize,
        K::DynamicType: Default,
    {
        let obj: K = serde_json::from_value(obj).expect("object");
        let api = Api::<K>::namespaced(self.client.clone(), ns);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match api.create(&PostParams::default(), &obj).await {
                Ok(created) => return created,
                // Kubernetes 1.20 asks to retry a pod whose ServiceAccount token Secret it has
                // not seen yet ("No API token found ..., retry after ...").
                Err(kube::Error::Api(s))
                    if s.code == 500 && s.message.contains("retry") && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(250)).await
                }
                Err(e) => panic!("create in {ns}: {e}"),
            }
        }
    }

    /// Waits until the pod reaches one of `phases` (e.g. Running, Succeeded), failing fast
    /// on the others.
    pub async fn wait_pod(&self, ns: &str, name: &str, phases: &[&str], within: Duration) -> Pod {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let deadline = Instant::now() + within;
        loop {
            let pod = pods.get(name).await.expect("get pod");
            let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
            if phases.contains(&phase.as_str()) {
                return pod;
            }
            if phase == "Failed" || phase == "Succeeded" || Instant::now() > deadline {
                let logs = self.logs(ns, name).await;
                let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
                let events: Vec<String> = Api::<Event>::namespaced(self.client.clone(), ns)
                    .list(&lp)
                    .await
                    .map(|l| l.items)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|e| {
                        format!(
                            "{} {}: {}",
                            e.type_.unwrap_or_default(),
                            e.reason.unwrap_or_default(),
                            e.message.unwrap_or_default()
                        )
                    })
                    .collect();
                panic!(
                    "pod {ns}/{name} is {phase}, wanted {phases:?}\nevents:\n{}\nstatus: {:?}\nlogs:\n{logs}",
                    events.join("\n"),
                    pod.status
                );
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Runs a pod to completion and returns its output; panics with the output if it fails.
    pub async fn run_to_completion(&self, ns: &str, pod: Value) -> String {
        let name = pod["metadata"]["name"].as_str().expect("pod name").to_string();
        let _: Pod = self.create(ns, pod).await;
        self.wait_pod(ns, &name, &["Succeeded"], Duration::from_secs(90)).await;
        self.logs(ns, &name).await
    }

    pub async fn logs(&self, ns: &str, name: &str) -> String {
        Api::<Pod>::namespaced(self.client.clone(), ns).logs(name, &LogParams::default()).await.unwrap_or_default()
    }
}

impl Kit {
    /// Runs helm against the testbed; panics with its output when it fails.
    pub fn helm(&self, args: &[&str]) -> String {
        self.tool("helm", args, &self.helm_envs())
    }

    /// Runs helm against the testbed: whether it succeeded.
    pub fn helm_ok(&self, args: &[&str]) -> bool {
        self.tool_output("helm", args, &self.helm_envs()).is_ok_and(|o| o.status.success())
    }

    fn helm_envs(&self) -> Vec<(&'static str, std::path::PathBuf)> {
        [("HELM_CACHE_HOME", "helm/cache"), ("HELM_CONFIG_HOME", "helm/config"), ("HELM_DATA_HOME", "helm/data")]
            .iter()
            .map(|(k, d)| (*k, self.state.dir.join(d)))
            .collect()
    }

    /// Runs kubectl against the testbed; panics with its output when it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.tool("kubectl", args, &[])
    }

    /// Runs kubectl against the testbed: its output, or None when it fails.
    pub fn kubectl_ok(&self, args: &[&str]) -> Option<String> {
        let out = self.tool_output("kubectl", args, &[]).ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn tool(&self, tool: &str, args: &[&str], envs: &[(&str, std::path::PathBuf)]) -> String {
        let out = self.tool_output(tool, args, envs).unwrap_or_else(|e| panic!("run {tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn tool_output(
        &self,
        tool: &str,
        args: &[&str],
        envs: &[(&str, std::path::PathBuf)],
    ) -> std::io::Result<std::process::Output> {
        std::process::Command::new(self.state.tools.join(tool))
            .args(args)
            .env("KUBECONFIG", self.state.kubeconfig())
            .envs(envs.iter().map(|(k, v)| (*k, v.as_os_str())))
            .output()
    }

    /// Installs etcd-pilot from the chart of this tree, once per process, the way users
    /// do (`helm upgrade --install`), with the testbed's images.
    pub fn install_operator(&self) {
        static DONE: OnceLock<()> = OnceLock::new();
        // helm installs CRDs only on first install; on a testbed kept between runs the
        // operator brings them to this tree's at start (the chart's crds.apply).
        DONE.get_or_init(|| self.helm_upgrade_operator(&[]));
    }

    /// `helm upgrade --install` of the e2e's operator release from this tree's chart with
    /// the testbed's images, plus `extra` arguments; waits for the rollout.
    pub fn helm_upgrade_operator(&self, extra: &[&str]) {
        let chart = Kit::chart();
        // The operator image is rebuilt from this tree with the same tag: an
        // annotation with the binary's hash rolls the Deployment when it changed.
        let binary = chart.join("../../target/release/etcd-pilot");
        let build = std::fs::read(&binary).map(|b| hex::encode(&Sha256::digest(&b)[..8])).unwrap_or_default();
        let annotation = format!("podAnnotations.etcdpilot\\.io/build=x{build}");
        let repository = format!("etcdImageRepository={ETCD_REPOSITORY}");
        let mut args = vec![
            "upgrade",
            "--install",
            "etcd-pilot",
            chart.to_str().expect("chart path"),
            "--namespace",
            OPERATOR_NS,
            "--create-namespace",
            "--set",
            "image.tag=dev",
            "--set",
            &repository,
            "--set",
            &annotation,
            // A standby replica: leader failover is part of what the tests see.
            "--set",
            "replicaCount=2",
            "--wait",
            "--timeout",
            "120s",
        ];
        args.extend_from_slice(extra);
        // Test binaries that run side by side (faults and placement) each install the
        // release once: helm refuses an upgrade while another is in progress, and of two
        // upgrades that started together the second fails to record its release version
        // ("already exists"). Wait, and upgrade again on top of the other.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        loop {
            let out = self.tool_output("helm", &args, &self.helm_envs()).unwrap_or_else(|e| panic!("run helm: {e}"));
            let err = String::from_utf8_lossy(&out.stderr);
            if out.status.success() {
                break;
            }
            let raced = err.contains("another operation (install/upgrade/rollback) is in progress")
                || err.contains("release: already exists");
            assert!(
                raced && std::time::Instant::now() < deadline,
                "helm {args:?}: {}{err}",
                String::from_utf8_lossy(&out.stdout)
            );
            std::thread::sleep(std::time::Duration::from_secs(2));
        }
    }

    /// The chart in this tree.
    pub fn chart() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repo root").join("charts/etcd-pilot")
    }
}

/// A pod spec fragment that pins a pod to one node (tolerating control-plane taints).
pub fn on_node(node: &str) -> Value {
    json!({
        "nodeSelector": {"kubernetes.io/hostname": node},
        "tolerations": [{"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"}],
    })
}
