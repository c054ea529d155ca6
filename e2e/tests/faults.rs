//! Faults etcd-pilot must survive without costing a cluster its fault tolerance, its
//! data or its certificates, on the testbed with the operator installed from the chart.
//! Each test runs in its own namespace, under steady writes where a member goes, and
//! reads every acknowledged write back at the end.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use etcd_pilot::api::EtcdCluster;
use etcd_pilot_e2e::fixtures::*;
use etcd_pilot_e2e::kit::Kit;
use etcd_pilot_e2e::traffic::*;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, ResourceQuota, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// Host pid of a member's etcd process: the testbed's containers are processes of this
/// machine, told apart by member name and the cluster's uid (its initial-cluster token).
fn etcd_pid(member: &str, cluster_uid: &str) -> Option<i32> {
    let name = format!("--name={member}");
    let token = format!("--initial-cluster-token={cluster_uid}");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else { continue };
        let args: Vec<String> = cmd.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if args.first().is_some_and(|a| a.ends_with("/etcd")) && args.contains(&name) && args.contains(&token) {
            return Some(pid);
        }
    }
    None
}

/// Freezes (SIGSTOP) or resumes (SIGCONT) a member's etcd process.
async fn signal_member(kit: &Kit, ns: &str, cluster: &str, member: &str, sig: libc::c_int) {
    let uid = clusters(kit, ns).get(cluster).await.expect("cluster").uid().expect("uid");
    let deadline = Instant::now() + Duration::from_secs(60);
    let pid = loop {
        if let Some(pid) = etcd_pid(member, &uid) {
            break pid;
        }
        assert!(Instant::now() < deadline, "no etcd process of {member} on this machine");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    // SAFETY: kill(2) with a pid just read from /proc; no memory is involved.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "signal {sig} to {member} (pid {pid})");
}

/// Waits until `check` holds for the cluster, or fails with its status.
async fn wait_for(kit: &Kit, ns: &str, name: &str, what: &str, check: impl Fn(&EtcdCluster) -> bool) -> EtcdCluster {
    let deadline = Instant::now() + WAIT;
    loop {
        let ec = clusters(kit, ns).get(name).await.expect("get EtcdCluster");
        if check(&ec) {
            return ec;
        }
        if Instant::now() > deadline {
            panic!(
                "{ns}/{name}: {what} not reached\nstatus: {:#?}\nevents:\n{}",
                ec.status,
                events(kit, ns, name).await.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn voters(ec: &EtcdCluster) -> Vec<String> {
    ec.status
        .iter()
        .flat_map(|s| &s.members)
        .filter(|m| !m.learner && !m.id.is_empty())
        .map(|m| m.name.clone())
        .collect()
}

fn pod_uids(pods: &[Pod]) -> BTreeSet<String> {
    pods.iter().filter_map(|p| p.uid()).collect()
}

async fn pvc_names(kit: &Kit, ns: &str) -> BTreeSet<String> {
    Api::<PersistentVolumeClaim>::namespaced(kit.client.clone(), ns)
        .list(&ListParams::default())
        .await
        .expect("list PVCs")
        .items
        .iter()
        .map(|c| c.name_any())
        .collect()
}

// A5. Status lost while no member answers: never a second cluster beside the data.
#[tokio::test]
async fn losing_the_status_while_etcd_is_down_never_bootstraps_a_second_cluster() {
    let (kit, ns) = setup("fault-status").await;
    create_cluster(&kit, &ns, cluster_manifest("main", 3, "3.4.23", json!({}))).await;
    wait_ready(&kit, &ns, "main", 3).await;
    let started = Instant::now();
    let mut c = etcd(&kit, &ns, "main").await;
    let mut acked_before = 0;
    for i in 0..200 {
        c.put(format!("w/{i:08}"), format!("v{i}"), None).await.expect("write before the freeze");
        acked_before += 1;
    }
    let pods_before = pod_uids(&member_pods(&kit, &ns, "main").await);
    let pvcs_before = pvc_names(&kit, &ns).await;

    for m in ["main-0", "main-1", "main-2"] {
        signal_member(&kit, &ns, "main", m, libc::SIGSTOP).await;
    }
    // Clear the status (etcd-pilot's only record before this change) and wait for the
    // operator to see no member answer.
    clusters(&kit, &ns)
        .patch_status("main", &PatchParams::default(), &Patch::Merge(json!({"status": null})))
        .await
        .expect("clear status");
    wait_for(&kit, &ns, "main", "Available=False/NoAnswer", |ec| {
        condition(ec, "Available").is_some_and(|c| c.0 == "False" && c.1 == "NoAnswer")
    })
    .await;
    wait_passes(&kit, &ns, "main", 3).await;
    let pods = member_pods(&kit, &ns, "main").await;
    assert_eq!(pod_uids(&pods), pods_before, "no member pod created or replaced");
    assert_eq!(pvc_names(&kit, &ns).await, pvcs_before, "no new volume");
    for p in &pods {
        let args = p.spec.as_ref().and_then(|s| s.containers[0].args.clone()).unwrap_or_default();
        assert!(
            pods_before.contains(&p.uid().unwrap_or_default()) || !args.contains(&"--initial-cluster-state=new".into()),
            "a new pod bootstrapping a new cluster: {args:?}"
        );
    }
    let ev = events(&kit, &ns, "main").await;
    assert_eq!(ev.iter().filter(|e| e.contains("Bootstrapping")).count(), 1, "bootstrapped once only: {ev:#?}");

    for m in ["main-0", "main-1", "main-2"] {
        signal_member(&kit, &ns, "main", m, libc::SIGCONT).await;
    }
    let ec = wait_ready(&kit, &ns, "main", 3).await;
    assert!(ec.status.and_then(|s| s.cluster_id).is_some(), "the cluster id is back in status");
    // The old data serves: every write acknowledged before the freeze is read back.
    let mut c = etcd(&kit, &ns, "main").await;
    let got = c.get("w/", Some(etcd_client::GetOptions::new().with_prefix().with_count_only())).await.expect("read");
    assert!(got.count() as usize >= acked_before, "{} keys, {acked_before} acknowledged", got.count());
    println!(
        "status loss: {acked_before} writes acknowledged, 0 lost, healthy again {:.1}s after the start",
        started.elapsed().as_secs_f64()
    );
    kit.delete_namespace(&ns).await;
}

// A2. 5 -> 3 while one voter is down (not yet for replaceUnhealthyAfterSeconds): the
// down member goes, and the end state is 3 healthy voters.
#[tokio::test]
async fn scaling_down_removes_the_frozen_member_first() {
    let (kit, ns) = setup("fault-scaledown").await;
    create_cluster(&kit, &ns, cluster_manifest("main", 5, "3.4.23", json!({}))).await;
    wait_ready(&kit, &ns, "main", 5).await;
    let writer = Writer::start(&kit, &ns, "main").await;
    // Writes through the client Service stall while it still routes to the frozen
    // member: make sure the writer has a record to check before the freeze.
    writer.wait_acked(100).await;
    // Freeze a follower that is not the highest ordinal (which a plain scale-down takes).
    let ec = clusters(&kit, &ns).get("main").await.expect("cluster");
    let leader = ec.status.as_ref().and_then(|s| s.leader.clone()).unwrap_or_default();
    let frozen = ["main-1", "main-2", "main-0"].into_iter().find(|m| *m != leader).expect("a follower").to_string();
    signal_member(&kit, &ns, "main", &frozen, libc::SIGSTOP).await;
    let started = Instant::now();
    wait_for(&kit, &ns, "main", "the frozen member unhealthy", |ec| {
        ec.status.iter().flat_map(|s| &s.members).any(|m| m.name == frozen && !m.healthy)
    })
    .await;
    patch_spec(&kit, &ns, "main", json!({"size": 3})).await;
    let ec = wait_ready(&kit, &ns, "main", 3).await;
    let left = voters(&ec);
    assert!(!left.contains(&frozen), "{frozen} was frozen and must be the one removed: {left:?}");
    let ev = events(&kit, &ns, "main").await;
    let first_removal = ev.iter().find(|e| e.contains("RemovingMember")).cloned().unwrap_or_default();
    assert!(first_removal.contains(&frozen), "the first removal is the frozen member's: {ev:#?}");
    let (acked, failed) = writer.finish(&kit, &ns, "main").await;
    println!(
        "scale-down with {frozen} frozen: {acked} writes acknowledged ({failed} failed and retried), 0 lost, 3 healthy voters after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    kit.delete_namespace(&ns).await;
}

// A1. A learner whose pod cannot be created (a quota) does not block healing: a voter
// whose pod goes is recreated first, and the learner is given up after the deadline.
#[tokio::test]
async fn a_stuck_learner_does_not_block_healing_and_is_given_up() {
    let (kit, ns) = setup("fault-learner").await;
    create_cluster(
        &kit,
        &ns,
        cluster_manifest("main", 3, "3.4.23", json!({"healing": {"replaceUnhealthyAfterSeconds": 30}})),
    )
    .await;
    wait_ready(&kit, &ns, "main", 3).await;
    let writer = Writer::start(&kit, &ns, "main").await;
    let quota: ResourceQuota =
        serde_json::from_value(json!({"metadata": {"name": "three-pods"}, "spec": {"hard": {"pods": "3"}}}))
            .expect("quota");
    let quotas: Api<ResourceQuota> = Api::namespaced(kit.client.clone(), &ns);
    quotas.create(&PostParams::default(), &quota).await.expect("create quota");
    let ids_before: Vec<(String, String)> = clusters(&kit, &ns)
        .get("main")
        .await
        .expect("cluster")
        .status
        .iter()
        .flat_map(|s| &s.members)
        .map(|m| (m.name.clone(), m.id.clone()))
        .collect();
    let started = Instant::now();
    patch_spec(&kit, &ns, "main", json!({"size": 5})).await;
    wait_for(&kit, &ns, "main", "a learner with no pod", |ec| {
        ec.status.iter().flat_map(|s| &s.members).any(|m| m.learner)
    })
    .await;
    // The pod the quota refuses fails the pass: the cluster says so, with the step and
    // what it failed on, not only the operator's log.
    let ec = wait_for(&kit, &ns, "main", "Reconciled=False/KubernetesError", |ec| {
        condition(ec, "Reconciled").is_some_and(|c| c.0 == "False" && c.1 == "KubernetesError")
    })
    .await;
    let msg = condition(&ec, "Reconciled").map(|c| c.2).unwrap_or_default();
    assert!(msg.starts_with("act:") && msg.contains("exceeded quota"), "{msg}");
    // A voter's pod goes while the learner waits for a pod the quota refuses.
    let pods: Api<Pod> = Api::namespaced(kit.client.clone(), &ns);
    pods.delete("main-1", &DeleteParams::default()).await.expect("delete main-1");
    // main-1 comes back (same member, its data) and the learner is given up.
    let ec = wait_for(&kit, &ns, "main", "main-1 back and the learner given up", |ec| {
        let s = ec.status.as_ref();
        let back = s.is_some_and(|s| s.members.iter().any(|m| m.name == "main-1" && m.healthy && !m.learner));
        let no_learner = s.is_some_and(|s| s.members.iter().all(|m| !m.learner));
        back && no_learner
    })
    .await;
    let ids_after: Vec<(String, String)> = ec
        .status
        .iter()
        .flat_map(|s| &s.members)
        .filter(|m| !m.learner && !m.id.is_empty())
        .map(|m| (m.name.clone(), m.id.clone()))
        .collect();
    assert_eq!(ids_after, ids_before, "the same three members, main-1 with its own id");
    let ev = events(&kit, &ns, "main").await;
    let recreated = ev.iter().position(|e| e.contains("RecreatingPod") && e.contains("main-1"));
    let given_up = ev.iter().position(|e| e.contains("RemovingMember") && e.contains("learner main-3"));
    assert!(recreated.is_some() && given_up.is_some(), "{ev:#?}");
    assert!(ev.iter().any(|e| e.starts_with("Warning LearnerGivenUp")), "{ev:#?}");
    // Once the quota goes, the scale-up finishes (the retry waits a minute).
    quotas.delete("three-pods", &DeleteParams::default()).await.expect("delete quota");
    let ec = wait_ready(&kit, &ns, "main", 5).await;
    assert_eq!(condition(&ec, "Reconciled").map(|c| (c.0, c.1)), Some(("True".into(), "Succeeded".into())));
    let (acked, failed) = writer.finish(&kit, &ns, "main").await;
    println!(
        "stuck learner: {acked} writes acknowledged ({failed} failed and retried), 0 lost, 5 healthy voters after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    kit.delete_namespace(&ns).await;
}

// A6. The CA Secret deleted from a live cluster: no new CA, a condition and an Event,
// and clients with the published certificate keep connecting.
#[tokio::test]
async fn a_deleted_ca_secret_leaves_the_cluster_serving() {
    let (kit, ns) = setup("fault-ca").await;
    create_cluster(&kit, &ns, cluster_manifest("main", 3, "3.4.23", json!({}))).await;
    wait_ready(&kit, &ns, "main", 3).await;
    let secrets: Api<Secret> = Api::namespaced(kit.client.clone(), &ns);
    let client_before = secrets.get("main-client-tls").await.expect("client Secret").data;
    secrets.delete("main-ca", &DeleteParams::default()).await.expect("delete the CA Secret");
    let lost_at = Instant::now();
    let ec = wait_for(&kit, &ns, "main", "CertificatesReady=False/CALost", |ec| {
        condition(ec, "CertificatesReady").is_some_and(|c| c.0 == "False" && c.1 == "CALost")
    })
    .await;
    assert_eq!(condition(&ec, "Available").map(|c| c.0), Some("True".into()));
    let ev = events(&kit, &ns, "main").await;
    assert!(ev.iter().any(|e| e.starts_with("Warning CertificateAuthorityLost")), "{ev:#?}");
    // For 60 s the published client certificate keeps working and nothing is reissued.
    let mut writes = 0;
    while lost_at.elapsed() < Duration::from_secs(60) {
        let mut c = etcd(&kit, &ns, "main").await;
        c.put(format!("ca/{writes}"), "v", None).await.expect("write with the published client certificate");
        writes += 1;
        assert_eq!(secrets.get("main-client-tls").await.expect("client Secret").data, client_before, "reissued");
        assert!(secrets.get_opt("main-ca").await.expect("read").is_none(), "a new CA was generated");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    println!("CA lost: {writes} writes with the published client certificate over 60 s, 0 failed");
    kit.delete_namespace(&ns).await;
}

/// Whether a member answers a read over TLS trusting `ca` and presenting `cert`/`key`,
/// reached at its pod IP under its own DNS name.
async fn member_answers(ip: &str, server_name: &str, ca: &[u8], cert: &[u8], key: &[u8]) -> Result<(), String> {
    use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
    let tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(ca))
        .identity(Identity::from_pem(cert, key))
        .domain_name(server_name.to_string());
    let opts = ConnectOptions::new()
        .with_tls(tls)
        .with_connect_timeout(Duration::from_secs(3))
        .with_timeout(Duration::from_secs(5));
    let mut c = Client::connect([format!("https://{ip}:2379")], Some(opts)).await.map_err(|e| e.to_string())?;
    c.get("probe", None).await.map(|_| ()).map_err(|e| e.to_string())
}

fn pem_of(secret: &Secret, key: &str) -> Vec<u8> {
    secret.data.as_ref().and_then(|d| d.get(key)).map(|b| b.0.clone()).unwrap_or_default()
}

// A6. CA rotation through a bundle, under writes: the new CA is trusted beside the old
// (every member restarted once), then signs, then the old CA is dropped (every member
// restarted again), one member at a time, never the leader while it leads.
#[tokio::test]
async fn a_ca_rotation_through_a_bundle_keeps_quorum_and_every_write() {
    let (kit, ns) = setup("fault-ca-rotation").await;
    create_cluster(&kit, &ns, cluster_manifest("main", 3, "3.4.23", json!({}))).await;
    wait_ready(&kit, &ns, "main", 3).await;
    let secrets: Api<Secret> = Api::namespaced(kit.client.clone(), &ns);
    let old_client = secrets.get("main-client-tls").await.expect("client Secret");
    let old_ca = pem_of(&secrets.get("main-ca").await.expect("CA Secret"), "tls.crt");
    let writer = Writer::start_refreshing(&kit, &ns, "main").await;
    let watcher = Watcher::start_refreshing(&kit, &ns, "main").await;
    writer.wait_acked(20).await;
    let started = Instant::now();
    patch_spec(&kit, &ns, "main", json!({"tls": {"caGeneration": 1}})).await;
    // Done: the CA Secret holds one CA of generation 1, no phase; every member pod was
    // started trusting it alone.
    let deadline = Instant::now() + Duration::from_secs(600);
    let new_ca = loop {
        let ca = secrets.get("main-ca").await.expect("CA Secret");
        let ann = ca.annotations();
        let done = ann.get("etcdpilot.io/ca-generation").map(String::as_str) == Some("1")
            && !ann.contains_key("etcdpilot.io/ca-rotation-phase");
        let new_ca = pem_of(&ca, "tls.crt");
        let fp = etcd_pilot::controllers::cluster::ca_rotation::fingerprint(&String::from_utf8_lossy(&new_ca));
        let pods = member_pods(&kit, &ns, "main").await;
        let rolled = pods.len() == 3 && pods.iter().all(|p| p.annotations().get("etcdpilot.io/trust") == Some(&fp));
        if done && rolled {
            break new_ca;
        }
        assert!(
            Instant::now() < deadline,
            "rotation not finished\nstatus: {:#?}\nevents:\n{}",
            clusters(&kit, &ns).get("main").await.ok().and_then(|c| c.status),
            events(&kit, &ns, "main").await.join("\n")
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let took = started.elapsed();
    let ec = wait_ready(&kit, &ns, "main", 3).await;
    let seen = watcher.finish().await;
    let (acked, failed) = writer.finish(&kit, &ns, "main").await;
    assert_ne!(new_ca, old_ca);
    let c = condition(&ec, "CertificatesReady").expect("condition");
    assert!(c.0 == "True" && c.1 == "Ready" && c.2.contains("CA generation 1"), "{c:?}");

    // Each member restarted exactly twice (trust both, then the new alone), never while
    // it led; the phases in order.
    let mut restarted = seen.terminated.clone();
    restarted.sort();
    assert_eq!(restarted, ["main-0", "main-0", "main-1", "main-1", "main-2", "main-2"], "{seen:?}");
    assert!(seen.restarted_leaders.is_empty(), "a member restarted while leading: {seen:?}");
    let ev = events(&kit, &ns, "main").await;
    let phases: Vec<&String> = ev.iter().filter(|e| e.contains(" CARotation:")).collect();
    assert_eq!(phases.len(), 4, "{ev:#?}");
    for (e, want) in phases.iter().zip(["(1/3)", "(2/3)", "(3/3)", "rotated the CA to generation 1"]) {
        assert!(e.contains(want), "{e} should say {want}: {ev:#?}");
    }

    // The old CA is trusted no more and signs nothing a member serves; the published
    // client certificate is the new CA's.
    let new_client = secrets.get("main-client-tls").await.expect("client Secret");
    assert_eq!(pem_of(&new_client, "ca.crt"), new_ca, "only the new CA is trusted");
    let (new_cert, new_key) = (pem_of(&new_client, "tls.crt"), pem_of(&new_client, "tls.key"));
    let (old_cert, old_key) = (pem_of(&old_client, "tls.crt"), pem_of(&old_client, "tls.key"));
    for p in member_pods(&kit, &ns, "main").await {
        let ip = p.status.as_ref().and_then(|s| s.pod_ip.clone()).expect("pod IP");
        let host = format!("{}.main-peers.{ns}.svc", p.name_any());
        member_answers(&ip, &host, &new_ca, &new_cert, &new_key).await.expect("the new CA's certificates work");
        let e = member_answers(&ip, &host, &new_ca, &old_cert, &old_key).await;
        assert!(e.is_err(), "{}: a client certificate of the old CA is still accepted", p.name_any());
        let e = member_answers(&ip, &host, &old_ca, &new_cert, &new_key).await;
        assert!(e.is_err(), "{}: serves a certificate of the old CA", p.name_any());
    }
    println!(
        "CA rotation: done in {:.1}s, restarts {:?}, {acked} writes acknowledged ({failed} failed and retried), 0 lost",
        took.as_secs_f64(),
        seen.terminated
    );
    kit.delete_namespace(&ns).await;
}

// A9. A spec change that reaches the pod (quota) rolls every member once, the leader
// last, under writes.
#[tokio::test]
async fn raising_the_quota_restarts_every_member_once_leader_last() {
    let (kit, ns) = setup("fault-rollout").await;
    create_cluster(&kit, &ns, cluster_manifest("main", 3, "3.4.23", json!({}))).await;
    wait_ready(&kit, &ns, "main", 3).await;
    let writer = Writer::start(&kit, &ns, "main").await;
    let watcher = Watcher::start(&kit, &ns, "main").await;
    let started = Instant::now();
    // 2.5 GiB: still under the default 4Gi volume with headroom (a larger quota is refused).
    patch_spec(&kit, &ns, "main", json!({"etcd": {"quotaBackendBytes": 2684354560i64}})).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let pods = member_pods(&kit, &ns, "main").await;
        let done = pods.len() == 3
            && pods.iter().all(|p| {
                p.spec.as_ref().is_some_and(|s| {
                    s.containers[0].args.iter().flatten().any(|a| a == "--quota-backend-bytes=2684354560")
                })
            });
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "not every member runs with the new quota");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    wait_ready(&kit, &ns, "main", 3).await;
    let seen = watcher.finish().await;
    let (acked, failed) = writer.finish(&kit, &ns, "main").await;
    let mut restarted = seen.terminated.clone();
    restarted.sort();
    assert_eq!(restarted, ["main-0", "main-1", "main-2"], "each member restarted exactly once: {seen:?}");
    assert!(seen.restarted_leaders.is_empty(), "a member restarted while leading: {seen:?}");
    let ev = events(&kit, &ns, "main").await;
    assert_eq!(ev.iter().filter(|e| e.contains("RestartingMember")).count(), 3, "{ev:#?}");
    println!(
        "quota rollout: {acked} writes acknowledged ({failed} failed and retried), 0 lost, order {:?}, done in {:.1}s",
        seen.terminated,
        started.elapsed().as_secs_f64()
    );
    kit.delete_namespace(&ns).await;
}

// A11. Evictions go through the PodDisruptionBudget (policy/v1beta1 on this 1.20
// testbed): one member may go, a second is refused while the first is away.
#[tokio::test]
async fn the_disruption_budget_lets_one_member_go_at_a_time() {
    let (kit, ns) = setup("fault-evict").await;
    create_cluster(&kit, &ns, cluster_manifest("main", 3, "3.4.23", json!({}))).await;
    wait_ready(&kit, &ns, "main", 3).await;
    // The budget's status is computed by the disruption controller: wait for it.
    let gvk = kube::api::GroupVersionKind::gvk("policy", "v1beta1", "PodDisruptionBudget");
    let ar = kube::api::ApiResource::from_gvk_with_plural(&gvk, "poddisruptionbudgets");
    let pdbs: Api<kube::api::DynamicObject> = Api::namespaced_with(kit.client.clone(), &ns, &ar);
    let deadline = Instant::now() + WAIT;
    loop {
        let allowed =
            pdbs.get_opt("main").await.ok().flatten().and_then(|p| p.data["status"]["disruptionsAllowed"].as_i64());
        if allowed == Some(1) {
            break;
        }
        assert!(Instant::now() < deadline, "the PodDisruptionBudget main never allowed one disruption: {allowed:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The Eviction kind this 1.20 API server takes (policy/v1beta1), as `kubectl drain`
    // sends it.
    let pods: Api<Pod> = Api::namespaced(kit.client.clone(), &ns);
    let evict = |name: &str| {
        let body =
            json!({"apiVersion": "policy/v1beta1", "kind": "Eviction", "metadata": {"name": name, "namespace": ns}});
        let pods = pods.clone();
        let name = name.to_string();
        async move {
            pods.create_subresource::<_, serde_json::Value>("eviction", &name, &PostParams::default(), &body).await
        }
    };
    let first_uid = pods.get("main-0").await.expect("main-0").uid();
    evict("main-0").await.expect("the first eviction is allowed");
    let budget = pdbs.get("main").await.map(|p| p.data["status"]["disruptionsAllowed"].clone()).expect("budget");
    assert_eq!(budget, 0, "the first eviction spent the budget");
    // The API server holds a refused eviction and retries it for about 20 s: it may only
    // go through once main-0 is back (etcd-pilot recreates it on its volume) and ready.
    let started = Instant::now();
    match evict("main-1").await {
        Err(kube::Error::Api(s)) if s.code == 429 => {}
        Ok(_) => {
            let back = pods.get("main-0").await.expect("main-0 back");
            assert_ne!(back.uid(), first_uid, "main-0 is a new pod");
            assert!(
                back.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
                "the second eviction went through while main-0 was away"
            );
        }
        Err(e) => panic!("second eviction: {e}"),
    }
    println!("second eviction answered after {:.1}s, with main-0 back", started.elapsed().as_secs_f64());
    wait_ready(&kit, &ns, "main", 3).await;
    kit.delete_namespace(&ns).await;
}

// A14. A member that cannot run says why: an image that cannot be pulled shows in the
// member table, the Degraded condition and a Warning Event.
#[tokio::test]
async fn a_member_that_cannot_run_says_why() {
    let (kit, ns) = setup("fault-image").await;
    let image = "etcd-pilot.local/etcd:v0.0.0-missing";
    create_cluster(&kit, &ns, cluster_manifest("main", 1, "3.4.23", json!({"image": image}))).await;
    // The pod may first be Unschedulable for a moment (the scheduler has not seen its
    // new PVC yet): the image problem is what is waited for.
    let ec = wait_for(&kit, &ns, "main", "Degraded=True/MembersNotRunning with the pull error", |ec| {
        condition(ec, "Degraded")
            .is_some_and(|c| c.1 == "MembersNotRunning" && c.2.contains("main-0") && c.2.contains("Pull"))
    })
    .await;
    let (_, _, message) = condition(&ec, "Degraded").expect("Degraded");
    assert!(message.contains("ErrImagePull") || message.contains("ImagePullBackOff"), "{message}");
    let row = ec.status.iter().flat_map(|s| &s.members).find(|m| m.name == "main-0").cloned().expect("member row");
    assert!(row.errors.iter().any(|e| e.starts_with("pod: ") && e.contains("Pull")), "{row:?}");
    let ev = events(&kit, &ns, "main").await;
    assert!(ev.iter().any(|e| e.starts_with("Warning MemberNotRunning") && e.contains("main-0")), "{ev:#?}");
    kit.delete_namespace(&ns).await;
}

// A9 (volumes). `storage.size` raised on the testbed's `local-path` class, which does not
// allow expansion: a condition and a Warning say why, no claim and no pod is touched;
// a smaller size is refused the same way; back to the size the volumes have, all is well.
// Member pods run non-root (A11) with their volume theirs through fsGroup.
#[tokio::test]
async fn a_volume_size_the_storage_class_cannot_give_is_refused_with_a_reason() {
    let (kit, ns) = setup("fault-volume").await;
    // A 16 MiB quota: volumes from 532Mi are valid (quota + 25% + 512Mi).
    let spec = json!({"storage": {"size": "1Gi"}, "etcd": {"quotaBackendBytes": 16777216}});
    create_cluster(&kit, &ns, cluster_manifest("main", 1, "3.5.30", spec)).await;
    let ec = wait_ready(&kit, &ns, "main", 1).await;
    assert_eq!(condition(&ec, "StorageAtSize").map(|c| c.1), Some("AtSize".into()));
    let pods_before = pod_uids(&member_pods(&kit, &ns, "main").await);
    let pod = member_pods(&kit, &ns, "main").await.remove(0);
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.clone()).expect("pod securityContext");
    assert_eq!((psc.run_as_non_root, psc.run_as_user, psc.fs_group), (Some(true), Some(65532), Some(65532)));
    let requested = || async {
        Api::<PersistentVolumeClaim>::namespaced(kit.client.clone(), &ns)
            .get("data-main-0")
            .await
            .expect("claim")
            .spec
            .and_then(|s| s.resources)
            .and_then(|r| r.requests)
            .and_then(|r| r.get("storage").map(|q| q.0.clone()))
    };

    patch_spec(&kit, &ns, "main", json!({"storage": {"size": "2Gi"}})).await;
    let ec = wait_for(&kit, &ns, "main", "StorageAtSize=False/ExpansionNotAllowed", |ec| {
        condition(ec, "StorageAtSize").is_some_and(|c| c.0 == "False" && c.1 == "ExpansionNotAllowed")
    })
    .await;
    let msg = condition(&ec, "StorageAtSize").map(|c| c.2).unwrap_or_default();
    assert!(msg.contains("StorageClass local-path does not allow volume expansion"), "{msg}");
    let ev = events(&kit, &ns, "main").await;
    assert!(ev.iter().any(|e| e.contains("Warning ExpansionNotAllowed:")), "{ev:#?}");
    assert_eq!(requested().await.as_deref(), Some("1Gi"), "the claim is not touched");

    patch_spec(&kit, &ns, "main", json!({"storage": {"size": "768Mi"}})).await;
    wait_for(&kit, &ns, "main", "StorageAtSize=False/ShrinkNotPossible", |ec| {
        condition(ec, "StorageAtSize").is_some_and(|c| c.0 == "False" && c.1 == "ShrinkNotPossible")
    })
    .await;
    patch_spec(&kit, &ns, "main", json!({"storage": {"size": "1024Mi"}})).await;
    wait_for(&kit, &ns, "main", "StorageAtSize=True (1024Mi is 1Gi)", |ec| {
        condition(ec, "StorageAtSize").is_some_and(|c| c.0 == "True")
    })
    .await;
    assert_eq!(requested().await.as_deref(), Some("1Gi"));
    assert_eq!(pod_uids(&member_pods(&kit, &ns, "main").await), pods_before, "no member pod restarted");
    let ev = events(&kit, &ns, "main").await;
    assert!(!ev.iter().any(|e| e.contains("ExpandingVolume")), "nothing grown: {ev:#?}");
    kit.delete_namespace(&ns).await;
}
