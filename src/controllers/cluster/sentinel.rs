//! Between passes, one cheap question per cluster every [`CHECK_SECS`]: does a member's
//! plain `/health` (HTTP on the metrics port, no TLS, a few bytes) still say `true`? etcd
//! answers `false` there while an alarm is raised (NOSPACE: every write refused) or the
//! member has no leader; the member pods' own probes exclude NOSPACE (reads are still
//! served), so no pod changes and no watch event wakes the controller. A `false` starts
//! a pass at once: a quota filled from empty between two calm passes (120 s apart) is
//! found within seconds, not minutes, and healed by the planner as before.
//!
//! It keeps no connection and asks one member per cluster: at 100 idle clusters, five
//! small requests a second.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use kube::runtime::reflector::ObjectRef;

use super::Context;
use crate::api::EtcdCluster;

/// How often each cluster is asked.
pub const CHECK_SECS: u64 = 20;
/// How long one answer may take.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);
/// Clusters asked at once.
const AT_ONCE: usize = 16;

/// The plain `/health` URL of a member at `ip` (the metrics port).
pub fn health_url(ip: &str) -> String {
    let host = if ip.contains(':') { format!("[{ip}]") } else { ip.to_string() };
    format!("http://{host}:{}/health", crate::shared::names::METRICS_PORT)
}

/// Whether an answer of `/health` asks for a pass: anything but a 200 saying
/// `"health":"true"` (3.4 answers `{"health":"false"}` with 503 under an alarm; 3.5 adds
/// a reason such as `ALARM NOSPACE`).
pub fn needs_a_pass(status: u16, body: &[u8]) -> bool {
    let healthy = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("health").and_then(|h| h.as_str().map(|h| h == "true")))
        .unwrap_or(false);
    status != 200 || !healthy
}

/// Asks one member; `None` when it does not answer in time (no pass for that: the
/// regular passes handle a member that is down).
pub async fn ask(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    url: &str,
) -> Option<bool> {
    let uri: hyper::Uri = url.parse().ok()?;
    let answer = tokio::time::timeout(ANSWER_TIMEOUT, async {
        let resp = client.get(uri).await.ok()?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some(needs_a_pass(status, &body))
    })
    .await;
    answer.ok().flatten()
}

/// A plain HTTP client for the health endpoints.
pub fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build_http()
}

/// Asks every cluster the controller has seen, every [`CHECK_SECS`], and sends the ones
/// that need a pass to the controller.
pub async fn run(ctx: Arc<Context>, wake: UnboundedSender<ObjectRef<EtcdCluster>>) {
    let client = client();
    loop {
        tokio::time::sleep(Duration::from_secs(CHECK_SECS)).await;
        let targets: Vec<(super::Key, String)> = {
            let all = ctx.memory.lock().unwrap_or_else(|p| p.into_inner());
            all.iter().filter_map(|(k, m)| m.health_url.clone().map(|u| (k.clone(), u))).collect()
        };
        let client = &client;
        let wake = &wake;
        futures::stream::iter(targets)
            .for_each_concurrent(AT_ONCE, |(key, url)| async move {
                if ask(client, &url).await == Some(true) {
                    tracing::info!(cluster = %key.1, namespace = %key.0, "a member's /health says no: a pass now");
                    let _ = wake.unbounded_send(ObjectRef::new(&key.1).within(&key.0));
                }
            })
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_asks_for_a_pass() {
        for (status, body, pass) in [
            (200, &br#"{"health":"true"}"#[..], false),
            (200, br#"{"health":"true","reason":""}"#, false),
            (503, br#"{"health":"false"}"#, true),
            (503, br#"{"health":"false","reason":"ALARM NOSPACE"}"#, true),
            (200, br#"{"health":"false"}"#, true),
            (500, b"", true),
            (200, b"not json", true),
        ] {
            assert_eq!(needs_a_pass(status, body), pass, "{status} {}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn urls_of_members() {
        assert_eq!(health_url("10.1.2.3"), "http://10.1.2.3:2381/health");
        assert_eq!(health_url("fd00::5"), "http://[fd00::5]:2381/health");
    }
}
