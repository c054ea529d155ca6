//! Shared by the e2e test files: a cluster made, waited on, written to and watched,
//! through the testbed's API server and each cluster's client Service, with the
//! certificate etcd-pilot issued.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::kit::{Kit, OPERATOR_NS};
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use etcd_pilot::api::EtcdCluster;
use k8s_openapi::api::core::v1::{Event, Pod, Secret, Service};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

pub const WAIT: Duration = Duration::from_secs(240);
/// The leader-election Lease of the e2e's operator release.
pub const LEASE: &str = "etcd-pilot-leader";

pub async fn setup(prefix: &str) -> (Kit, String) {
    etcd_pilot::install_crypto_provider();
    let kit = Kit::connect().await;
    kit.install_operator();
    let ns = kit.namespace(prefix).await;
    (kit, ns)
}

pub fn cluster_manifest(name: &str, size: i32, version: &str, extra: Value) -> Value {
    let mut spec = json!({"size": size, "version": version});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdCluster", "metadata": {"name": name}, "spec": spec})
}

pub fn clusters(kit: &Kit, ns: &str) -> Api<EtcdCluster> {
    Api::namespaced(kit.client.clone(), ns)
}

pub async fn create_cluster(kit: &Kit, ns: &str, manifest: Value) -> EtcdCluster {
    let ec: EtcdCluster = serde_json::from_value(manifest).expect("manifest");
    clusters(kit, ns).create(&PostParams::default(), &ec).await.expect("create EtcdCluster")
}

pub async fn patch_spec(kit: &Kit, ns: &str, name: &str, spec: Value) {
    clusters(kit, ns)
        .patch(name, &PatchParams::default(), &Patch::Merge(json!({"spec": spec})))
        .await
        .expect("patch spec");
}

