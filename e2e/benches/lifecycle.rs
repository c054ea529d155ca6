//! Lifecycle benchmarks on the testbed, with etcd-pilot installed from the chart:
//! apply -> Available for 1, 3 and 5 members; pod + PVC deletion of a settled cluster's
//! follower -> 3 healthy voters in etcd again (and apart: -> its pod object gone); the operator's memory idle and while it manages 3 clusters; the cost per
//! cluster (RSS and idle CPU with `BENCH_SCALE_CLUSTERS`, default 100, idle clusters of
//! one member). Prints a Markdown
//! table (recorded into docs/benchmarks.md by `make bench`). Figures, not assertions.

use std::time::{Duration, Instant};

use etcd_pilot::api::EtcdCluster;
use etcd_pilot_e2e::fixtures::{operator_cpu_seconds, operator_memory, operator_proc};
use etcd_pilot_e2e::kit::{Kit, OPERATOR_NS};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

const RUNS: usize = 3;

fn manifest(name: &str, size: i32) -> EtcdCluster {
    serde_json::from_value(json!({
        "apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdCluster",
        "metadata": {"name": name},
        "spec": {"size": size, "version": "3.5.30", "storage": {"retention": {"whenDeleted": "Delete"}}},
    }))
    .expect("manifest")
}

/// Available, `n` healthy voters, nothing else.
fn ready(ec: &EtcdCluster, n: usize) -> bool {
    let Some(s) = &ec.status else { return false };
    s.conditions.iter().any(|c| c.type_ == "Available" && c.status == "True")
        && s.ready_members as usize == n
        && s.members.len() == n
        && s.members.iter().all(|m| m.healthy && !m.learner && !m.id.is_empty())
}

