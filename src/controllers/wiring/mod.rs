//! The kube-apiserver wiring controller: for each EtcdCluster with `spec.apiServer`,
//! a Secret with what kube-apiserver needs to use it and the clusters its overrides name
//! (`ca.crt`, `tls.crt`, `tls.key`: a client certificate of its own; `etcd-servers`,
//! `etcd-servers-overrides`: the exact flag values). observe (the main cluster, the
//! named clusters, the main CA, the published Secret) -> [`plan`] (pure) -> act (issue
//! the certificate when due, apply the Secret) -> status (`status.apiServer` and the
//! condition `ApiServerWiring`, under this controller's own field manager).
//!
//! URLs of External clusters are the client Services' (`https://<cluster>-client.<ns>.svc:2379`):
//! stable across membership changes, so kube-apiserver (which reads its flags only at
//! start) needs no restart when members come and go. Stacked clusters are reached on
//! their members' node addresses (`https://<node IP>:2379`), as kubeadm's control planes
//! reach their stacked etcd. Only a change of the values or of the certificate is
//! announced (Event `ApiServerWiringChanged`, `status.apiServer.lastChanged`).

pub mod plan;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;

use self::plan::{Named, Observed, Plan};
use crate::api::EtcdCluster;
use crate::api::cluster::ApiServerStatus;
use crate::pki::{self, CertPair, Usage};
use crate::runtime::events::{EventType, publish};
use crate::runtime::runner::{self, Category, LeaseRead, PassError};
use crate::runtime::{Runtime, kube_ops};
use crate::shared::names::Names;

pub const CONTROLLER: &str = "wiring";
pub const FIELD_MANAGER: &str = "etcd-pilot-wiring";
/// The condition this controller owns on the main cluster.
pub const CONDITION: &str = "ApiServerWiring";
/// Label of the published Secrets: the cluster they wire.
pub const LABEL: &str = "etcdpilot.io/apiserver-wiring";
const DAY: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("leader election: cannot read the Lease: {0}")]
    Lease(#[source] kube::Error),
    #[error("observe: {what}: {source}")]
    Observe {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("act: issue kube-apiserver's client certificate: {0}")]
    Certificate(#[from] pki::PkiError),
    #[error("act: {what}: {source}")]
    Act {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("status: {0}")]
    Status(#[source] kube::Error),
}

impl PassError for Error {
    fn step(&self) -> &'static str {
        match self {
            Error::Lease(_) => "lease",
            Error::Observe { .. } => "observe",
            Error::Certificate(_) | Error::Act { .. } => "act",
            Error::Status(_) => "status",
        }
    }

    fn lease(error: kube::Error) -> Self {
        Error::Lease(error)
    }

    fn category(&self) -> Category {
        match self {
            Error::Certificate(_) => Category::Certificates,
            _ => Category::Kubernetes,
        }
    }
}

fn observe(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error::Observe { what, source }
}

pub struct Context {
    pub rt: Arc<Runtime>,
}

/// The published Secret's name for a main cluster.
pub fn secret_name(cluster: &str) -> String {
    format!("{cluster}-apiserver-etcd")
}

pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.rt.client.clone();
    let clusters: Api<EtcdCluster> = match &namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    // Secrets are not watched (that would need list and watch on every Secret): the
    // published one is checked on every pass, and passes come at least every 30 s.
    runner::run(
        CONTROLLER,
        runner::controller(clusters),
        ctx.clone(),
        (ctx.rt.clone(), LeaseRead::Shared),
        reconcile,
        shutdown,
    )
    .await;
}

pub async fn reconcile(ec: Arc<EtcdCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = ec.namespace().unwrap_or_default();
    runner::metered(&ctx.rt.metrics, CONTROLLER, &ns, &ec.name_any(), pass(&ec, &ctx)).await
}

fn data(secret: &Secret, key: &str) -> Option<String> {
    secret.data.as_ref()?.get(key).and_then(|b| String::from_utf8(b.0.clone()).ok())
}

fn condition(ec: &EtcdCluster, ok: bool, reason: &str, message: String) -> Condition {
    let status = if ok { "True" } else { "False" }.to_string();
    let previous = ec.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == CONDITION));
    let last_transition_time = previous
        .filter(|c| c.status == status)
        .map_or_else(|| Time(jiff::Timestamp::now()), |c| c.last_transition_time.clone());
    Condition {
        type_: CONDITION.into(),
        status,
        reason: reason.into(),
        message,
        observed_generation: ec.metadata.generation,
        last_transition_time,
    }
}