pub fn condition(ec: &EtcdCluster, type_: &str) -> Option<(String, String, String)> {
    let c = ec.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

pub async fn member_pods(kit: &Kit, ns: &str, name: &str) -> Vec<Pod> {
    let lp =
        ListParams::default().labels(&format!("app.kubernetes.io/instance={name},app.kubernetes.io/component=member"));
    Api::<Pod>::namespaced(kit.client.clone(), ns).list(&lp).await.expect("list pods").items
}

/// Waits until the cluster is Available with exactly `n` healthy voting members, no
/// learner, one pod per member and nothing else under way.
pub async fn wait_ready(kit: &Kit, ns: &str, name: &str, n: usize) -> EtcdCluster {
    let deadline = Instant::now() + WAIT;
    loop {
        let ec = clusters(kit, ns).get(name).await.expect("get EtcdCluster");
        let pods = member_pods(kit, ns, name).await;
        if let Some(s) = &ec.status {
            let voters = s.members.iter().filter(|m| !m.learner && !m.id.is_empty()).count();
            let all_healthy = s.members.iter().all(|m| m.healthy && !m.learner && !m.id.is_empty());
            if condition(&ec, "Available").is_some_and(|c| c.0 == "True")
                && s.ready_members as usize == n
                && voters == n
                && all_healthy
                && s.members.len() == n
                && pods.len() == n
                && pods.iter().all(|p| p.metadata.deletion_timestamp.is_none())
                && s.observed_generation == ec.metadata.generation
            {
                return ec;
            }
        }
        if Instant::now() > deadline {
            panic!("{ns}/{name} not ready with {n} members after {WAIT:?}\n{}", describe(kit, ns, name).await);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// What a timed-out wait prints, shortest first so a cut log keeps the cause: every
/// pod of the namespace with its node and each container's state, the namespace's
/// Events (pods' and volumes' too), then the cluster's conditions and member rows.
pub async fn describe(kit: &Kit, ns: &str, name: &str) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let pods = Api::<Pod>::namespaced(kit.client.clone(), ns).list(&ListParams::default()).await;
    for p in pods.map(|l| l.items).unwrap_or_default() {
        let st = p.status.clone().unwrap_or_default();
        let node = p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        let deleting = if p.metadata.deletion_timestamp.is_some() { " deleting" } else { "" };
        let _ = write!(out, "pod {} {}{deleting} on {node:?}:", p.name_any(), st.phase.unwrap_or_default());
        for c in st.init_container_statuses.iter().flatten().chain(st.container_statuses.iter().flatten()) {
            let state = c.state.clone().unwrap_or_default();
            let what = match (state.waiting, state.running, state.terminated) {
                (Some(w), _, _) => {
                    format!("waiting {} {}", w.reason.unwrap_or_default(), w.message.unwrap_or_default())
                }
                (_, Some(_), _) => "running".into(),
                (_, _, Some(t)) => format!("terminated {} exit {}", t.reason.unwrap_or_default(), t.exit_code),
                _ => "no state".into(),
            };
            let _ = write!(out, " [{} ready={} restarts={} {what}]", c.name, c.ready, c.restart_count);
        }
        out.push('\n');
    }
    // The operator's own account of this namespace, last lines of every replica.
    let ops: Api<Pod> = Api::namespaced(kit.client.clone(), OPERATOR_NS);
    let lp = ListParams::default().labels("app.kubernetes.io/name=etcd-pilot");
    for op in ops.list(&lp).await.map(|l| l.items).unwrap_or_default() {
        let params = kube::api::LogParams { tail_lines: Some(5000), ..Default::default() };
        let text = ops.logs(&op.name_any(), &params).await.unwrap_or_default();
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(ns)).collect();
        let _ = writeln!(out, "operator {} (last lines about {ns}):", op.name_any());
        for l in &lines[lines.len().saturating_sub(25)..] {
            let _ = writeln!(out, "  {}", l.chars().take(400).collect::<String>());
        }
    }
    let mut list = Api::<Event>::namespaced(kit.client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    list.sort_by_key(|e| {
        (
            e.event_time.clone().map(|t| t.0).or_else(|| e.metadata.creation_timestamp.clone().map(|t| t.0)),
            e.metadata.resource_version.clone().and_then(|v| v.parse::<u64>().ok()),
        )
    });
    out.push_str("events:\n");
    for e in list {
        let _ = writeln!(
            out,
            "  {} {} {}/{}: {}",
            e.metadata.creation_timestamp.map(|t| t.0.to_string()).unwrap_or_default(),
            e.type_.unwrap_or_default(),
            e.involved_object.name.unwrap_or_default(),
            e.reason.unwrap_or_default(),
            e.message.unwrap_or_default()
        );
    }
    if let Ok(ec) = clusters(kit, ns).get(name).await
        && let Some(s) = ec.status
    {
        out.push_str("conditions:\n");
        for c in &s.conditions {
            let _ = writeln!(out, "  {}={} {}: {}", c.type_, c.status, c.reason, c.message);
        }
        out.push_str("members:\n");
        for m in &s.members {
            let _ = writeln!(
                out,
                "  {} id={} learner={} leader={} healthy={}",
                m.name, m.id, m.learner, m.leader, m.healthy
            );
        }
    }
    out
}

/// `/metrics` of the running operator, by plain HTTP to its pod IP.
pub async fn operator_metrics(kit: &Kit) -> String {
    let ops: Api<Pod> = Api::namespaced(kit.client.clone(), OPERATOR_NS);
    let lp = ListParams::default().labels("app.kubernetes.io/name=etcd-pilot");
    // The replica that acts: the one holding the leader-election Lease.
    let holder = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(kit.client.clone(), OPERATOR_NS)
        .get_opt(LEASE)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec.and_then(|s| s.holder_identity));
    let ip = ops
        .list(&lp)
        .await
        .expect("operator pods")
        .items
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && Some(p.name_any()) == holder)
        .find_map(|p| p.status.as_ref().and_then(|s| s.pod_ip.clone()));
    // No running leader (one is taking over): no metrics yet.
    let Some(ip) = ip else { return String::new() };
    http_get(&ip, 8080, "/metrics").await
}

/// A plain-HTTP GET from the host (pod IPs are reachable from it); empty on failure.
pub async fn http_get(ip: &str, port: i32, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut conn) = tokio::net::TcpStream::connect(format!("{ip}:{port}")).await else { return String::new() };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {ip}\r\nConnection: close\r\n\r\n");
    if conn.write_all(request.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut body = String::new();
    let _ = conn.read_to_string(&mut body).await;
    body
}

/// `reason: message` of every Event about the cluster, oldest first.
pub async fn events(kit: &Kit, ns: &str, name: &str) -> Vec<String> {
    let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
    let mut list =
        Api::<Event>::namespaced(kit.client.clone(), ns).list(&lp).await.map(|l| l.items).unwrap_or_default();
    // Events written as events.k8s.io/v1 carry a time in microseconds; creation times
    // are whole seconds.
    list.sort_by_key(|e| {
        (
            e.event_time.clone().map(|t| t.0).or_else(|| e.metadata.creation_timestamp.clone().map(|t| t.0)),
            e.metadata.resource_version.clone().and_then(|v| v.parse::<u64>().ok()),
        )
    });
    list.iter()
        .map(|e| {
            format!(
                "{} {}: {}",
                e.type_.clone().unwrap_or_default(),
                e.reason.clone().unwrap_or_default(),
                e.message.clone().unwrap_or_default()
            )
        })
        .collect()
}

/// The member of etcd's list that is `name`, by its peer URL (`https://<name>.<peers>...`):
/// a member that joined as a learner has no name in etcd until it has published it, which
/// may come a moment after it is healthy.
pub fn member_named<'a>(members: &'a [etcd_client::Member], name: &str) -> Option<&'a etcd_client::Member> {
    let prefix = format!("https://{name}.");
    members.iter().find(|m| m.name() == name || m.peer_urls().iter().any(|u| u.starts_with(&prefix)))
}

