//! Backup and restore benchmarks on the testbed, with etcd-pilot installed from the
//! chart and the testbed's S3 server, side by side with the plain tools in the same run:
//! a 3-member cluster filled to about `BENCH_FILL_MIB` (default 1024) MiB;
//! - EtcdBackup (snapshot -> S3, verified) vs `etcdctl snapshot save` to local disk from
//!   the same member, and the operator's RSS growth during the backup;
//! - EtcdRestore into a new 3-member cluster, apply -> Available, vs `etcdctl snapshot
//!   restore` of the same object + 3 etcd processes started by hand on this machine;
//! - quorum-loss recovery in place from the survivor: apply -> Available.
//!
//! Prints a Markdown table (recorded into docs/benchmarks.md by `make bench`). Figures,
//! not assertions.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use etcd_pilot::api::{EtcdBackup, EtcdCluster, EtcdRestore, Phase};
use etcd_pilot_e2e::fixtures::*;
use etcd_pilot_e2e::kit::Kit;
use etcd_pilot_e2e::layout::{S3_ACCESS_KEY, S3_SECRET_KEY};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, DeleteParams};
use serde_json::json;

const MIB: f64 = 1024.0 * 1024.0;

async fn wait_phase_restore(kit: &Kit, ns: &str, name: &str) -> Duration {
    let api: Api<EtcdRestore> = Api::namespaced(kit.client.clone(), ns);
    let start = Instant::now();
    loop {
        if let Ok(r) = api.get(name).await
            && let Some(s) = r.status
            && s.phase.is_finished()
        {
            assert_eq!(s.phase, Phase::Succeeded, "{name}: {s:?}");
            return start.elapsed();
        }
        assert!(start.elapsed() < Duration::from_secs(900), "{name} did not finish");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

#[tokio::main]
async fn main() {
    etcd_pilot::install_crypto_provider();
    let kit = Kit::connect().await;
    kit.install_operator();
    let ns = kit.namespace("bench-restore").await;
    let fill_mib: usize = std::env::var("BENCH_FILL_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    s3_secret(&kit, &ns, "s3", S3_ACCESS_KEY, S3_SECRET_KEY).await;
    let spec = json!({"backup": s3_target(&ns, "s3"), "etcd": {"quotaBackendBytes": 4294967296u64},
                      "storage": {"size": "8Gi"}});
    create_cluster(&kit, &ns, cluster_manifest("main", 3, "3.4.23", spec)).await;
    wait_ready(&kit, &ns, "main", 3).await;
    let mut rows = vec![
        "| what | etcd-pilot | plain tool, same run | ratio | target |".to_string(),
        "|---|---|---|---|---|".to_string(),
    ];

    // Fill: 1 MiB values (etcd's request limit is 1.5 MiB), four writers.
    let start = Instant::now();
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
    eprintln!("filled {fill_mib} MiB in {:?}", start.elapsed());
    let ec: EtcdCluster = clusters(&kit, &ns).get("main").await.expect("cluster");
    let status = ec.status.clone().expect("status");
    let follower = status.members.iter().find(|m| !m.leader && m.healthy).expect("a healthy follower").clone();

    // The plain tool: etcdctl snapshot save from the same follower, to local disk.
    let pods: Api<Pod> = Api::namespaced(kit.client.clone(), &ns);
    let ip = pods.get(&follower.name).await.expect("pod").status.and_then(|s| s.pod_ip).expect("pod IP");
    let tmp = tempfile::tempdir().expect("tmp");
    let secret =
        Api::<Secret>::namespaced(kit.client.clone(), &ns).get("main-client-tls").await.expect("client secret");
    let tls = etcdctl_tls_args(tmp.path(), &secret);
    let saved = tmp.path().join("etcdctl.db");
    let t = Instant::now();
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://{ip}:2379"))
        .args(&tls)
        .arg("--insecure-skip-tls-verify")
        .args(["snapshot", "save", saved.to_str().expect("path")])
        .output()
        .expect("etcdctl");
    assert!(out.status.success(), "etcdctl snapshot save: {}", String::from_utf8_lossy(&out.stderr));
    let etcdctl_save = t.elapsed();
    let saved_mib = std::fs::metadata(&saved).map(|m| m.len() as f64 / MIB).unwrap_or(0.0);

    // etcd-pilot: EtcdBackup, with the operator's memory sampled as it streams.
    let rss_before = operator_memory(&kit).await.map(|m| m.0).unwrap_or(0.0);
    let _: EtcdBackup = kit
        .create(
            &ns,
            json!({"apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdBackup", "metadata": {"name": "b1"},
                            "spec": {"clusterName": "main"}}),
        )
        .await;
    let t = Instant::now();
    let backups: Api<EtcdBackup> = Api::namespaced(kit.client.clone(), &ns);
    let mut rss_max = rss_before;
    let b = loop {
        if let Some((rss, _)) = operator_memory(&kit).await {
            rss_max = rss_max.max(rss);
        }
        let b = backups.get("b1").await.expect("backup");
        if b.status.as_ref().is_some_and(|s| s.phase.is_finished()) {
            break b;
        }
        assert!(t.elapsed() < Duration::from_secs(900), "backup did not finish");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let backup_time = t.elapsed();
    let bs = b.status.clone().expect("status");
    assert_eq!(bs.phase, Phase::Succeeded, "{bs:?}");
    let object_mib = bs.size_bytes.unwrap_or(0) as f64 / MIB;
    let pilot_rate = object_mib / backup_time.as_secs_f64();
    let ctl_rate = saved_mib / etcdctl_save.as_secs_f64();
    rows.push(format!(
        "| snapshot of a {object_mib:.0} MiB db: EtcdBackup to S3 (verified) vs `etcdctl snapshot save` ({saved_mib:.0} MiB) to local disk | {:.1} s, {pilot_rate:.0} MiB/s | {:.1} s, {ctl_rate:.0} MiB/s | {:.2}x | >= 0.8x |",
        backup_time.as_secs_f64(),
        etcdctl_save.as_secs_f64(),
        pilot_rate / ctl_rate
    ));
    eprintln!("{}", rows.last().map(String::as_str).unwrap_or_default());
    rows.push(format!(
        "| operator RSS during that backup | {rss_before:.1} -> {rss_max:.1} MiB (+{:.1} MiB) | | | growth < 64 MiB |",
        rss_max - rss_before
    ));

    // etcd-pilot: restore into a new 3-member cluster, apply -> Available.
    let _: EtcdRestore = kit
        .create(
            &ns,
            json!({"apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdRestore", "metadata": {"name": "r1"},
            "spec": {"source": {"backup": {"name": "b1"}}, "mode": "NewCluster", "clusterName": "restored",
                     "newCluster": {"size": 3, "version": "3.4.23", "etcd": {"quotaBackendBytes": 4294967296u64},
                                    "storage": {"size": "8Gi"}, "backup": s3_target(&ns, "s3")}}}),
        )
        .await;
    let restore_time = wait_phase_restore(&kit, &ns, "r1").await;

    // The plain tool: the same object restored by etcdctl for 3 members and started by hand.
    let object = s3_object_file(&kit, bs.object_key.as_deref().expect("key"));
    let t = Instant::now();
    let peers: Vec<(String, u16, u16)> = (0..3).map(|i| (format!("m{i}"), free_port(), free_port())).collect();
    let initial: Vec<String> = peers.iter().map(|(n, p, _)| format!("{n}=http://127.0.0.1:{p}")).collect();
    let mut restores = Vec::new();
    for (name, peer, _) in &peers {
        let dir = tmp.path().join(format!("{name}.etcd"));
        restores.push(
            Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .args(["snapshot", "restore", object.to_str().expect("path")])
                .arg(format!("--data-dir={}", dir.display()))
                .arg(format!("--name={name}"))
                .arg(format!("--initial-cluster={}", initial.join(",")))
                .arg(format!("--initial-advertise-peer-urls=http://127.0.0.1:{peer}"))
                .arg("--initial-cluster-token=bench")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("etcdctl restore"),
        );
    }
    for mut r in restores {
        assert!(r.wait().expect("wait").success(), "etcdctl snapshot restore");
    }
    let mut members = Vec::new();
    for (name, peer, client) in &peers {
        let dir = tmp.path().join(format!("{name}.etcd"));
        members.push(
            Command::new("etcd")
                .arg(format!("--name={name}"))
                .arg(format!("--data-dir={}", dir.display()))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
                .arg(format!("--listen-client-urls=http://127.0.0.1:{client}"))
                .arg(format!("--advertise-client-urls=http://127.0.0.1:{client}"))
                .arg("--quota-backend-bytes=4294967296")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("etcd"),
        );
    }
    let endpoints: Vec<String> = peers.iter().map(|(_, _, c)| format!("http://127.0.0.1:{c}")).collect();
    loop {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .args(["endpoint", "health"])
            .output()
            .expect("etcdctl");
        if out.status.success() {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(600), "hand-started cluster never healthy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let by_hand = t.elapsed();
    for mut m in members {
        let _ = m.kill();
        let _ = m.wait();
    }
    rows.push(format!(
        "| restore of that backup into 3 new members, apply -> Available vs `etcdctl snapshot restore` x3 + 3 etcd started by hand (host, no Kubernetes) | {:.1} s | {:.1} s | {:.2}x | < 2 min |",
        restore_time.as_secs_f64(),
        by_hand.as_secs_f64(),
        restore_time.as_secs_f64() / by_hand.as_secs_f64()
    ));

    // Quorum loss on the restored cluster: two members gone with their volumes, then
    // an in-place restore from the survivor.
    let survivor = clusters(&kit, &ns).get("restored").await.expect("restored").status.expect("status").members;
    let names: Vec<String> = survivor.iter().map(|m| m.name.clone()).collect();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(kit.client.clone(), &ns);
    for m in &names[1..] {
        let _ = pvcs.delete(&format!("data-{m}"), &DeleteParams::default()).await;
        let _ = pods.delete(m, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await;
    }
    let t = Instant::now();
    loop {
        let ec = clusters(&kit, &ns).get("restored").await.expect("cluster");
        if condition(&ec, "Degraded").is_some_and(|c| c.2.contains("quorum lost for good")) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(300), "quorum loss never reported");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _: EtcdRestore = kit
        .create(
            &ns,
            json!({"apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdRestore", "metadata": {"name": "r2"},
            "spec": {"source": {"member": names[0]}, "mode": "InPlace", "clusterName": "restored"}}),
        )
        .await;
    let recovery = wait_phase_restore(&kit, &ns, "r2").await;
    rows.push(format!(
        "| quorum-loss recovery in place from the survivor ({object_mib:.0} MiB db), apply -> Available | {:.1} s | | | |",
        recovery.as_secs_f64()
    ));
    kit.delete_namespace(&ns).await;
    println!("{}", rows.join("\n"));
}
