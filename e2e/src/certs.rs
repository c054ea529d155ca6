//! The cluster's PKI: one CA for everything (a testbed needs no more), serving certs
//! for the apiserver, client certs for each component, and their kubeconfigs.

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_pilot::pki::{self, CertPair, Usage};

use crate::error::{Result, TestbedError, io};
use crate::layout::{CLUSTER_DOMAIN, HOST_IP, KUBERNETES_SERVICE_IP, State};

const VALIDITY: Duration = Duration::from_secs(30 * 86400);

fn err(e: pki::PkiError) -> TestbedError {
    TestbedError::Other(e.to_string())
}

fn write(dir: &Path, name: &str, pair: &CertPair) -> Result<(PathBuf, PathBuf)> {
    let (crt, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    std::fs::write(&crt, &pair.cert_pem).map_err(io(&crt))?;
    std::fs::write(&key, &pair.key_pem).map_err(io(&key))?;
    Ok((crt, key))
}

/// Writes the PKI and a kubeconfig per identity. Returns nothing: paths are fixed by
/// [`pki_path`] and [`kubeconfig_path`].
pub fn generate(state: &State) -> Result<()> {
    let dir = state.pki();
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let ca = pki::generate_ca("etcd-pilot testbed CA", VALIDITY).map_err(err)?;
    write(&dir, "ca", &ca)?;

    let mut sans: Vec<String> =
        [HOST_IP, KUBERNETES_SERVICE_IP, "127.0.0.1", "localhost", "kubernetes", "kubernetes.default"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    sans.push("kubernetes.default.svc".into());
    sans.push(format!("kubernetes.default.svc.{CLUSTER_DOMAIN}"));
    let apiserver = pki::issue(&ca, "kube-apiserver", &sans, Usage::Server, VALIDITY).map_err(err)?;
    write(&dir, "apiserver", &apiserver)?;
    let to_kubelet =
        pki::issue_with_org(&ca, "kube-apiserver-kubelet-client", Some("system:masters"), &[], Usage::Client, VALIDITY)
            .map_err(err)?;
    write(&dir, "apiserver-kubelet-client", &to_kubelet)?;

    let (sa_key, sa_pub) = pki::generate_key_pair().map_err(err)?;
    for (name, data) in [("sa.key", sa_key), ("sa.pub", sa_pub)] {
        let p = dir.join(name);
        std::fs::write(&p, data).map_err(io(&p))?;
    }

    let mut identities: Vec<(String, String, Option<&str>)> = vec![
        ("admin".into(), "testbed-admin".into(), Some("system:masters")),
        ("controller-manager".into(), "system:kube-controller-manager".into(), None),
        ("scheduler".into(), "system:kube-scheduler".into(), None),
        ("kube-proxy".into(), "system:kube-proxy".into(), None),
    ];
    for n in &state.nodes {
        identities.push((format!("node-{}", n.name), format!("system:node:{}", n.name), Some("system:nodes")));
    }
    for (file, cn, org) in identities {
        let pair = pki::issue_with_org(&ca, &cn, org, &[], Usage::Client, VALIDITY).map_err(err)?;
        let (crt, key) = write(&dir, &file, &pair)?;
        let kc = kubeconfig(&state.apiserver_url(), &dir.join("ca.crt"), &crt, &key, &cn);
        let path = kubeconfig_path(state, &file);
        std::fs::write(&path, kc).map_err(io(&path))?;
    }
    // The admin kubeconfig is the one users and tests take.
    std::fs::copy(kubeconfig_path(state, "admin"), state.kubeconfig()).map_err(io(state.kubeconfig()))?;
    Ok(())
}

pub fn pki_path(state: &State, name: &str) -> PathBuf {
    state.pki().join(name)
}

pub fn kubeconfig_path(state: &State, identity: &str) -> PathBuf {
    state.pki().join(format!("{identity}.kubeconfig"))
}

fn kubeconfig(server: &str, ca: &Path, crt: &Path, key: &Path, user: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: testbed
  cluster:
    server: {server}
    certificate-authority: {ca}
users:
- name: {user}
  user:
    client-certificate: {crt}
    client-key: {key}
contexts:
- name: testbed
  context:
    cluster: testbed
    user: {user}
current-context: testbed
",
        ca = ca.display(),
        crt = crt.display(),
        key = key.display()
    )
}
