//! `etcd-pilot run`: the controller manager.

use std::net::SocketAddr;
use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client};
use kube_lease_manager::LeaseManagerBuilder;

use crate::controllers::cluster::{self, Context, Settings};
use crate::crdgen;
use crate::http_server::{self, Health};
use crate::runtime::{LeaseGuard, LeaseRef, Runtime};

/// Why the manager stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot reach Kubernetes (kubeconfig or in-cluster config): {0}")]
    Kube(#[source] kube::Error),
    #[error(
        "CRD {name} is not installed{detail}; install etcd-pilot's CRDs first: `helm install` the chart, or `etcd-pilot crds | kubectl apply -f -`"
    )]
    CrdMissing { name: String, detail: String },
    #[error("cannot read CRD {name}: {source}")]
    CrdRead {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "cannot bring CRD {name} to this version: {source} (the chart's crds.apply grants the right; or apply them by hand: `etcd-pilot crds | kubectl apply --server-side -f -`)"
    )]
    CrdApply {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("leader election: {0}")]
    Lease(#[source] kube_lease_manager::LeaseManagerError),
    #[error("lost the leader-election Lease")]
    LeaseLost,
    #[error("cannot serve HTTP on {addr}: {source}")]
    Http {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Settings of `etcd-pilot run`.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub listen: SocketAddr,
    /// Repository of etcd images (`<repository>:v<version>`).
    pub etcd_image_repository: String,
    /// Namespace of the leader-election Lease.
    pub lease_namespace: String,
    /// Name of the leader-election Lease.
    pub lease_name: String,
    /// This replica's identity in the Lease.
    pub identity: String,
    /// The cluster's DNS domain.
    pub cluster_domain: String,
    /// Namespaces to watch; empty: all.
    pub watch_namespaces: Vec<String>,
    /// The operator's own image, for the init containers of restored members.
    pub operator_image: String,
    /// Bring installed CRDs of an older version to this one's at start.
    pub apply_crds: bool,
}

/// Field manager of the CRDs the operator applies.
const CRD_MANAGER: &str = "etcd-pilot-crds";

/// Brings every installed CRD of an older etcd-pilot (or one without the version
/// annotation) to this version's with server-side apply; `helm upgrade` never updates
/// CRDs. Missing CRDs are left to `check_crds`; newer ones are never downgraded.
pub async fn apply_crds(client: Client) -> Result<(), RunError> {
    let api: Api<CustomResourceDefinition> = Api::all(client);
    for want in crdgen::all() {
        let name = want.metadata.name.clone().unwrap_or_default();
        let installed = api.get_opt(&name).await.map_err(|source| RunError::CrdRead { name: name.clone(), source })?;
        match crdgen::upgrade(installed.as_ref()) {
            crdgen::Upgrade::Missing => {}
            crdgen::Upgrade::Newer(v) => {
                tracing::warn!(crd = %name, installed = %v, ours = env!("CARGO_PKG_VERSION"), "a newer etcd-pilot installed this CRD; leaving it")
            }
            crdgen::Upgrade::Apply => {
                let params = kube::api::PatchParams::apply(CRD_MANAGER).force();
                api.patch(&name, &params, &kube::api::Patch::Apply(&want))
                    .await
                    .map_err(|source| RunError::CrdApply { name: name.clone(), source })?;
                tracing::info!(crd = %name, version = env!("CARGO_PKG_VERSION"), "CRD applied");
            }
        }
    }
    Ok(())
}

/// Checks that every CRD this build serves is installed with the version it uses.
pub async fn check_crds(client: Client) -> Result<(), RunError> {
    let api: Api<CustomResourceDefinition> = Api::all(client);
    for want in crdgen::all() {
        let name = want.metadata.name.clone().unwrap_or_default();
        let have = match api.get_opt(&name).await {
            Ok(Some(c)) => c,
            Ok(None) => return Err(RunError::CrdMissing { name, detail: String::new() }),
            Err(source) => return Err(RunError::CrdRead { name, source }),
        };
        for v in &want.spec.versions {
            if !have.spec.versions.iter().any(|h| h.name == v.name && h.served) {
                return Err(RunError::CrdMissing { name, detail: format!(" with version {} served", v.name) });
            }
        }
    }
    Ok(())
}

/// Connects, checks the CRDs, serves health and metrics, and runs the controllers while
/// this replica holds the leader-election Lease, until SIGTERM or Ctrl-C.
pub async fn run(config: RunConfig) -> Result<(), RunError> {
    let client = Client::try_default().await.map_err(RunError::Kube)?;
    if config.apply_crds {
        apply_crds(client.clone()).await?;
    }
    check_crds(client.clone()).await?;
    let health = Health::default();
    // Ready: the CRDs are there and this replica is either leading or standing by.
    health.set_ready(true);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = {
        let mut stop = stop_rx.clone();
        let health = health.clone();
        tokio::spawn(async move {
            http_server::serve(config.listen, health, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
        })
    };
    let trimmer = tokio::spawn(return_free_memory());
    let result = lead_and_reconcile(client, &config, &health).await;
    trimmer.abort();
    let _ = stop_tx.send(true);
    if let Ok(Err(source)) = server.await {
        return Err(RunError::Http { addr: config.listen, source });
    }
    result
}

/// How often memory the allocator holds free is given back to the system.
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// glibc's allocator keeps what a burst freed (connections of calm clusters closed,
/// the buffers of a pass) in its free lists, where it counts as the process's memory:
/// measured on the testbed at 30 idle clusters, 13.4 MiB of anonymous memory of which
/// `malloc_trim` gave back 5.3 MiB. Trimming takes well under a millisecond here.
async fn return_free_memory() {
    let mut every = tokio::time::interval(TRIM_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only releases free memory of the allocator; it touches no
        // memory of ours and may be called from any thread at any time.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// Waits for the Lease, runs the controller while holding it. Losing it ends the
/// process: two replicas must never act on one cluster, and a restart is the surest
/// way to drop every in-flight step.
async fn lead_and_reconcile(client: Client, config: &RunConfig, health: &Health) -> Result<(), RunError> {
    let lease = LeaseManagerBuilder::new(client.clone(), &config.lease_name)
        .with_namespace(&config.lease_namespace)
        .with_identity(&config.identity)
        .with_duration(LEASE_SECONDS)
        .with_grace(LEASE_GRACE_SECONDS)
        .build()
        .await
        .map_err(RunError::Lease)?;
    let (mut leading, lease_task) = lease.watch().await;
    tracing::info!(lease = %config.lease_name, namespace = %config.lease_namespace, identity = %config.identity, "waiting for leadership");
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        if *leading.borrow_and_update() {
            break;
        }
        tokio::select! {
            changed = leading.changed() => if changed.is_err() { return Err(RunError::LeaseLost) },
            _ = &mut shutdown => return Ok(()),
        }
    }
    health.metrics.leader.set(1);
    tracing::info!(identity = %config.identity, "leading: starting the controllers");
    // One runtime for every controller; `leading_tx` is the one switch that stops them
    // all acting the moment the Lease is lost, before the process exits.
    let (leading_tx, leading_rx) = tokio::sync::watch::channel(true);
    let guard = LeaseGuard::new(
        LeaseRef {
            namespace: config.lease_namespace.clone(),
            name: config.lease_name.clone(),
            identity: config.identity.clone(),
        },
        leading_rx,
    );
    let rt = Arc::new(Runtime::new(client.clone(), health.metrics.clone(), config.identity.clone(), guard));
    let (policy_v1, policy_v1beta1) = cluster::served_pdb_apis(&client).await;
    let settings = Settings {
        etcd_image_repository: config.etcd_image_repository.clone(),
        policy_v1,
        policy_v1beta1,
        cluster_domain: config.cluster_domain.clone(),
        operator_image: config.operator_image.clone(),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let cluster_ctx = Arc::new(Context::new(rt.clone(), settings));
    let backup_ctx = Arc::new(crate::controllers::backup::Context::new(rt.clone()));
    let restore_ctx = Arc::new(crate::controllers::restore::Context { rt: rt.clone() });
    let schedule_ctx = Arc::new(crate::controllers::schedule::Context { rt: rt.clone() });
    let stream_ctx = Arc::new(crate::controllers::stream::Context::new(rt.clone()));
    let drill_ctx =
        Arc::new(crate::controllers::drill::Context { rt: rt.clone(), operator_image: config.operator_image.clone() });
    let wiring_ctx = Arc::new(crate::controllers::wiring::Context { rt });
    // One controller per watched namespace (or one for all), sharing one context.
    let scopes: Vec<Option<String>> = if config.watch_namespaces.is_empty() {
        vec![None]
    } else {
        config.watch_namespaces.iter().cloned().map(Some).collect()
    };
    let controllers: Vec<_> = scopes
        .into_iter()
        .flat_map(|ns| {
            [
                tokio::spawn(cluster::run(cluster_ctx.clone(), ns.clone(), stopped(stop_rx.clone()))),
                tokio::spawn(crate::controllers::backup::run(backup_ctx.clone(), ns.clone(), stopped(stop_rx.clone()))),
                tokio::spawn(crate::controllers::restore::run(
                    restore_ctx.clone(),
                    ns.clone(),
                    stopped(stop_rx.clone()),
                )),
                tokio::spawn(crate::controllers::schedule::run(
                    schedule_ctx.clone(),
                    ns.clone(),
                    stopped(stop_rx.clone()),
                )),
                tokio::spawn(crate::controllers::stream::run(stream_ctx.clone(), ns.clone(), stopped(stop_rx.clone()))),
                tokio::spawn(crate::controllers::drill::run(drill_ctx.clone(), ns.clone(), stopped(stop_rx.clone()))),
                tokio::spawn(crate::controllers::wiring::run(wiring_ctx.clone(), ns, stopped(stop_rx.clone()))),
            ]
        })
        .collect();
    let lost = loop {
        tokio::select! {
            changed = leading.changed() => {
                if changed.is_err() || !*leading.borrow_and_update() { break true }
            }
            _ = &mut shutdown => break false,
        }
    };
    // The one shutdown path: no controller acts from here on, each is asked to stop
    // and given a moment to finish its current call.
    let _ = leading_tx.send(false);
    health.metrics.leader.set(0);
    let _ = stop_tx.send(true);
    for c in controllers {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(LEASE_GRACE_SECONDS), c).await;
    }
    if lost {
        tracing::error!(
            "lost the leader-election Lease; controllers stopped; exiting so that only the new leader acts"
        );
        return Err(RunError::LeaseLost);
    }
    // Dropping the receiver makes the lease task release the Lease for a quick handover.
    drop(leading);
    let _ = lease_task.await;
    Ok(())
}

const LEASE_SECONDS: u64 = 15;
const LEASE_GRACE_SECONDS: u64 = 5;

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response};
    use kube::client::Body;
    use tower_test::mock;

    /// Answers CRD GETs: installed names get a CRD as this build generates it.
    async fn serve_crds(mut handle: mock::Handle<Request<Body>, Response<Body>>, installed: Vec<String>) {
        while let Some((req, send)) = handle.next_request().await {
            let name = req.uri().path().rsplit('/').next().unwrap_or_default().to_string();
            let resp = match crdgen::all().into_iter().find(|c| c.metadata.name.as_deref() == Some(&name)) {
                Some(crd) if installed.contains(&name) => {
                    Response::builder().status(200).body(Body::from(serde_json::to_vec(&crd).unwrap())).unwrap()
                }
                _ => Response::builder()
                    .status(404)
                    .body(Body::from(
                        serde_json::to_vec(&serde_json::json!({
                            "kind": "Status", "apiVersion": "v1", "status": "Failure",
                            "reason": "NotFound", "code": 404, "message": format!("{name} not found"),
                        }))
                        .unwrap(),
                    ))
                    .unwrap(),
            };
            send.send_response(resp);
        }
    }

    fn client(installed: Vec<String>) -> Client {
        let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
        tokio::spawn(serve_crds(handle, installed));
        Client::new(svc, "default")
    }

    fn names() -> Vec<String> {
        crdgen::all().into_iter().filter_map(|c| c.metadata.name).collect()
    }

    #[tokio::test]
    async fn all_crds_installed_passes() {
        check_crds(client(names())).await.expect("all installed");
    }

    #[tokio::test]
    async fn a_missing_crd_is_named_with_how_to_install_it() {
        let mut installed = names();
        installed.retain(|n| n != "etcdbackupschedules.etcdpilot.io");
        let err = check_crds(client(installed)).await.expect_err("missing");
        let msg = err.to_string();
        assert!(msg.contains("etcdbackupschedules.etcdpilot.io is not installed"), "{msg}");
        assert!(msg.contains("etcd-pilot crds | kubectl apply -f -"), "{msg}");
    }
}
