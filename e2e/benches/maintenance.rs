//! Maintenance figures on the testbed, side by side with the plain tool in one run:
//! - defragmentation of a 3-member cluster whose members each hold the same fragmented
//!   db: how long each member is blocked by etcd-pilot's defragmentation vs by
//!   `etcdctl defrag` of that member (in member-list order, what `--cluster` does), and
//!   the longest write latency a client saw during each;
//! - NOSPACE with a 256 MiB quota: alarm raised -> detected -> writable again, without
//!   anyone acting.
//!
//! Prints a markdown table on stdout (`make bench` puts it into docs/benchmarks.md).

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use etcd_client::{Client, CompactionOptions};
use etcd_pilot::api::EtcdCluster;
use etcd_pilot_e2e::fixtures::*;
use etcd_pilot_e2e::kit::Kit;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::Api;
use serde_json::json;

const MIB: f64 = 1024.0 * 1024.0;

/// Writes `mib` MiB under `prefix` (4 writers, 256 KiB values), deletes every other key
/// and compacts: every member's db file keeps its size with half of it in use, so a
/// defragmentation has `mib / 2` MiB to copy.
async fn fragment(kit: &Kit, ns: &str, prefix: &str, mib: usize) {
    let value = vec![b'f'; 256 * 1024];
    let mut tasks = Vec::new();
    for w in 0..4 {
        let mut c = etcd(kit, ns, "main").await;
        let (value, prefix) = (value.clone(), prefix.to_string());
        tasks.push(tokio::spawn(async move {
            for i in (w..mib * 4).step_by(4) {
                c.put(format!("{prefix}{i:06}"), value.clone(), None).await.expect("put");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let mut c = etcd(kit, ns, "main").await;
    for i in (0..mib * 4).step_by(2) {
        c.delete(format!("{prefix}{i:06}"), None).await.expect("delete");
    }
    let rev = c.get("x", None).await.expect("get").header().expect("header").revision();
    c.compact(rev, Some(CompactionOptions::new().with_physical())).await.expect("compact");
    // bbolt returns freed pages to its freelist at a later commit.
    for i in 0..5 {
        c.put("settle", format!("{i}"), None).await.expect("put");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Puts a small key every 10 ms through the client Service and keeps the longest latency.
struct Probe {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(Duration, usize)>,
}

impl Probe {
    async fn start(mut c: Client) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let (mut worst, mut n) = (Duration::ZERO, 0);
            while !flag.load(Ordering::Relaxed) {
                let t = Instant::now();
                let _ = c.put("probe", format!("{n}"), None).await;
                worst = worst.max(t.elapsed());
                n += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (worst, n)
        });
        Probe { stop, task }
    }

    async fn finish(self) -> Duration {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("probe").0
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[tokio::main]
async fn main() {
    etcd_pilot::install_crypto_provider();
    let kit = Kit::connect().await;
    kit.install_operator();
    let mut rows = vec![
        "| what | etcd-pilot | plain tool, same run | ratio | target |".to_string(),
        "|---|---|---|---|---|".to_string(),
    ];
    defrag(&kit, &mut rows).await;
    nospace(&kit, &mut rows).await;
    for r in rows {
        println!("{r}");
    }
}

async fn defrag(kit: &Kit, rows: &mut Vec<String>) {
    let ns = kit.namespace("bench-defrag").await;
    let mib: usize = std::env::var("BENCH_DEFRAG_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let spec = json!({"etcd": {"quotaBackendBytes": 4294967296u64}, "storage": {"size": "8Gi"},
                      "defrag": {"enabled": false, "fragmentationThresholdPercent": 40, "minDbSizeBytes": 4194304}});
    create_cluster(kit, &ns, cluster_manifest("main", 3, "3.4.23", spec)).await;
    wait_ready(kit, &ns, "main", 3).await;

    // etcd-pilot: defragmentation turned on over a fragmented cluster.
    fragment(kit, &ns, "frag-a/", mib).await;
    let before: EtcdCluster = clusters(kit, &ns).get("main").await.expect("cluster");
    let db_mib =
        before.status.iter().flat_map(|s| &s.members).filter_map(|m| m.db_size).max().unwrap_or(0) as f64 / MIB;
    let probe = Probe::start(etcd(kit, &ns, "main").await).await;
    let t = Instant::now();
    patch_spec(kit, &ns, "main", json!({"defrag": {"enabled": true}})).await;
    let done = loop {
        let ec = clusters(kit, &ns).get("main").await.expect("cluster");
        if ec.status.iter().flat_map(|s| &s.members).filter(|m| m.last_defragmentation.is_some()).count() == 3 {
            break ec;
        }
        assert!(t.elapsed() < Duration::from_secs(600), "defragmentation did not finish");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let round = t.elapsed();
    let pilot_worst = probe.finish().await;
    let pilot_blocked: Vec<f64> = done
        .status
        .iter()
        .flat_map(|s| &s.members)
        .filter_map(|m| m.last_defragmentation.as_ref().map(|d| d.blocked_millis as f64 / 1000.0))
        .collect();

    // The plain tool: the cluster paused, fragmented again alike, `etcdctl defrag` of each
    // member in member-list order (the leader wherever it falls), timed per member.
    patch_spec(kit, &ns, "main", json!({"paused": true})).await;
    // The same shape of db: the first round's data gone, the second's half in use.
    let mut c = etcd(kit, &ns, "main").await;
    c.delete("frag-a/", Some(etcd_client::DeleteOptions::new().with_prefix())).await.expect("delete");
    fragment(kit, &ns, "frag-b/", mib).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let secret = Api::<Secret>::namespaced(kit.client.clone(), &ns).get("main-client-tls").await.expect("secret");
    let tls = etcdctl_tls_args(tmp.path(), &secret);
    let pods: Api<Pod> = Api::namespaced(kit.client.clone(), &ns);
    let mut ctl_blocked = Vec::new();
    let probe = Probe::start(etcd(kit, &ns, "main").await).await;
    for name in ["main-0", "main-1", "main-2"] {
        let ip = pods.get(name).await.expect("pod").status.and_then(|s| s.pod_ip).expect("pod IP");
        let t = Instant::now();
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints=https://{ip}:2379"))
            .args(&tls)
            .args(["--insecure-skip-tls-verify", "--command-timeout=300s", "defrag"])
            .output()
            .expect("etcdctl");
        assert!(out.status.success(), "etcdctl defrag: {}", String::from_utf8_lossy(&out.stderr));
        ctl_blocked.push(secs(t.elapsed()));
    }
    let ctl_worst = probe.finish().await;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (p, c) = (mean(&pilot_blocked), mean(&ctl_blocked));
    rows.push(format!(
        "| member blocked by one defragmentation, {db_mib:.0} MiB db file half in use, mean of 3 (etcd-pilot: the call; etcdctl: its run) | {p:.2} s ({}) | {c:.2} s ({}) | {:.2}x | <= 1.1x |",
        pilot_blocked.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(", "),
        ctl_blocked.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(", "),
        p / c
    ));
    rows.push(format!(
        "| longest write latency a client saw while all 3 members were defragmented (etcd-pilot: leader last after moving leadership; etcdctl: member-list order) | {:.2} s | {:.2} s | {:.2}x | well under etcdctl's |",
        secs(pilot_worst),
        secs(ctl_worst),
        secs(pilot_worst) / secs(ctl_worst)
    ));
    rows.push(format!(
        "| whole round by etcd-pilot (turned on -> 3 members done, settle times included) | {:.1} s | {:.1} s | | |",
        secs(round),
        ctl_blocked.iter().sum::<f64>()
    ));
    kit.delete_namespace(&ns).await;
}

/// Overwrites 64 keys with 512 KiB values until etcd refuses; returns when it did.
async fn fill_to_nospace(c: &mut Client) -> jiff::Timestamp {
    let value = vec![b'n'; 512 * 1024];
    let mut i = 0u64;
    loop {
        match c.put(format!("k/{:02}", i % 64), value.clone(), None).await {
            Ok(_) => {}
            Err(e) if e.to_string().contains("database space exceeded") => return jiff::Timestamp::now(),
            Err(e) => panic!("put: {e}"),
        }
        i += 1;
    }
}

async fn nospace(kit: &Kit, rows: &mut Vec<String>) {
    let ns = kit.namespace("bench-nospace").await;
    let spec = json!({"etcd": {"quotaBackendBytes": 268435456u64}});
    create_cluster(kit, &ns, cluster_manifest("main", 3, "3.4.23", spec)).await;
    wait_ready(kit, &ns, "main", 3).await;
    let mut c = etcd(kit, &ns, "main").await;
    let raised = fill_to_nospace(&mut c).await;
    let t = Instant::now();
    let writable = loop {
        if c.put("after", "ok", None).await.is_ok() {
            break t.elapsed();
        }
        assert!(t.elapsed() < Duration::from_secs(600), "still NOSPACE");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let r = loop {
        let ec: EtcdCluster = clusters(kit, &ns).get("main").await.expect("cluster");
        if let Some(r) = ec.status.and_then(|s| s.maintenance).and_then(|m| m.last_no_space_recovery) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let detected_after = r.detected.0.duration_since(raised).as_secs_f64().max(0.0);
    let detected_to_writable = (secs(writable) - detected_after).max(0.0);

    // The plain tool: the cluster paused, filled again, then what a person types (compact
    // all history, defragment each member, disarm), timed from the first command.
    patch_spec(kit, &ns, "main", json!({"paused": true})).await;
    fill_to_nospace(&mut c).await;
    let tmp = tempfile::tempdir().expect("tmp");
    let secret = Api::<Secret>::namespaced(kit.client.clone(), &ns).get("main-client-tls").await.expect("secret");
    let tls = etcdctl_tls_args(tmp.path(), &secret);
    let pods: Api<Pod> = Api::namespaced(kit.client.clone(), &ns);
    let mut ips = Vec::new();
    for name in ["main-0", "main-1", "main-2"] {
        ips.push(pods.get(name).await.expect("pod").status.and_then(|s| s.pod_ip).expect("pod IP"));
    }
    let ctl = |endpoint: &str, args: &[&str]| {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints=https://{endpoint}:2379"))
            .args(&tls)
            .args(["--insecure-skip-tls-verify", "--command-timeout=300s"])
            .args(args)
            .output()
            .expect("etcdctl");
        assert!(out.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let t = Instant::now();
    let rev = c.get("x", None).await.expect("get").header().expect("header").revision();
    ctl(&ips[0], &["compact", &rev.to_string(), "--physical"]);
    for ip in &ips {
        ctl(ip, &["defrag"]);
    }
    ctl(&ips[0], &["alarm", "disarm"]);
    let by_hand = t.elapsed();
    assert!(c.put("after", "ok", None).await.is_ok(), "writable after the etcdctl sequence");
    rows.push(format!(
        "| NOSPACE, 256 MiB quota, 3 members: detected -> writable again, no one acting (raised -> detected: {detected_after:.1} s; largest db {:.0} -> {:.0} MiB) vs the etcdctl sequence typed without pause (compact, defrag x3, disarm) | {detected_to_writable:.1} s | {:.1} s | {:.2}x | < 60 s |",
        r.db_size_before as f64 / MIB,
        r.db_size_after.unwrap_or(0) as f64 / MIB,
        secs(by_hand),
        detected_to_writable / secs(by_hand)
    ));
    kit.delete_namespace(&ns).await;
}
