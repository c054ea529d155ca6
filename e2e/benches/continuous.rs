//! Continuous backup benchmarks on the testbed (issue 23), with etcd-pilot installed from
//! the chart and the testbed's S3 server, in one run on one 3-member etcd 3.5.30 cluster
//! filled to about `BENCH_FILL_MIB` (default 256) MiB:
//! - etcd write throughput (4 writers of 1 KiB values) with the stream off and on,
//!   alternating, side by side;
//! - the operator's RSS without a stream and while it streams that cluster;
//! - RPO: a writer with a sequence number every 100 ms, then every member and volume
//!   destroyed at once, then a restore to the latest point: the acknowledged writes lost,
//!   as time;
//! - replay: that restore (the base plus about `BENCH_REVISIONS`, default 100000,
//!   revisions) into 3 new members, apply -> Available, beside a restore of the base
//!   alone (no stream) into 3 new members: what replaying costs. No plain etcd tool
//!   replays a change stream; etcdctl's part is the snapshot restore both share.
//!
//! Prints a Markdown table (recorded into docs/benchmarks.md by `make bench`). Figures,
//! not assertions.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use etcd_pilot::api::{EtcdBackupSchedule, EtcdRestore, Phase};
use etcd_pilot_e2e::fixtures::*;
use etcd_pilot_e2e::kit::Kit;
use etcd_pilot_e2e::layout::{S3_ACCESS_KEY, S3_SECRET_KEY};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

async fn continuous(kit: &Kit, ns: &str) -> Option<etcd_pilot::api::schedule::ContinuousStatus> {
    let api: Api<EtcdBackupSchedule> = Api::namespaced(kit.client.clone(), ns);
    api.get("stream").await.ok()?.status?.continuous
}

async fn wait_streaming(kit: &Kit, ns: &str) {
    wait_for("the stream", Duration::from_secs(600), || async {
        (continuous(kit, ns).await?.state.as_deref() == Some("Streaming")).then_some(())
    })
    .await;
}

async fn suspend(kit: &Kit, ns: &str, suspended: bool) {
    let api: Api<EtcdBackupSchedule> = Api::namespaced(kit.client.clone(), ns);
    api.patch("stream", &PatchParams::default(), &Patch::Merge(json!({"spec": {"suspend": suspended}})))
        .await
        .expect("patch the schedule");
}