async fn wait_ready(api: &Api<EtcdCluster>, name: &str, n: usize, not_before: Option<&str>) -> Duration {
    let start = Instant::now();
    loop {
        if let Ok(ec) = api.get(name).await
            && ready(&ec, n)
            && not_before
                .is_none_or(|gone| ec.status.as_ref().is_some_and(|s| s.members.iter().all(|m| m.name != gone)))
        {
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(300), "{name} not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Available, `n` healthy voters in etcd (the members the status lists with an etcd
/// id; a pod etcd no longer has is listed apart, without one), `gone` not among them.
fn healed(ec: &EtcdCluster, n: usize, gone: &str) -> bool {
    let Some(s) = &ec.status else { return false };
    let voters: Vec<_> = s.members.iter().filter(|m| !m.id.is_empty()).collect();
    s.conditions.iter().any(|c| c.type_ == "Available" && c.status == "True")
        && voters.len() == n
        && voters.iter().all(|m| m.healthy && !m.learner && m.name != gone)
}

async fn wait_healed(api: &Api<EtcdCluster>, name: &str, n: usize, gone: &str) {
    let start = Instant::now();
    while !api.get(name).await.is_ok_and(|ec| healed(&ec, n, gone)) {
        assert!(start.elapsed() < Duration::from_secs(300), "{name} not healed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How long a cluster stays ready before a heal is timed.
const SETTLED: Duration = Duration::from_secs(10);

/// Waits until the cluster has been ready (`n` healthy voters) for `settled` on end.
async fn wait_settled(api: &Api<EtcdCluster>, name: &str, n: usize, settled: Duration) {
    let start = Instant::now();
    let mut since: Option<Instant> = None;
    loop {
        let up = api.get(name).await.is_ok_and(|ec| ready(&ec, n));
        since = if up { since.or(Some(Instant::now())) } else { None };
        if since.is_some_and(|s| s.elapsed() >= settled) {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(300), "{name} did not settle");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn median(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

async fn fresh_operator(kit: &Kit) {
    // Restart it, so the idle figure is not what an earlier run left behind.
    let pods: Api<Pod> = Api::namespaced(kit.client.clone(), OPERATOR_NS);
    for p in pods.list(&Default::default()).await.expect("operator pods").items {
        let _ = pods.delete(&p.name_any(), &DeleteParams::default()).await;
    }
    let start = Instant::now();
    loop {
        let list = pods.list(&Default::default()).await.expect("operator pods").items;
        let ready = list.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).any(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        });
        let running = list.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).count();
        if ready && running == list.len() && operator_proc(kit).await.is_some() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(120), "operator not back");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::main]
async fn main() {
    etcd_pilot::install_crypto_provider();
    let kit = Kit::connect().await;
    kit.install_operator();
    fresh_operator(&kit).await;
    let mut rows =
        vec!["| Measure | Min | Median | Max | Runs | Target |".to_string(), "|---|---|---|---|---|---|".to_string()];

    // Idle operator: leading, no cluster, after it settled.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let idle = operator_memory(&kit).await;

    for size in [1, 3, 5] {
        let mut times = Vec::new();
        for run in 0..RUNS {
            let ns = kit.namespace(&format!("bench-create-{size}")).await;
            let api: Api<EtcdCluster> = Api::namespaced(kit.client.clone(), &ns);
            let start = Instant::now();
            api.create(&PostParams::default(), &manifest("main", size)).await.expect("create");
            wait_ready(&api, "main", size as usize, None).await;
            times.push(start.elapsed());
            eprintln!("apply -> Available, {size} members, run {run}: {:?}", start.elapsed());
            kit.delete_namespace_and_wait(&ns).await;
        }
        let (min, med, max) = median(times);
        let target = if size == 3 { "< 30 s" } else { "" };
        rows.push(format!(
            "| apply -> Available, {size} member(s) | {} | {} | {} | {RUNS} | {target} |",
            secs(min),
            secs(med),
            secs(max)
        ));
    }

    // Heal: delete a member's pod and PVC; time until etcd has 3 healthy voters, the
    // lost one removed and replaced; and, apart, until its pod object is gone too (the
    // kubelet's cleanup of a deleted pod, which the status lists as "not a member"
    // meanwhile and nothing waits for).
    let ns = kit.namespace("bench-heal").await;
    let api: Api<EtcdCluster> = Api::namespaced(kit.client.clone(), &ns);
    api.create(&PostParams::default(), &manifest("main", 3)).await.expect("create");
    wait_ready(&api, "main", 3, None).await;
    let pods: Api<Pod> = Api::namespaced(kit.client.clone(), &ns);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(kit.client.clone(), &ns);
    let mut times = Vec::new();
    let mut cleaned = Vec::new();
    for run in 0..RUNS {
        // A member lost from a settled cluster, as users lose them: etcd refuses any
        // membership change within 5 s of a member connecting, which a heal started
        // right after the cluster formed (or after the last heal) would wait out.
        wait_settled(&api, "main", 3, SETTLED).await;
        let ec = api.get("main").await.expect("get");
        let victim = ec.status.and_then(|s| s.members.into_iter().find(|m| !m.leader)).expect("a follower").name;
        let start = Instant::now();
        pvcs.delete(&format!("data-{victim}"), &DeleteParams::default()).await.expect("delete PVC");
        pods.delete(&victim, &DeleteParams::default()).await.expect("delete pod");
        wait_healed(&api, "main", 3, &victim).await;
        times.push(start.elapsed());
        eprintln!("pod + PVC deleted -> 3 healthy voters, run {run}: {:?}", start.elapsed());
        wait_ready(&api, "main", 3, Some(&victim)).await;
        cleaned.push(start.elapsed());
        eprintln!("pod + PVC deleted -> its pod object gone too, run {run}: {:?}", start.elapsed());
    }
    let (min, med, max) = median(times);
    rows.push(format!(
        "| pod + PVC deleted -> 3 healthy voters (the lost one removed) | {} | {} | {} | {RUNS} | median < 10 s |",
        secs(min),
        secs(med),
        secs(max)
    ));
    let (min, med, max) = median(cleaned);
    rows.push(format!(
        "| ... and the lost member's pod object gone | {} | {} | {} | {RUNS} | |",
        secs(min),
        secs(med),
        secs(max)
    ));
    kit.delete_namespace_and_wait(&ns).await;

    // Memory while managing 3 clusters of 3, after they settled.
    let mut spaces = Vec::new();
    for i in 0..3 {
        let ns = kit.namespace(&format!("bench-mem-{i}")).await;
        let api: Api<EtcdCluster> = Api::namespaced(kit.client.clone(), &ns);
        api.create(&PostParams::default(), &manifest("main", 3)).await.expect("create");
        spaces.push((ns, api));
    }
    for (_, api) in &spaces {
        wait_ready(api, "main", 3, None).await;
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    let busy = operator_memory(&kit).await;
    for (ns, _) in &spaces {
        kit.delete_namespace_and_wait(ns).await;
    }
    let mib = |m: Option<(f64, f64)>| {
        m.map_or(("?".to_string(), "?".to_string()), |(r, p)| (format!("{r:.1} MiB"), format!("{p:.1} MiB")))
    };
    let (idle_rss, _) = mib(idle);
    let (busy_rss, busy_peak) = mib(busy);
    rows.push(format!("| operator RSS, idle (leading, no cluster) | | {idle_rss} | | 1 | < 30 MiB |"));
    rows.push(format!("| operator RSS, managing 3 clusters of 3 (after 60 s) | | {busy_rss} | | 1 | < 30 MiB |"));
    rows.push(format!("| operator peak RSS since start (whole run) | | {busy_peak} | | 1 | |"));

    // Cost per cluster: many idle clusters of one member.
    let n: usize = std::env::var("BENCH_SCALE_CLUSTERS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let ns = kit.namespace("bench-scale").await;
    let api: Api<EtcdCluster> = Api::namespaced(kit.client.clone(), &ns);
    let start = Instant::now();
    // Small explicit requests: the testbed's three workers have 2 CPUs each, and a member
    // asks for 100m by default.
    for i in 0..n {
        let mut ec = manifest(&format!("c{i}"), 1);
        ec.spec.resources = serde_json::from_value(json!({"requests": {"cpu": "10m", "memory": "32Mi"}})).ok();
        api.create(&PostParams::default(), &ec).await.expect("create");
    }
    loop {
        let list = api.list(&Default::default()).await.expect("list").items;
        let up = list.iter().filter(|ec| ready(ec, 1)).count();
        if up == n {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(900), "{up} of {n} clusters Available after 15 minutes");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let created_in = start.elapsed();
    eprintln!("{n} clusters of 1 Available in {created_in:?}");
    // Settle, then measure 120 s of idle (one idle pass per cluster without schedules).
    tokio::time::sleep(Duration::from_secs(30)).await;
    let cpu0 = operator_cpu_seconds(&kit).await;
    tokio::time::sleep(Duration::from_secs(120)).await;
    let cpu1 = operator_cpu_seconds(&kit).await;
    let scale_mem = operator_memory(&kit).await;
    kit.delete_namespace(&ns).await;
    let (scale_rss, _) = mib(scale_mem);
    let cpu = match (cpu0, cpu1) {
        (Some(a), Some(b)) => format!("{:.2}% of a core", (b - a) / 120.0 * 100.0),
        _ => "?".into(),
    };
    rows.push(format!("| {n} idle clusters of 1 Available (from the first apply) | | {} | | 1 | |", secs(created_in)));
    rows.push(format!("| operator RSS, {n} idle clusters of 1 | | {scale_rss} | | 1 | < 40 MiB at 100 |"));
    rows.push(format!("| operator CPU, {n} idle clusters of 1 (120 s) | | {cpu} | | 1 | < 1% of a core at 100 |"));
    println!("{}", rows.join("\n"));
}