/// Where kube-apiserver reaches a cluster (see [`plan::servers`]): a Stacked cluster's
/// member pods are read for their nodes' addresses.
async fn servers_of(ctx: &Context, ec: &EtcdCluster) -> Result<Vec<String>, Error> {
    use crate::api::cluster::Topology;
    let n = Names::of(ec);
    let stacked = ec.spec.topology == Topology::Stacked;
    let mut members = Vec::new();
    if stacked {
        let pods: Api<Pod> = Api::namespaced(ctx.rt.client.clone(), &n.namespace);
        let selector = crate::shared::names::selector(&n.cluster)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let list = pods
            .list(&kube::api::ListParams::default().labels(&selector))
            .await
            .map_err(observe(format!("list the member pods of {}", n.cluster)))?;
        for p in list.items {
            let member = p.labels().get("etcdpilot.io/member").cloned().unwrap_or_else(|| p.name_any());
            let ip = p.status.and_then(|s| s.host_ip).unwrap_or_default();
            members.push((member, ip));
        }
    }
    let scheme = if n.tls { "https" } else { "http" };
    Ok(plan::servers(stacked, &n.client_service_url(), scheme, &members))
}

async fn pass(ec: &EtcdCluster, ctx: &Context) -> Result<Action, Error> {
    if ec.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = ec.namespace().unwrap_or_default();
    let name = ec.name_any();
    let clusters: Api<EtcdCluster> = Api::namespaced(ctx.rt.client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(ctx.rt.client.clone(), &ns);
    let published = secrets.get_opt(&secret_name(&name)).await.map_err(observe("read the published Secret"))?;
    let mine =
        ec.status.as_ref().is_some_and(|s| s.api_server.is_some() || s.conditions.iter().any(|c| c.type_ == CONDITION));

    let Some(wiring) = &ec.spec.api_server else {
        // Not (or no longer) asked for: nothing published, nothing in the status.
        if let Some(s) = &published {
            kube_ops::delete_if_present(&secrets, &s.name_any(), s.uid())
                .await
                .map_err(|source| Error::Act { what: "delete the published Secret".into(), source })?;
        }
        if mine {
            kube_ops::apply_status(&clusters, FIELD_MANAGER, &name, json!({})).await.map_err(Error::Status)?;
        }
        return Ok(Action::await_change());
    };

    // Observe.
    let mut named = BTreeMap::new();
    for o in &wiring.overrides {
        if named.contains_key(&o.cluster) || o.cluster == name {
            continue;
        }
        let other = clusters.get_opt(&o.cluster).await.map_err(observe(format!("read EtcdCluster {}", o.cluster)))?;
        let other = match other {
            Some(c) => Some(Named {
                mode: c.spec.tls.mode,
                ca_from: c.spec.tls.ca_from.as_ref().map(|f| f.cluster.clone()),
                servers: servers_of(ctx, &c).await?,
            }),
            None => None,
        };
        named.insert(o.cluster.clone(), other);
    }
    let ca_name = crate::shared::secrets::ca_secret_of(ec);
    let ca = secrets
        .get_opt(&ca_name)
        .await
        .map_err(observe(format!("read Secret {ca_name}")))?
        .and_then(|s| Some(CertPair { cert_pem: data(&s, "tls.crt")?, key_pem: data(&s, "tls.key")? }));
    let now = time::OffsetDateTime::now_utc();
    let renew_before = DAY * ec.spec.tls.renew_before_days.max(1) as u32;
    let certificate = ca
        .as_ref()
        .and_then(|ca| crate::shared::secrets::leaf_needs_issue(published.as_ref(), &ca.cert_pem, now, renew_before));
    let observed = Observed {
        main: name.clone(),
        main_mode: ec.spec.tls.mode,
        main_servers: servers_of(ctx, ec).await?,
        main_ca_ready: ca.is_some(),
        overrides: wiring.overrides.clone(),
        named,
        published: published
            .as_ref()
            .and_then(|s| Some((data(s, "etcd-servers")?, data(s, "etcd-servers-overrides")?))),
        certificate,
    };

    // Plan, act, status.
    let previous = ec.status.as_ref().and_then(|s| s.api_server.clone());
    let (status, cond) = match (plan::plan(&observed), ca) {
        (Plan::Invalid(problems), _) => {
            let message = format!("nothing new is published: {}", problems.join("; "));
            let already = ec.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == CONDITION));
            if already.is_none_or(|c| c.message != message) {
                publish(&ctx.rt, ec, EventType::Warning, "ApiServerWiringInvalid", &message).await;
            }
            (previous, condition(ec, false, "Invalid", message))
        }
        (Plan::Wait(why), _) => (previous, condition(ec, false, "Waiting", why)),
        (Plan::Publish { .. }, None) => {
            (previous, condition(ec, false, "Waiting", format!("waiting for the CA of {name}")))
        }
        (Plan::Publish { etcd_servers, overrides, reissue, changed }, Some(ca)) => {
            let (cert, key) = match reissue {
                Some(_) => {
                    let days = DAY * ec.spec.tls.certificate_validity_days.max(1) as u32;
                    let pair = pki::issue(&ca, plan::CLIENT_CN, &[], Usage::Client, days)?;
                    (pair.cert_pem, pair.key_pem)
                }
                None => (
                    published.as_ref().and_then(|s| data(s, "tls.crt")).unwrap_or_default(),
                    published.as_ref().and_then(|s| data(s, "tls.key")).unwrap_or_default(),
                ),
            };
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(secret_name(&name)),
                    namespace: Some(ns.clone()),
                    labels: Some(BTreeMap::from([(LABEL.to_string(), name.clone())])),
                    owner_references: ec.controller_owner_ref(&()).map(|o| vec![o]),
                    ..ObjectMeta::default()
                },
                type_: Some("Opaque".into()),
                data: Some(BTreeMap::from([
                    ("ca.crt".to_string(), ByteString(ca.cert_pem.clone().into_bytes())),
                    ("tls.crt".to_string(), ByteString(cert.clone().into_bytes())),
                    ("tls.key".to_string(), ByteString(key.into_bytes())),
                    ("etcd-servers".to_string(), ByteString(etcd_servers.clone().into_bytes())),
                    ("etcd-servers-overrides".to_string(), ByteString(overrides.clone().into_bytes())),
                ])),
                ..Secret::default()
            };
            if changed {
                kube_ops::apply(&secrets, FIELD_MANAGER, &secret)
                    .await
                    .map_err(|source| Error::Act { what: "apply the published Secret".into(), source })?;
                let note = format!(
                    "kube-apiserver's etcd wiring changed ({}): Secret {} has --etcd-servers={etcd_servers} --etcd-servers-overrides={overrides}; kube-apiserver reads them only at start: roll it",
                    reissue.map_or("values".to_string(), |why| format!("client certificate {why}")),
                    secret_name(&name)
                );
                publish(&ctx.rt, ec, EventType::Normal, "ApiServerWiringChanged", &note).await;
            }
            let status = ApiServerStatus {
                secret_name: secret_name(&name),
                etcd_servers: etcd_servers.clone(),
                etcd_servers_overrides: overrides.clone(),
                last_changed: if changed {
                    Some(Time(jiff::Timestamp::now()))
                } else {
                    previous.as_ref().and_then(|p| p.last_changed.clone())
                },
                certificate_not_after: crate::pki::not_after(&cert)
                    .and_then(|t| jiff::Timestamp::from_second(t.unix_timestamp()).ok())
                    .map(Time),
            };
            let message = format!(
                "Secret {} carries --etcd-servers={etcd_servers} and --etcd-servers-overrides={}",
                secret_name(&name),
                if overrides.is_empty() { "(none)".to_string() } else { overrides.clone() }
            );
            (Some(status), condition(ec, true, "Published", message))
        }
    };
    let current = ec.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == CONDITION));
    let same = current == Some(&cond) && ec.status.as_ref().and_then(|s| s.api_server.as_ref()) == status.as_ref();
    if !same {
        let mut value = json!({"conditions": [cond]});
        if let Some(s) = &status {
            value["apiServer"] = json!(s);
        }
        kube_ops::apply_status(&clusters, FIELD_MANAGER, &name, value).await.map_err(Error::Status)?;
    }
    // The clusters overrides name are not watched from here: look again soon.
    Ok(Action::requeue(Duration::from_secs(30)))
}