/// Puts per second of 4 writers of 1 KiB values for `secs`, and the operator's highest RSS.
async fn throughput(kit: &Kit, ns: &str, secs: u64) -> (f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..4 {
        let mut c = etcd(kit, ns, "main").await;
        let (stop, done) = (stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let value = vec![b'v'; 1024];
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                c.put(format!("/registry/configmaps/bench/w{w}-{}", i % 500), value.clone(), None).await.expect("put");
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    let start = Instant::now();
    let mut rss = 0.0f64;
    while start.elapsed() < Duration::from_secs(secs) {
        if let Some((now, _)) = operator_memory(kit).await {
            rss = rss.max(now);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("writer");
    }
    (done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64(), rss)
}

async fn wait_restore(kit: &Kit, ns: &str, name: &str) -> (Duration, etcd_pilot::api::EtcdRestoreStatus) {
    let api: Api<EtcdRestore> = Api::namespaced(kit.client.clone(), ns);
    let start = Instant::now();
    loop {
        if let Ok(r) = api.get(name).await
            && let Some(s) = r.status
            && s.phase.is_finished()
        {
            assert_eq!(s.phase, Phase::Succeeded, "{name}: {s:?}");
            return (start.elapsed(), s);
        }
        assert!(start.elapsed() < Duration::from_secs(900), "{name} did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn new_cluster(ns: &str) -> serde_json::Value {
    json!({"size": 3, "version": "3.5.30", "etcd": {"quotaBackendBytes": 2147483648u64},
           "storage": {"size": "4Gi"}, "backup": s3_target(ns, "s3")})
}

#[tokio::main]
async fn main() {
    etcd_pilot::install_crypto_provider();
    let kit = Kit::connect().await;
    kit.install_operator();
    let ns = kit.namespace("bench-continuous").await;
    let fill_mib: usize = std::env::var("BENCH_FILL_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    let revisions: i64 = std::env::var("BENCH_REVISIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    s3_secret(&kit, &ns, "s3", S3_ACCESS_KEY, S3_SECRET_KEY).await;
    let spec = json!({"backup": s3_target(&ns, "s3"), "etcd": {"quotaBackendBytes": 2147483648u64},
                      "storage": {"size": "4Gi"}});
    create_cluster(&kit, &ns, cluster_manifest("main", 3, "3.5.30", spec)).await;
    wait_ready(&kit, &ns, "main", 3).await;
    let mut rows = vec![
        "| what | etcd-pilot | side by side, same run | ratio | target |".to_string(),
        "|---|---|---|---|---|".to_string(),
    ];

    // The base's bulk: 1 MiB values, four writers.
    let value = vec![b'x'; 1024 * 1024 - 256];
    let mut tasks = Vec::new();
    for w in 0..4 {
        let mut c = etcd(&kit, &ns, "main").await;
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..fill_mib).step_by(4) {
                c.put(format!("/registry/fill/{i:06}"), value.clone(), None).await.expect("put");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }

    // Throughput and RSS: off, on, off, on (10 s each).
    let (off1, rss_off1) = throughput(&kit, &ns, 10).await;
    let _: EtcdBackupSchedule = kit
        .create(
            &ns,
            json!({"apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdBackupSchedule", "metadata": {"name": "stream"},
                   "spec": {"clusterName": "main", "schedule": "0 0 1 1 *", "retention": {"keepLast": 4},
                            "continuous": {"enabled": true, "flushSeconds": 5}}}),
        )
        .await;
    wait_streaming(&kit, &ns).await;
    let base = continuous(&kit, &ns).await.and_then(|c| c.window_start).map(|w| w.revision).unwrap_or(0);
    let (on1, rss_on1) = throughput(&kit, &ns, 10).await;
    suspend(&kit, &ns, true).await;
    wait_for("the stream suspended", Duration::from_secs(60), || async {
        (continuous(&kit, &ns).await?.state.as_deref() == Some("Suspended")).then_some(())
    })
    .await;
    let (off2, rss_off2) = throughput(&kit, &ns, 10).await;
    suspend(&kit, &ns, false).await;
    wait_streaming(&kit, &ns).await;
    let (on2, rss_on2) = throughput(&kit, &ns, 10).await;
    let (on, off) = ((on1 + on2) / 2.0, (off1 + off2) / 2.0);
    rows.push(format!(
        "| etcd write throughput, 4 writers of 1 KiB values, stream on vs off (alternating, 10 s each) | {on:.0} puts/s ({on1:.0}, {on2:.0}) | {off:.0} puts/s ({off1:.0}, {off2:.0}) | {:.2}x | >= 0.95x |",
        on / off
    ));
    rows.push(format!(
        "| operator RSS streaming this cluster under that load vs with no stream | {:.1} MiB | {:.1} MiB | +{:.1} MiB | |",
        rss_on1.max(rss_on2),
        rss_off1.max(rss_off2),
        rss_on1.max(rss_on2) - rss_off1.max(rss_off2)
    ));
    eprintln!("{}", rows[2..].join("\n"));

    // Revisions after the base, up to about `revisions`: small writes, eight writers.
    let mut c = etcd(&kit, &ns, "main").await;
    let now = c.get("/", None).await.expect("get").header().map(|h| h.revision()).unwrap_or(0);
    let more = (revisions - (now - base)).max(0);
    let mut tasks = Vec::new();
    for w in 0..8 {
        let mut c = etcd(&kit, &ns, "main").await;
        tasks.push(tokio::spawn(async move {
            for i in (w..more).step_by(8) {
                c.put(format!("/registry/pods/bench/p{}", i % 5000), format!("v{i}"), None).await.expect("put");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }

    // RPO: a writer with a sequence number every 100 ms, then everything destroyed at once.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let mut c = etcd(&kit, &ns, "main").await;
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut acked: Vec<(u64, Instant)> = Vec::new();
            let mut seq = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let put = c.put(format!("/registry/rpo/{seq:08}"), seq.to_string(), None);
                if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(1), put).await {
                    acked.push((seq, Instant::now()));
                }
                seq += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_secs(8)).await;
    let pods: Api<Pod> = Api::namespaced(kit.client.clone(), &ns);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(kit.client.clone(), &ns);
    let members: Vec<String> =
        member_pods(&kit, &ns, "main").await.iter().filter_map(|p| p.metadata.name.clone()).collect();
    let destroyed = Instant::now();
    let zero = DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() };
    for m in &members {
        let _ = pvcs.delete(&format!("data-{m}"), &DeleteParams::default()).await;
        let _ = pods.delete(m, &zero).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = writer.await.expect("writer");
    let last_acked = acked.iter().rev().find(|(_, at)| *at <= destroyed).copied();
    // Let the stream see the end of its watch before the restore reads the index.
    wait_for("the stream to stop streaming", Duration::from_secs(60), || async {
        (continuous(&kit, &ns).await?.state.as_deref() != Some("Streaming")).then_some(())
    })
    .await;

    // Replay: the latest point (the base plus every revision since) into 3 new members,
    // beside the base alone.
    let _: EtcdRestore = kit
        .create(
            &ns,
            json!({"apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdRestore", "metadata": {"name": "latest"},
                   "spec": {"source": {"schedule": {"name": "stream"}}, "mode": "NewCluster",
                            "clusterName": "latest", "newCluster": new_cluster(&ns)}}),
        )
        .await;
    let (replayed, status) = wait_restore(&kit, &ns, "latest").await;
    let reached = status.point_in_time.clone().expect("pointInTime");
    let mut r = etcd(&kit, &ns, "latest").await;
    let got = r
        .get("/registry/rpo/", Some(etcd_client::GetOptions::new().with_prefix().with_keys_only()))
        .await
        .expect("read the restore");
    let restored_max: Option<u64> =
        got.kvs().iter().filter_map(|kv| kv.key_str().ok()?.rsplit('/').next()?.parse().ok()).max();
    let lost = match (last_acked, restored_max) {
        (Some((seq, at)), Some(have)) if have < seq => {
            let kept_at = acked.iter().find(|(s, _)| *s == have).map(|(_, t)| *t).unwrap_or(at);
            format!("{:.1} s ({} writes)", at.duration_since(kept_at).as_secs_f64(), seq - have)
        }
        (Some(_), Some(_)) => "0 s (none)".to_string(),
        _ => "unknown".to_string(),
    };
    rows.push(format!(
        "| RPO: a write every 100 ms, every member and volume destroyed at once, restore to the latest: acknowledged writes lost | {lost} | | | <= 5 s |"
    ));
    let backups: Vec<String> = {
        let api: Api<etcd_pilot::api::EtcdBackup> = Api::namespaced(kit.client.clone(), &ns);
        api.list(&Default::default())
            .await
            .expect("backups")
            .items
            .iter()
            .filter_map(|b| b.metadata.name.clone())
            .collect()
    };
    let base_backup = backups.first().cloned().expect("the base backup");
    let _: EtcdRestore = kit
        .create(
            &ns,
            json!({"apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdRestore", "metadata": {"name": "base"},
                   "spec": {"source": {"backup": {"name": base_backup}}, "mode": "NewCluster",
                            "clusterName": "base-only", "newCluster": new_cluster(&ns)}}),
        )
        .await;
    let (plain, _) = wait_restore(&kit, &ns, "base").await;
    rows.push(format!(
        "| restore to the latest point: a {fill_mib} MiB base + {} revisions replayed, into 3 new members, apply -> Available, vs the base alone | {:.1} s | {:.1} s | {:.2}x | < 2 min |",
        reached.revision - reached.base_revision,
        replayed.as_secs_f64(),
        plain.as_secs_f64(),
        replayed.as_secs_f64() / plain.as_secs_f64()
    ));
    kit.delete_namespace(&ns).await;
    println!("{}", rows.join("\n"));
}
