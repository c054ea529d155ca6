//! Maintenance figures on the testbed, side by side with the plain tool in one run:
//! - defragmentation of a 3-member cluster whose members each hold the same fragmented
//!   db: how long each member is blocked by etcd-pilot's defragmentation vs by
//!   `etcdctl defrag` of that member (in member-list order, what `--cluster` does), and
//!   the longest write latency seen by clients of each member: of the member being
//!   defragmented (it serves nothing meanwhile, whoever orders the round) and of the
//!   other members meanwhile (what the leader-last order with leadership moved away
//!   protects: a blocked leader stalls every member's writes);
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

/// Puts a small key every 10 ms through one client and records when each write started
/// and how long it took.
struct Probe {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<(Instant, Duration)>>,
}

impl Probe {
    async fn start(mut c: Client) -> Probe {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut writes = Vec::new();
            let mut n = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let t = Instant::now();
                let _ = c.put("probe", format!("{n}"), None).await;
                writes.push((t, t.elapsed()));
                n += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            writes
        });
        Probe { stop, task }
    }

    async fn finish(self) -> Vec<(Instant, Duration)> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("probe")
    }
}

/// One probe per member, each writing through that member alone.
async fn probes(kit: &Kit, ns: &str) -> Vec<Probe> {
    let mut out = Vec::new();
    for m in ["main-0", "main-1", "main-2"] {
        out.push(Probe::start(member_etcd(kit, ns, "main", m).await).await);
    }
    out
}

/// From one probe per member, over a round that defragmented each member once: the
/// longest write of each member's own client (its defragmentation: while it copies its
/// db it answers nothing), and the longest write of any other member's client that was
/// under way during it.
async fn latencies(probes: Vec<Probe>) -> (Duration, Duration) {
    let mut runs = Vec::new();
    for p in probes {
        runs.push(p.finish().await);
    }
    let longest = |w: &[(Instant, Duration)]| w.iter().copied().max_by_key(|(_, d)| *d);
    let mut own = Duration::ZERO;
    let mut others = Duration::ZERO;
    for (i, run) in runs.iter().enumerate() {
        let Some((start, took)) = longest(run) else { continue };
        own = own.max(took);
        let end = start + took;
        for (j, other) in runs.iter().enumerate() {
            if i != j {
                let overlapping = other.iter().filter(|(s, d)| *s < end && *s + *d > start);
                others = others.max(overlapping.map(|(_, d)| *d).max().unwrap_or_default());
            }
        }
    }
    (own, others)
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
    let probe = probes(kit, &ns).await;
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
    let (pilot_own, pilot_others) = latencies(probe).await;
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
    let probe = probes(kit, &ns).await;
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
    let (ctl_own, ctl_others) = latencies(probe).await;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (p, c) = (mean(&pilot_blocked), mean(&ctl_blocked));
    rows.push(format!(
        "| member blocked by one defragmentation, {db_mib:.0} MiB db file half in use, mean of 3 (etcd-pilot: the call; etcdctl: its run) | {p:.2} s ({}) | {c:.2} s ({}) | {:.2}x | <= 1.1x |",
        pilot_blocked.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(", "),
        ctl_blocked.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(", "),
        p / c
    ));
    rows.push(format!(
        "| longest write latency of a client of the member being defragmented (a client per member, writing through it alone) | {:.2} s | {:.2} s | {:.2}x | |",
        secs(pilot_own),
        secs(ctl_own),
        secs(pilot_own) / secs(ctl_own)
    ));
    rows.push(format!(
        "| longest write latency of the other members' clients meanwhile (etcd-pilot: leader last after moving leadership; etcdctl: member-list order, the leader wherever it falls) | {:.2} s | {:.2} s | {:.2}x | well under etcdctl's |",
        secs(pilot_others),
        secs(ctl_others),
        secs(pilot_others) / secs(ctl_others).max(0.001)
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
    create_cluster(kit, &ns, cluster_manifest("main", 3, "3.5.30", spec)).await;
    wait_ready(kit, &ns, "main", 3).await;
    // A calm cluster: its first idle pass done and the next one far off, as a cluster
    // that fills from empty in seconds would find it.
    wait_passes(kit, &ns, "main", 2).await;
    let mut c = etcd(kit, &ns, "main").await;
    // From the first write etcd refuses (this probe's clock) to the first it accepts.
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
        "| NOSPACE, 256 MiB quota filled from empty on a calm cluster, 3 members: the first write refused -> the first accepted, no one acting (of which raised -> detected {detected_after:.1} s, detected -> writable {detected_to_writable:.1} s; largest db {:.0} -> {:.0} MiB) vs the etcdctl sequence typed without pause (compact, defrag x3, disarm) | {:.1} s | {:.1} s | {:.2}x | < 60 s |",
        r.db_size_before as f64 / MIB,
        r.db_size_after.unwrap_or(0) as f64 / MIB,
        secs(writable),
        secs(by_hand),
        secs(writable) / secs(by_hand)
    ));
    kit.delete_namespace(&ns).await;
}
