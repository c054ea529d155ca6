//! The testbed's agent, a long-running process started by `up`:
//! - cluster DNS: keeps dnsmasq's hosts file in step with Services, Endpoints and pod
//!   hostnames (as CoreDNS's kubernetes plugin answers), reloading it on every change;
//! - a dynamic PersistentVolume provisioner for the `local-path` StorageClass
//!   (WaitForFirstConsumer): a directory on the selected node per claim, deleted with
//!   the claim.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, PersistentVolume, PersistentVolumeClaim, Service};
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::Notify;

use crate::error::{Result, TestbedError, io};
use crate::layout::{CLUSTER_DOMAIN, PROVISIONER, STORAGE_CLASS, State};

const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

/// Runs until killed.
pub async fn run(dir: &Path) -> Result<()> {
    let state = State::load(dir)?;
    let client = crate::cluster::client(&state.kubeconfig()).await?;
    let dns_pid = state.processes.iter().find(|p| p.name == "dnsmasq").map(|p| p.pid);
    let changed = Arc::new(Notify::new());

    let (services, svc_writer) = reflector::store::<Service>();
    let (endpoints, ep_writer) = reflector::store::<Endpoints>();
    let (claims, pvc_writer) = reflector::store::<PersistentVolumeClaim>();
    let (volumes, pv_writer) = reflector::store::<PersistentVolume>();
    let svc = notify_on(
        reflector::reflector(svc_writer, watcher(Api::<Service>::all(client.clone()), Default::default()))
            .touched_objects(),
        changed.clone(),
    );
    let ep = notify_on(
        reflector::reflector(ep_writer, watcher(Api::<Endpoints>::all(client.clone()), Default::default()))
            .touched_objects(),
        changed.clone(),
    );
    let pvc = notify_on(
        reflector::reflector(
            pvc_writer,
            watcher(Api::<PersistentVolumeClaim>::all(client.clone()), Default::default()),
        )
        .touched_objects(),
        changed.clone(),
    );
    let pv = notify_on(
        reflector::reflector(pv_writer, watcher(Api::<PersistentVolume>::all(client.clone()), Default::default()))
            .touched_objects(),
        changed.clone(),
    );
    let hosts = dir.join("dns/hosts");
    let pv_root = dir.join("pv");
    let sync = async {
        let mut last = String::new();
        loop {
            // Coalesce bursts, and re-check now and then in case a notification raced.
            let _ = tokio::time::timeout(Duration::from_secs(2), changed.notified()).await;
            let text = hosts_file(&services, &endpoints);
            if text != last {
                match write_atomic(&hosts, &text) {
                    Ok(()) => {
                        if let Some(pid) = dns_pid.and_then(|p| i32::try_from(p).ok()) {
                            // SAFETY: kill(2) has no memory effects. SIGHUP reloads the hosts file.
                            unsafe {
                                libc::kill(pid, libc::SIGHUP);
                            }
                        }
                        last = text;
                    }
                    Err(e) => eprintln!("agent: {e}"),
                }
            }
            if let Err(e) = provision(&client, &claims, &volumes, &pv_root).await {
                eprintln!("agent: provisioner: {e}");
            }
        }
    };
    tokio::select! {
        _ = svc => {}, _ = ep => {}, _ = pvc => {}, _ = pv => {}, _ = sync => {},
    }
    Err(TestbedError::Other("agent: a watch ended".into()))
}

/// Drives a watch stream, waking the sync loop on every change.
async fn notify_on<S: futures::Stream>(stream: S, changed: Arc<Notify>) {
    stream
        .for_each(|_| {
            changed.notify_one();
            futures::future::ready(())
        })
        .await
}

fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// The records cluster DNS serves, as a hosts file:
/// - `<svc>.<ns>.svc.<domain>`: the ClusterIP, or for a headless Service every ready
///   endpoint (and not-ready ones when it publishes them);
/// - `<hostname>.<svc>.<ns>.svc.<domain>`: an endpoint with a hostname (a pod whose
///   `subdomain` names a headless Service).
pub fn hosts_file(services: &Store<Service>, endpoints: &Store<Endpoints>) -> String {
    let mut lines = BTreeSet::new();
    for svc in services.state() {
        let (Some(ns), name) = (svc.namespace(), svc.name_any()) else { continue };
        let spec = svc.spec.clone().unwrap_or_default();
        let fqdn = format!("{name}.{ns}.svc.{CLUSTER_DOMAIN}");
        match spec.cluster_ip.as_deref() {
            Some("None") => {
                let publish = spec.publish_not_ready_addresses.unwrap_or(false);
                let key = reflector::ObjectRef::<Endpoints>::new(&name).within(&ns);
                let Some(ep) = endpoints.get(&key) else { continue };
                for subset in ep.subsets.iter().flatten() {
                    let ready = subset.addresses.iter().flatten();
                    let not_ready = subset.not_ready_addresses.iter().flatten().filter(|_| publish);
                    for a in ready.chain(not_ready) {
                        lines.insert(format!("{} {fqdn}", a.ip));
                        if let Some(h) = &a.hostname {
                            lines.insert(format!("{} {h}.{fqdn}", a.ip));
                        }
                    }
                }
            }
            Some(ip) if !ip.is_empty() => {
                lines.insert(format!("{ip} {fqdn}"));
            }
            _ => {}
        }
    }
    lines.into_iter().map(|l| l + "\n").collect()
}

async fn provision(
    client: &Client,
    claims: &Store<PersistentVolumeClaim>,
    volumes: &Store<PersistentVolume>,
    root: &Path,
) -> Result<()> {
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    for pvc in claims.state() {
        let spec = pvc.spec.clone().unwrap_or_default();
        let pending = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending");
        let ours = spec.storage_class_name.as_deref() == Some(STORAGE_CLASS);
        let node = pvc.annotations().get(SELECTED_NODE).cloned();
        let (Some(node), true, true, Some(uid)) = (node, pending, ours, pvc.uid()) else { continue };
        if pvc.metadata.deletion_timestamp.is_some() || spec.volume_name.as_deref().is_some_and(|v| !v.is_empty()) {
            continue;
        }
        let name = format!("pvc-{uid}");
        if volumes.get(&reflector::ObjectRef::new(&name)).is_some() {
            continue;
        }
        let path = root.join(&node).join(&name);
        std::fs::create_dir_all(&path).map_err(io(&path))?;
        let size = spec.resources.and_then(|r| r.requests).and_then(|r| r.get("storage").cloned());
        let pv: PersistentVolume = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "annotations": {PROVISIONED_BY: PROVISIONER},
                         "labels": {"etcdpilot.io/testbed-node": node}},
            "spec": {
                "capacity": {"storage": size.map(|q| q.0).unwrap_or_else(|| "1Gi".into())},
                "accessModes": spec.access_modes.unwrap_or_else(|| vec!["ReadWriteOnce".into()]),
                "persistentVolumeReclaimPolicy": "Delete",
                "storageClassName": STORAGE_CLASS,
                "volumeMode": "Filesystem",
                "claimRef": {"namespace": pvc.namespace(), "name": pvc.name_any(), "uid": uid},
                "local": {"path": path.display().to_string()},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}},
            },
        }))
        .map_err(|e| TestbedError::Other(e.to_string()))?;
        match pvs.create(&PostParams::default(), &pv).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Released volumes of ours: the claim is gone, so is the data.
    for pv in volumes.state() {
        let released = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
        let ours = pv.annotations().get(PROVISIONED_BY).map(String::as_str) == Some(PROVISIONER);
        if !(released && ours) {
            continue;
        }
        if let Some(path) = pv.spec.as_ref().and_then(|s| s.local.as_ref()).map(|l| PathBuf::from(&l.path))
            && path.starts_with(root)
        {
            let _ = std::fs::remove_dir_all(&path);
        }
        match pvs.delete(&pv.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
