//! `etcd-pilot run`: the controller manager.

use std::net::SocketAddr;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client};

use crate::crdgen;
use crate::http_server::{self, Health};

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

/// Connects, checks the CRDs, serves health and metrics until SIGTERM or Ctrl-C.
pub async fn run(config: RunConfig) -> Result<(), RunError> {
    let client = Client::try_default().await.map_err(RunError::Kube)?;
    check_crds(client.clone()).await?;
    let health = Health::default();
    // No controllers run yet: ready means the CRDs were found.
    health.set_ready(true);
    tracing::info!("CRDs installed; etcd-pilot is ready");
    http_server::serve(config.listen, health, shutdown_signal())
        .await
        .map_err(|source| RunError::Http { addr: config.listen, source })
}

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