/// A client of the cluster through its client Service, with the operator-issued
/// client certificate.
pub async fn etcd(kit: &Kit, ns: &str, name: &str) -> Client {
    etcd_with(kit, ns, name, &format!("{name}-client-tls")).await
}

pub async fn etcd_with(kit: &Kit, ns: &str, name: &str, client_secret: &str) -> Client {
    // The Service answers once kube-proxy has the ready members as endpoints, a moment
    // after the pods turn ready.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let answer = match service_client(&kit.client, ns, name, client_secret).await {
            Ok(mut c) => c.get("probe", None).await.map(|_| c).map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match answer {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("connect to {ns}/{name}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// A client through the cluster's client Service with the certificates a client Secret
/// holds now.
async fn service_client(kube: &kube::Client, ns: &str, name: &str, client_secret: &str) -> Result<Client, String> {
    let secret = Api::<Secret>::namespaced(kube.clone(), ns).get(client_secret).await.map_err(|e| e.to_string())?;
    let data = secret.data.ok_or("client Secret without data")?;
    let pem = |k: &str| data.get(k).map(|b| b.0.clone()).ok_or(format!("client Secret without {k}"));
    let svc =
        Api::<Service>::namespaced(kube.clone(), ns).get(&format!("{name}-client")).await.map_err(|e| e.to_string())?;
    let ip = svc.spec.and_then(|s| s.cluster_ip).ok_or("client Service without ClusterIP")?;
    let tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(pem("ca.crt")?))
        .identity(Identity::from_pem(pem("tls.crt")?, pem("tls.key")?))
        .domain_name(format!("{name}-client.{ns}.svc"));
    let opts = ConnectOptions::new()
        .with_tls(tls)
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(5))
        // A connection to a member that vanished without a word (a lost node) is given
        // up on and made again, through the Service, to a member that answers.
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(3))
        .with_keep_alive_while_idle(true);
    Client::connect([format!("https://{ip}:2379")], Some(opts)).await.map_err(|e| e.to_string())
}

/// A client of one member alone, at its pod IP (checked under the member's own DNS name),
/// with the cluster's client Secret.
pub async fn member_etcd(kit: &Kit, ns: &str, cluster: &str, member: &str) -> Client {
    let secret = Api::<Secret>::namespaced(kit.client.clone(), ns)
        .get(&format!("{cluster}-client-tls"))
        .await
        .expect("client Secret");
    let data = secret.data.expect("client Secret data");
    let pem = |k: &str| data.get(k).map(|b| b.0.clone()).unwrap_or_else(|| panic!("client Secret without {k}"));
    let pod = Api::<Pod>::namespaced(kit.client.clone(), ns).get(member).await.expect("member pod");
    let ip = pod.status.and_then(|s| s.pod_ip).expect("pod IP");
    let tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(pem("ca.crt")))
        .identity(Identity::from_pem(pem("tls.crt"), pem("tls.key")))
        .domain_name(format!("{member}.{cluster}-peers.{ns}.svc"));
    let opts = ConnectOptions::new()
        .with_tls(tls)
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(30));
    Client::connect([format!("https://{ip}:2379")], Some(opts)).await.expect("connect to the member")
}

/// A client of one Stacked member at its node's address (`https://<node IP>:2379`, where
/// the node's kube-apiserver reaches it), the server certificate checked for that
/// address.
pub async fn node_address_etcd(kit: &Kit, ns: &str, cluster: &str, node_ip: &str) -> Result<Client, String> {
    let secret = Api::<Secret>::namespaced(kit.client.clone(), ns)
        .get(&format!("{cluster}-client-tls"))
        .await
        .map_err(|e| e.to_string())?;
    let data = secret.data.ok_or("client Secret without data")?;
    let pem = |k: &str| data.get(k).map(|b| b.0.clone()).ok_or(format!("client Secret without {k}"));
    let tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(pem("ca.crt")?))
        .identity(Identity::from_pem(pem("tls.crt")?, pem("tls.key")?))
        .domain_name(node_ip.to_string());
    let opts = ConnectOptions::new()
        .with_tls(tls)
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(10));
    Client::connect([format!("https://{node_ip}:2379")], Some(opts)).await.map_err(|e| e.to_string())
}

/// One attempt at a client of the cluster with its client Secret as it is now (after a
/// CA rotation, the certificates of the moment), `None` when it does not answer.
pub async fn connect_once(kube: &kube::Client, ns: &str, name: &str) -> Option<Client> {
    service_client(kube, ns, name, &format!("{name}-client-tls")).await.ok()
}

pub fn nodes_of(pods: &[Pod]) -> BTreeSet<String> {
    pods.iter().filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone())).collect()
}

/// The operator's count of finished passes over one cluster (from its `/metrics`).
pub async fn passes(kit: &Kit, ns: &str, name: &str) -> u64 {
    let text = operator_metrics(kit).await;
    let series = format!("etcdpilot_reconcile_duration_seconds_count{{namespace=\"{ns}\",cluster=\"{name}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&series)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// Waits until the operator has finished `n` more passes over the cluster: "nothing
/// happened" is asserted after passes that could have acted, not after a fixed sleep.
pub async fn wait_passes(kit: &Kit, ns: &str, name: &str, n: u64) {
    // Counted as increments, so an operator that restarts (its counters from 0) or is
    // briefly away (no running pod) is no miscount.
    let mut last = passes(kit, ns, name).await;
    let mut seen = 0;
    let deadline = Instant::now() + WAIT;
    while seen < n {
        assert!(Instant::now() < deadline, "the operator made fewer than {n} passes over {ns}/{name}");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = passes(kit, ns, name).await;
        seen += if now >= last { now - last } else { now };
        last = now;
    }
}

/// The testbed's S3 as pods reach it, objects under `prefix`, with credentials from the
/// Secret `secret` (see [`s3_secret`]).
pub fn s3_target(prefix: &str, secret: &str) -> Value {
    use crate::layout::{CLUSTER_DOMAIN, S3_BUCKET, S3_SERVICE_PORT, TESTBED_NAMESPACE};
    json!({
        "bucket": S3_BUCKET,
        "prefix": prefix,
        "endpoint": format!("http://s3.{TESTBED_NAMESPACE}.svc.{CLUSTER_DOMAIN}:{S3_SERVICE_PORT}"),
        "credentialsSecret": {"name": secret},
        "partSizeMib": 5,
    })
}

/// A Secret with S3 keys under the default key names.
pub async fn s3_secret(kit: &Kit, ns: &str, name: &str, access_key: &str, secret_key: &str) {
    let _: Secret = kit
        .create(
            ns,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                   "stringData": {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}}),
        )
        .await;
}

/// The file that holds an object of the testbed's bucket (s3s-fs keeps objects as
/// files): read straight from disk, independently of any S3 code.
pub fn s3_object_file(kit: &Kit, key: &str) -> std::path::PathBuf {
    kit.state.dir.join("s3").join(crate::layout::S3_BUCKET).join(key)
}

/// Keys of every object under `prefix` in the testbed's bucket, from disk.
pub fn s3_objects(kit: &Kit, prefix: &str) -> Vec<String> {
    let root = kit.state.dir.join("s3").join(crate::layout::S3_BUCKET);
    let mut out = Vec::new();
    let mut stack = vec![root.join(prefix)];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(rel) = p.strip_prefix(&root) {
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// Waits until the EtcdBackup is Succeeded or Failed.
pub async fn wait_backup(kit: &Kit, ns: &str, name: &str, within: Duration) -> etcd_pilot::api::EtcdBackup {
    let api: Api<etcd_pilot::api::EtcdBackup> = Api::namespaced(kit.client.clone(), ns);
    let deadline = Instant::now() + within;
    loop {
        if let Ok(b) = api.get(name).await
            && b.status.as_ref().is_some_and(|s| s.phase.is_finished())
        {
            return b;
        }
        assert!(
            Instant::now() < deadline,
            "backup {ns}/{name} did not finish: {:?}",
            api.get(name).await.ok().and_then(|b| b.status)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The /proc entry of the operator replica holding the Lease (its pod name is in its
/// environment): the testbed's pods are processes of this machine.
pub async fn operator_proc(kit: &Kit) -> Option<std::path::PathBuf> {
    let lease = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(kit.client.clone(), OPERATOR_NS)
        .get(LEASE)
        .await
        .ok()?;
    let holder = format!("POD_NAME={}", lease.spec?.holder_identity?);
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.len() > 1 && args[0].ends_with(b"etcd-pilot") && args[1] == b"run" {
            let env = std::fs::read(entry.path().join("environ")).unwrap_or_default();
            if env.split(|b| *b == 0).any(|v| v == holder.as_bytes()) {
                return Some(entry.path());
            }
        }
    }
    None
}

/// RSS and peak RSS (MiB) of the leading operator.
pub async fn operator_memory(kit: &Kit) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(operator_proc(kit).await?.join("status")).ok()?;
    let kb = |key: &str| -> Option<f64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(1)?.parse::<f64>().ok()
    };
    Some((kb("VmRSS:")? / 1024.0, kb("VmHWM:")? / 1024.0))
}

/// CPU seconds (user + system) the leading operator has used.
pub async fn operator_cpu_seconds(kit: &Kit) -> Option<f64> {
    let stat = std::fs::read_to_string(operator_proc(kit).await?.join("stat")).ok()?;
    // Fields after the command name (which is in parentheses): utime is the 14th field.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

/// Waits until an Event about `name` satisfies `pred`; returns every Event then.
pub async fn wait_event(kit: &Kit, ns: &str, name: &str, pred: impl Fn(&str) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ev = events(kit, ns, name).await;
        if ev.iter().any(|e| pred(e)) {
            return ev;
        }
        assert!(Instant::now() < deadline, "no such Event about {ns}/{name}: {ev:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Waits until the cluster's `status.lastBackup` satisfies `pred`.
pub async fn wait_last_backup(
    kit: &Kit,
    ns: &str,
    name: &str,
    pred: impl Fn(Option<&etcd_pilot::api::cluster::BackupRef>) -> bool,
) -> Option<etcd_pilot::api::cluster::BackupRef> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = clusters(kit, ns).get(name).await.expect("cluster").status.and_then(|s| s.last_backup);
        if pred(last.as_ref()) {
            return last;
        }
        assert!(Instant::now() < deadline, "{ns}/{name}: status.lastBackup is {last:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// etcdctl's TLS flags (`--cacert`, `--cert`, `--key`) for a client certificate Secret,
/// its files written into `dir`.
pub fn etcdctl_tls_args(dir: &std::path::Path, secret: &Secret) -> Vec<String> {
    let data = secret.data.clone().expect("secret data");
    let mut args = Vec::new();
    for (key, flag) in [("ca.crt", "--cacert"), ("tls.crt", "--cert"), ("tls.key", "--key")] {
        let path = dir.join(key);
        std::fs::write(&path, &data[key].0).expect("write cert");
        args.push(format!("{flag}={}", path.display()));
    }
    args
}

/// Polls `check` every half second until it gives a value; panics naming `what` after
/// `within`.
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "waited {within:?} for {what}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Restores `source` (an EtcdRestore's `spec.source`) into a new 1-member 3.5.30 cluster
/// `name`; its status once finished.
pub async fn restore_new_cluster(kit: &Kit, ns: &str, name: &str, source: Value) -> etcd_pilot::api::EtcdRestoreStatus {
    let _: etcd_pilot::api::EtcdRestore = kit
        .create(
            ns,
            json!({"apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdRestore", "metadata": {"name": name},
                   "spec": {"source": source, "mode": "NewCluster", "clusterName": name,
                            "newCluster": {"size": 1, "version": "3.5.30"}}}),
        )
        .await;
    let api: Api<etcd_pilot::api::EtcdRestore> = Api::namespaced(kit.client.clone(), ns);
    wait_for(&format!("restore {name}"), WAIT, || async {
        api.get(name).await.ok()?.status.filter(|s| s.phase.is_finished())
    })
    .await
}
