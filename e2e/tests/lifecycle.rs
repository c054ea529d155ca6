//! EtcdCluster lifecycle on the testbed, with etcd-pilot installed by `helm install` of
//! `charts/etcd-pilot` and running in-cluster: create, scale under writes, heal,
//! operator failover, upgrade under writes, bad input, deletion.
//!
//! The test process talks to etcd from the host through the client Service's ClusterIP
//! (kube-proxy routes it), with the client certificate etcd-pilot issued.

use etcd_pilot_e2e::fixtures::*;
use etcd_pilot_e2e::traffic::*;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions};
use etcd_pilot::api::EtcdCluster;
use etcd_pilot_e2e::images::ETCD_REPOSITORY;
use etcd_pilot_e2e::kit::{Kit, OPERATOR_NS};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

// 1. Create: Available with 3 healthy voters on 3 nodes; TLS client writes and reads
// through the client Service.
#[tokio::test]
async fn a_new_cluster_is_available_and_serves_tls_clients() {
    let (kit, ns) = setup("lc-create").await;
    create_cluster(&kit, &ns, cluster_manifest("main", 3, "3.4.23", json!({}))).await;
    let ec = wait_ready(&kit, &ns, "main", 3).await;
    let pods = member_pods(&kit, &ns, "main").await;
    assert_eq!(nodes_of(&pods).len(), 3, "members spread over 3 nodes: {:?}", nodes_of(&pods));
    let s = ec.status.as_ref().unwrap();
    assert!(s.leader.is_some() && s.cluster_id.is_some());
    assert_eq!(s.version.as_deref(), Some("3.4.23"));
    assert_eq!(s.client_endpoints[0], format!("https://main-client.{ns}.svc:2379"));

    let mut client = etcd(&kit, &ns, "main").await;
    client.put("/registry/pods/default/x", "hello", None).await.expect("put");
    let got = client.get("/registry/pods/default/x", None).await.expect("get");
    assert_eq!(got.kvs()[0].value(), b"hello");

    // Plain text and a certificate-less TLS client are refused: client-cert auth is on.
    let svc = Api::<Service>::namespaced(kit.client.clone(), &ns).get("main-client").await.unwrap();
    let ip = svc.spec.and_then(|s| s.cluster_ip).unwrap();
    let plain = Client::connect(
        [format!("http://{ip}:2379")],
        Some(ConnectOptions::new().with_connect_timeout(Duration::from_secs(2)).with_timeout(Duration::from_secs(3))),
    )
    .await;
    if let Ok(mut c) = plain {
        assert!(c.get("x", None).await.is_err(), "plain text must not be served");
    }

    // Owned objects and the policy/v1 warning (this Kubernetes is 1.20).
    for p in &pods {
        assert_eq!(p.owner_references()[0].kind, "EtcdCluster");
        assert_eq!(p.labels()["app.kubernetes.io/managed-by"], "etcd-pilot");
    }
    let ev = events(&kit, &ns, "main").await;
    // This Kubernetes 1.20 serves no policy/v1: the budget is a policy/v1beta1 one.
    let gvk = kube::api::GroupVersionKind::gvk("policy", "v1beta1", "PodDisruptionBudget");
    let ar = kube::api::ApiResource::from_gvk_with_plural(&gvk, "poddisruptionbudgets");
    let pdb = Api::<kube::api::DynamicObject>::namespaced_with(kit.client.clone(), &ns, &ar)
        .get("main")
        .await
        .expect("a policy/v1beta1 PodDisruptionBudget");
    assert_eq!(pdb.data["spec"]["maxUnavailable"], 1);
    assert!(!ev.iter().any(|e| e.contains("NoPodDisruptionBudget")), "{ev:#?}");
    assert!(ev.iter().any(|e| e.contains("Bootstrapping")), "{ev:#?}");
    // etcd 3.4 is past its end of life: said, with the way out, and nothing changed.
    let (status, reason, message) = condition(&ec, "VersionSupported").expect("VersionSupported");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "EndOfLife"), "{message}");
    assert!(message.contains("spec.version: 3.5.30") && message.contains("user guide"), "{message}");
    let ev = wait_event(&kit, &ns, "main", |e| e.starts_with("Warning EndOfLife")).await;
    assert_eq!(ev.iter().filter(|e| e.starts_with("Warning EndOfLife")).count(), 1, "one Event: {ev:#?}");
    let now = clusters(&kit, &ns).get("main").await.expect("cluster");
    assert_eq!(now.spec.version, "3.4.23", "the user's version is left alone");

    // The operator's metrics show the cluster (its pod IP is reachable from the host).
    let want = format!("etcdpilot_cluster_healthy_members{{namespace=\"{ns}\",cluster=\"main\"}} 3");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let metrics = operator_metrics(&kit).await;
        if metrics.contains(&want)
            && metrics.contains(&format!("etcdpilot_cluster_members{{namespace=\"{ns}\",cluster=\"main\"}} 3"))
            && metrics.contains("etcdpilot_member_db_size_bytes{")
            && metrics.contains("etcdpilot_leader 1")
        {
            // What the chart's alerts read: a leader, spec.size, every certificate's expiry
            // (issued now: about a year ahead for leaves, longer for the CA).
            let c = format!("namespace=\"{ns}\",cluster=\"main\"");
            assert!(metrics.contains(&format!("etcdpilot_cluster_has_leader{{{c}}} 1")), "{metrics}");
            assert!(metrics.contains(&format!("etcdpilot_cluster_desired_members{{{c}}} 3")), "{metrics}");
            assert!(metrics.contains(&format!("etcdpilot_cluster_quota_warn_ratio{{{c}}} 0.8")), "{metrics}");
            assert!(!metrics.contains(&format!("etcdpilot_cluster_alarm{{{c}")), "no alarm: {metrics}");
            let now = jiff::Timestamp::now().as_second();
            for cert in ["ca", "server", "peer", "client"] {
                let series = format!("etcdpilot_certificate_expiry_timestamp_seconds{{{c},certificate=\"{cert}\"}} ");
                let at: i64 = metrics
                    .lines()
                    .find_map(|l| l.strip_prefix(&series))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or_else(|| panic!("no {series}in:\n{metrics}"));
                assert!(at > now + 30 * 86400, "{cert} expires at {at}, now {now}");
            }
            break;
        }
        assert!(Instant::now() < deadline, "no {want} in:\n{metrics}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }

    // Every member's etcd /metrics on the peers Service's `metrics` port (what the chart's
    // members ServiceMonitor scrapes).
    let eps = Api::<k8s_openapi::api::core::v1::Endpoints>::namespaced(kit.client.clone(), &ns)
        .get("main-peers")
        .await
        .expect("the peers Service's Endpoints");
    let subsets = eps.subsets.unwrap_or_default();
    let port = subsets
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some("metrics"))
        .expect("a metrics port on the peers Service")
        .port;
    let ips: Vec<String> = subsets.iter().flat_map(|s| s.addresses.iter().flatten()).map(|a| a.ip.clone()).collect();
    assert_eq!(ips.len(), 3, "{ips:?}");
    for ip in ips {
        let body = http_get(&ip, port, "/metrics").await;
        assert!(body.contains("etcd_server_has_leader 1"), "member {ip}:{port}: {body}");
    }
    kit.delete_namespace(&ns).await;
}

// 2. Scale 3 -> 5 -> 3 under writes.
#[tokio::test]
async fn scaling_up_and_down_under_writes_loses_nothing() {
    let (kit, ns, writer, watcher) = three_members_under_writes("lc-scale").await;

    patch_spec(&kit, &ns, "main", json!({"size": 5})).await;
    let ec = wait_ready(&kit, &ns, "main", 5).await;
    let names: BTreeSet<String> = ec.status.unwrap().members.iter().map(|m| m.name.clone()).collect();
    assert_eq!(names, ["main-0", "main-1", "main-2", "main-3", "main-4"].map(String::from).into());

    // Make the member to be removed the leader, so the scale-down must move it.
    let mut client = etcd(&kit, &ns, "main").await;
    let list = client.member_list().await.unwrap();
    let victim = member_named(list.members(), "main-4").expect("main-4 in etcd's list").id();
    // Only the leader takes a move request: reconnect through the Service (a random
    // member each time) until one lands on it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !client.status().await.is_ok_and(|s| s.leader() == victim) {
        assert!(Instant::now() < deadline, "could not make main-4 the leader");
        if client.move_leader(victim).await.is_err() {
            client = etcd(&kit, &ns, "main").await;
        }
    }
    patch_spec(&kit, &ns, "main", json!({"size": 3})).await;
    wait_ready(&kit, &ns, "main", 3).await;

    let seen = watcher.finish().await;
    let (acked, failed) = writer.finish(&kit, &ns, "main").await;
    println!("scale 3->5->3: {acked} writes acknowledged, {failed} failed and retried; seen {seen:?}");
    assert!(seen.removed_leaders.is_empty(), "a leader was removed without a transfer: {seen:?}");
    assert_eq!(
        seen.removed.iter().collect::<BTreeSet<_>>(),
        ["main-3", "main-4"].iter().map(|s| s.to_string()).collect::<Vec<_>>().iter().collect()
    );
    // Scaled-away members' PVCs go by default (whenScaled: Delete).
    let pvcs =
        Api::<PersistentVolumeClaim>::namespaced(kit.client.clone(), &ns).list(&ListParams::default()).await.unwrap();
    let mut pvc_names: Vec<String> = pvcs.items.iter().map(|p| p.name_any()).collect();
    pvc_names.sort();
    assert_eq!(pvc_names, ["data-main-0", "data-main-1", "data-main-2"]);
    let ev = events(&kit, &ns, "main").await;
    for reason in ["AddingLearner", "PromotingLearner", "RemovingMember"] {
        assert!(ev.iter().any(|e| e.contains(reason)), "no {reason} Event: {ev:#?}");
    }
    // One Event per change: two learners added, two promoted, two members removed (the
    // bootstrap's own learners, main-1 and main-2, are not counted).
    let scaled = |e: &&String| e.contains("main-3") || e.contains("main-4");
    assert_eq!(ev.iter().filter(scaled).filter(|e| e.contains("AddingLearner")).count(), 2, "{ev:#?}");
    assert_eq!(ev.iter().filter(|e| e.contains("RemovingMember")).count(), 2, "{ev:#?}");
    assert!(ev.iter().any(|e| e.contains("MovingLeader: moving leadership to")), "the leader was moved first: {ev:#?}");
    // The operator's own order: each learner is promoted before the next is added (etcd
    // would refuse a second learner anyway; this is what etcd-pilot asked for).
    let membership: Vec<&str> = ev
        .iter()
        .filter(scaled)
        .filter_map(|e| ["AddingLearner", "PromotingLearner"].into_iter().find(|r| e.contains(r)))
        .collect();
    assert_eq!(membership, ["AddingLearner", "PromotingLearner", "AddingLearner", "PromotingLearner"], "{ev:#?}");
    kit.delete_namespace(&ns).await;
}

// 3. A deleted pod comes back with its data; a deleted pod + PVC is replaced.
#[tokio::test]
async fn lost_pods_return_with_data_and_lost_volumes_are_replaced() {
    let (kit, ns) = setup("lc-heal").await;
    create_cluster(&kit, &ns, cluster_manifest("main", 3, "3.4.23", json!({}))).await;
    wait_ready(&kit, &ns, "main", 3).await;
    let mut client = etcd(&kit, &ns, "main").await;
    client.put("keep", "me", None).await.unwrap();
    let before = client.member_list().await.unwrap();
    let id1 = member_named(before.members(), "main-1").expect("main-1 in etcd's list").id();

    let pods: Api<Pod> = Api::namespaced(kit.client.clone(), &ns);
    let old_uid = pods.get("main-1").await.unwrap().uid();
    pods.delete("main-1", &DeleteParams::default()).await.unwrap();
    let deadline = Instant::now() + WAIT;
    while pods.get_opt("main-1").await.unwrap().is_none_or(|p| p.uid() == old_uid) {
        assert!(Instant::now() < deadline, "pod main-1 not recreated");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    wait_ready(&kit, &ns, "main", 3).await;
    let mut client = etcd(&kit, &ns, "main").await;
    let after = client.member_list().await.unwrap();
    assert!(after.members().iter().any(|m| m.id() == id1), "the same member came back, with its data");

    // Pod and PVC gone: main-2 is removed and a fresh member (main-3) replaces it.
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(kit.client.clone(), &ns);
    pvcs.delete("data-main-2", &DeleteParams::default()).await.unwrap();
    pods.delete("main-2", &DeleteParams::default()).await.unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        let ec = wait_ready(&kit, &ns, "main", 3).await;
        let names: BTreeSet<String> = ec.status.unwrap().members.iter().map(|m| m.name.clone()).collect();
        if names.contains("main-3") && !names.contains("main-2") {
            break;
        }
        assert!(Instant::now() < deadline, "main-2 not replaced: {names:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut client = etcd(&kit, &ns, "main").await;
    assert_eq!(client.get("keep", None).await.unwrap().kvs()[0].value(), b"me");
    kit.delete_namespace(&ns).await;
}

// 4. The operator dies in the middle of a scale-up; the next one finishes it.
#[tokio::test]
async fn a_new_operator_finishes_a_scale_up_the_old_one_started() {
    let (kit, ns) = setup("lc-failover").await;
    create_cluster(&kit, &ns, cluster_manifest("main", 3, "3.4.23", json!({}))).await;
    wait_ready(&kit, &ns, "main", 3).await;
    let mut client = etcd(&kit, &ns, "main").await;
    patch_spec(&kit, &ns, "main", json!({"size": 5})).await;
    // Wait for the first learner, then kill the operator without a grace period.
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(l) = client.member_list().await
            && l.members().iter().any(|m| m.is_learner())
        {
            break;
        }
        assert!(Instant::now() < deadline, "no learner appeared");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Two replicas run (the e2e install has a standby): kill the one holding the Lease,
    // without a grace period, in the middle of the scale-up.
    let ops: Api<Pod> = Api::namespaced(kit.client.clone(), OPERATOR_NS);
    let leases = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(kit.client.clone(), OPERATOR_NS);
    let holder =
        |l: k8s_openapi::api::coordination::v1::Lease| l.spec.and_then(|s| s.holder_identity).unwrap_or_default();
    let killed = holder(leases.get(LEASE).await.expect("leader-election Lease"));
    ops.delete(&killed, &DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() })
        .await
        .expect("kill the leading replica");
    let ec = wait_ready(&kit, &ns, "main", 5).await;
    let members: BTreeSet<String> = ec.status.unwrap().members.iter().map(|m| m.name.clone()).collect();
    let pods: BTreeSet<String> = member_pods(&kit, &ns, "main").await.iter().map(|p| p.name_any()).collect();
    // What the two replicas did, in every failure message below.
    let ev = events(&kit, &ns, "main").await;
    assert_eq!(members, pods, "one pod per member: no orphan member, no extra pod; {ev:#?}");
    assert_eq!(members, ["main-0", "main-1", "main-2", "main-3", "main-4"].map(String::from).into(), "{ev:#?}");
    let list = client.member_list().await.unwrap();
    assert_eq!(list.members().len(), 5, "etcd has exactly the 5 members");
    // Exactly one membership change per step, across the two replicas: no ordinal
    // skipped (main-0..4 above), and no add or promotion announced twice (the killed
    // replica may die between a change and its Event, hence at most).
    // (The bootstrap's own learners, main-1 and main-2, are not counted.)
    let scaled = |e: &&String| e.contains("main-3") || e.contains("main-4");
    assert!(ev.iter().filter(scaled).filter(|e| e.contains("AddingLearner")).count() <= 2, "{ev:#?}");
    assert!(ev.iter().filter(scaled).filter(|e| e.contains("PromotingLearner")).count() <= 2, "{ev:#?}");
    // The standby took over: the Lease is held by a running replica other than the one killed.
    let now = holder(leases.get(LEASE).await.expect("Lease"));
    assert_ne!(now, killed);
    let running = ops.get(&now).await.expect("the new holder runs");
    assert!(running.metadata.deletion_timestamp.is_none());
    kit.delete_namespace(&ns).await;
}

// 5. Upgrades under writes, leader last: the minor 3.4.23 -> 3.5.30 and the patch
// 3.5.16 -> 3.5.30 (current Debian releases; 3.5.0-3.5.2 had a data-inconsistency bug).
async fn upgrade_under_writes(prefix: &str, from: &str, to: &str) {
    let (kit, ns) = setup(prefix).await;
    create_cluster(&kit, &ns, cluster_manifest("main", 3, from, json!({}))).await;
    wait_ready(&kit, &ns, "main", 3).await;
    let writer = Writer::start(&kit, &ns, "main").await;
    let watcher = Watcher::start(&kit, &ns, "main").await;
    writer.wait_acked(20).await;
    patch_spec(&kit, &ns, "main", json!({"version": to})).await;
    let deadline = Instant::now() + WAIT;
    let ec = loop {
        let ec = wait_ready(&kit, &ns, "main", 3).await;
        let s = ec.status.as_ref().unwrap();
        if s.members.iter().all(|m| m.version.as_deref() == Some(to)) {
            break ec;
        }
        assert!(Instant::now() < deadline, "not upgraded: {:?}", s.members);
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let seen = watcher.finish().await;
    let (acked, failed) = writer.finish(&kit, &ns, "main").await;
    println!("upgrade {from} -> {to}: {acked} writes acknowledged, {failed} failed and retried, 0 lost; seen {seen:?}");
    assert_eq!(ec.status.unwrap().version.as_deref(), Some(to));
    assert_eq!(seen.terminated.len(), 3, "each member restarted once: {seen:?}");
    assert!(seen.restarted_leaders.is_empty(), "a member was restarted while leading: {seen:?}");
    for p in member_pods(&kit, &ns, "main").await {
        let image = p.spec.unwrap().containers[0].image.clone().unwrap();
        assert_eq!(image, format!("{ETCD_REPOSITORY}:v{to}"));
    }
    kit.delete_namespace(&ns).await;
}

#[tokio::test]
async fn upgrading_a_minor_version_under_writes_loses_nothing_and_restarts_the_leader_last() {
    upgrade_under_writes("lc-upgrade", "3.4.23", "3.5.30").await;
}

#[tokio::test]
async fn upgrading_a_patch_version_under_writes_loses_nothing() {
    upgrade_under_writes("lc-patch", "3.5.16", "3.5.30").await;
}

// 6. Bad input: refused by the API server, or reported and left alone.
#[tokio::test]
async fn bad_input_is_refused_or_reported_and_changes_nothing() {
    let (kit, ns) = setup("lc-bad").await;
    for size in [2, 4, 0, 9] {
        let ec: EtcdCluster =
            serde_json::from_value(cluster_manifest(&format!("bad-{size}"), size, "3.4.23", json!({}))).unwrap();
        let err = clusters(&kit, &ns).create(&PostParams::default(), &ec).await.expect_err("size must be refused");
        let msg = err.to_string();
        assert!(
            msg.contains("spec.size") && msg.contains("supported values: \"1\", \"3\", \"5\", \"7\""),
            "size {size}: {msg}"
        );
    }

    create_cluster(&kit, &ns, cluster_manifest("main", 1, "3.4.23", json!({}))).await;
    let ready = wait_ready(&kit, &ns, "main", 1).await;
    let pod_uid = member_pods(&kit, &ns, "main").await[0].uid();
    for (spec, field, reason_text) in [
        (json!({"version": "3.6.0"}), "spec.version", "minor"),
        (json!({"topology": "Stacked"}), "spec.topology", "live cluster"),
    ] {
        patch_spec(&kit, &ns, "main", spec).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        let ec = loop {
            let ec = clusters(&kit, &ns).get("main").await.unwrap();
            if condition(&ec, "SpecValid").is_some_and(|c| c.0 == "False" && c.2.contains(field)) {
                break ec;
            }
            assert!(Instant::now() < deadline, "no SpecValid=False for {field}: {:?}", ec.status);
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let (_, _, message) = condition(&ec, "SpecValid").unwrap();
        assert!(message.contains(reason_text), "{message}");
        let ev = events(&kit, &ns, "main").await;
        assert!(ev.iter().any(|e| e.starts_with("Warning InvalidSpec") && e.contains(field)), "{ev:#?}");
        // Nothing changed: the same pod, the same version, still available.
        let pods = member_pods(&kit, &ns, "main").await;
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0].uid(), pod_uid);
        assert_eq!(ec.status.as_ref().unwrap().version, ready.status.as_ref().unwrap().version);
        assert_eq!(condition(&ec, "Available").unwrap().0, "True");
        // Put it back.
        patch_spec(&kit, &ns, "main", json!({"version": "3.4.23", "topology": "External"})).await;
    }
    wait_ready(&kit, &ns, "main", 1).await;
    kit.delete_namespace(&ns).await;
}

// 7. Deleting the cluster deletes what it owns; PVCs per retention.
#[tokio::test]
async fn deleting_a_cluster_removes_what_it_owns_and_pvcs_per_policy() {
    let (kit, ns) = setup("lc-delete").await;
    create_cluster(
        &kit,
        &ns,
        cluster_manifest("gone", 1, "3.4.23", json!({"storage": {"retention": {"whenDeleted": "Delete"}}})),
    )
    .await;
    create_cluster(&kit, &ns, cluster_manifest("kept", 1, "3.4.23", json!({}))).await;
    wait_ready(&kit, &ns, "gone", 1).await;
    wait_ready(&kit, &ns, "kept", 1).await;
    for name in ["gone", "kept"] {
        clusters(&kit, &ns).delete(name, &DeleteParams::foreground()).await.unwrap();
    }
    let pods: Api<Pod> = Api::namespaced(kit.client.clone(), &ns);
    let svcs: Api<Service> = Api::namespaced(kit.client.clone(), &ns);
    let secrets: Api<Secret> = Api::namespaced(kit.client.clone(), &ns);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(kit.client.clone(), &ns);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left_pods = pods.list(&ListParams::default()).await.unwrap().items.len();
        let left_svcs = svcs.list(&ListParams::default()).await.unwrap().items.len();
        let left_secrets: Vec<String> = secrets
            .list(&ListParams::default().labels("app.kubernetes.io/managed-by=etcd-pilot"))
            .await
            .unwrap()
            .items
            .iter()
            .map(|s| s.name_any())
            .collect();
        let left_pvcs: Vec<String> =
            pvcs.list(&ListParams::default()).await.unwrap().items.iter().map(|p| p.name_any()).collect();
        let clusters_left = clusters(&kit, &ns).list(&ListParams::default()).await.unwrap().items.len();
        if left_pods == 0
            && left_svcs == 0
            && left_secrets.is_empty()
            && left_pvcs == ["data-kept-0"]
            && clusters_left == 0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left: {left_pods} pods, {left_svcs} services, secrets {left_secrets:?}, PVCs {left_pvcs:?}, {clusters_left} clusters"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    kit.delete_namespace(&ns).await;
}

// spec.paused: no action, status still updated; unpaused, the change goes through.
#[tokio::test]
async fn a_paused_cluster_is_left_alone_and_resumes() {
    let (kit, ns) = setup("lc-paused").await;
    create_cluster(&kit, &ns, cluster_manifest("main", 1, "3.4.23", json!({}))).await;
    wait_ready(&kit, &ns, "main", 1).await;
    patch_spec(&kit, &ns, "main", json!({"paused": true, "size": 3})).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ec = clusters(&kit, &ns).get("main").await.unwrap();
        if condition(&ec, "Progressing").is_some_and(|c| c.1 == "Paused")
            && ec.status.as_ref().and_then(|s| s.observed_generation) == ec.metadata.generation
        {
            break;
        }
        assert!(Instant::now() < deadline, "status does not say Paused: {:?}", ec.status);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Passes that could have acted, and did not.
    wait_passes(&kit, &ns, "main", 3).await;
    let pods = member_pods(&kit, &ns, "main").await;
    assert_eq!(pods.len(), 1, "paused: no member added");
    let client_members = etcd(&kit, &ns, "main").await.member_list().await.unwrap().members().len();
    assert_eq!(client_members, 1);
    patch_spec(&kit, &ns, "main", json!({"paused": false})).await;
    wait_ready(&kit, &ns, "main", 3).await;
    kit.delete_namespace(&ns).await;
}

// Stacked: one member on each control-plane node.
#[tokio::test]
async fn a_stacked_cluster_runs_one_member_on_each_control_plane_node() {
    let (kit, ns) = setup("lc-stacked").await;
    create_cluster(&kit, &ns, cluster_manifest("cp", 3, "3.4.23", json!({"topology": "Stacked"}))).await;
    wait_ready(&kit, &ns, "cp", 3).await;
    let nodes = nodes_of(&member_pods(&kit, &ns, "cp").await);
    let control_planes: BTreeSet<String> =
        kit.state.nodes.iter().filter(|n| n.control_plane).map(|n| n.name.clone()).collect();
    assert_eq!(nodes, control_planes, "one member on each control-plane node");

    // On the host network, serving on the node's address, as kubeadm's stacked etcd: a
    // client there (the node's kube-apiserver) connects to the member with the server
    // certificate checked for that address, and writes through it.
    let pods = member_pods(&kit, &ns, "cp").await;
    let mut node_ips = Vec::new();
    for p in &pods {
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.host_network, Some(true), "{} on the host network", p.name_any());
        let status = p.status.as_ref().unwrap();
        let host_ip = status.host_ip.clone().expect("node address");
        assert_eq!(
            status.pod_ip.as_deref(),
            Some(host_ip.as_str()),
            "{}: the pod's address is its node's",
            p.name_any()
        );
        let want = kit.state.nodes.iter().find(|n| Some(&n.name) == spec.node_name.as_ref()).unwrap();
        assert_eq!(host_ip, want.ip, "{} on {}'s address", p.name_any(), want.name);
        node_ips.push((p.name_any(), host_ip));
    }
    node_ips.sort();
    for (member, ip) in &node_ips {
        let mut c = wait_for(&format!("{member} at https://{ip}:2379"), Duration::from_secs(60), || async {
            node_address_etcd(&kit, &ns, "cp", ip).await.ok()
        })
        .await;
        c.put(format!("via/{member}"), ip.as_str(), None).await.unwrap_or_else(|e| panic!("put via {ip}: {e}"));
    }
    let mut any = etcd(&kit, &ns, "cp").await;
    let written = any.get("via/", Some(etcd_client::GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!(written.kvs().len(), 3, "one write through each member's node address");

    // The wiring for a node's kube-apiserver: the members' node addresses, in member order.
    patch_spec(&kit, &ns, "cp", json!({"apiServer": {}})).await;
    let want: Vec<String> = node_ips.iter().map(|(_, ip)| format!("https://{ip}:2379")).collect();
    let want = want.join(",");
    wait_for(&format!("etcd-servers {want}"), Duration::from_secs(90), || async {
        let s = Api::<Secret>::namespaced(kit.client.clone(), &ns).get_opt("cp-apiserver-etcd").await.ok()??;
        let got = String::from_utf8(s.data?.get("etcd-servers")?.0.clone()).ok()?;
        (got == want).then_some(())
    })
    .await;
    kit.delete_namespace(&ns).await;
}

/// The certificate (DER) a TLS server presents, from a fresh handshake. etcd asks for a
/// client certificate and the handshake then fails, after the server's was received.
fn served_certificate(addr: &str) -> Option<Vec<u8>> {
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    #[derive(Debug)]
    struct Capture(Mutex<Option<Vec<u8>>>);
    impl ServerCertVerifier for Capture {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            *self.0.lock().unwrap() = Some(end_entity.to_vec());
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider().signature_verification_algorithms.supported_schemes()
        }
    }
    let capture = Arc::new(Capture(Mutex::new(None)));
    let config = rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(capture.clone())
        .with_no_client_auth();
    let mut conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("etcd").ok()?.to_owned()).ok()?;
    let mut sock = std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(3)).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    for _ in 0..10 {
        if conn.complete_io(&mut sock).is_err() || !conn.is_handshaking() {
            break;
        }
    }
    capture.0.lock().unwrap().take()
}

/// [`served_certificate`], once a member answers: a certificate issued by `ca_pem`.
/// kube-proxy routes a ClusterIP a moment after its pods turn ready; until then the
/// address leads off the host, where a sandbox's egress proxy may answer TLS with a
/// certificate of its own.
async fn served(addr: &str, ca_pem: &[u8]) -> Vec<u8> {
    let ca = String::from_utf8_lossy(ca_pem);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(cert) = served_certificate(addr)
            && etcd_pilot::pki::der_signed_by(&cert, &ca)
        {
            return cert;
        }
        assert!(Instant::now() < deadline, "no member answered TLS at {addr} with a certificate of the CA");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn pem_der(pem: &[u8]) -> Vec<u8> {
    etcd_pilot::pki::pem_to_der(&String::from_utf8_lossy(pem)).expect("a PEM certificate")
}

async fn secret_data(kit: &Kit, ns: &str, name: &str) -> std::collections::BTreeMap<String, k8s_openapi::ByteString> {
    Api::<Secret>::namespaced(kit.client.clone(), ns).get(name).await.expect("Secret").data.expect("data")
}

fn restarts(pods: &[Pod]) -> BTreeMap<String, (String, i32)> {
    pods.iter()
        .map(|p| {
            let r = p.status.as_ref().and_then(|s| s.container_statuses.as_ref()).map_or(0, |c| c[0].restart_count);
            (p.name_any(), (p.uid().unwrap_or_default(), r))
        })
        .collect()
}

// TLS rotation: renewed leaf certificates reach etcd without a restart and without a
// failed write.
#[tokio::test]
async fn renewed_certificates_are_served_without_restarting_a_member() {
    let (kit, ns) = setup("lc-rotate").await;
    create_cluster(&kit, &ns, cluster_manifest("main", 3, "3.4.23", json!({}))).await;
    wait_ready(&kit, &ns, "main", 3).await;
    let before = restarts(&member_pods(&kit, &ns, "main").await);
    let svc = Api::<Service>::namespaced(kit.client.clone(), &ns).get("main-client").await.unwrap();
    let addr = format!("{}:2379", svc.spec.and_then(|s| s.cluster_ip).unwrap());
    let old = secret_data(&kit, &ns, "main-server-tls").await;
    assert_eq!(served(&addr, &old["ca.crt"].0).await, pem_der(&old["tls.crt"].0), "etcd serves the issued certificate");

    let writer = Writer::start(&kit, &ns, "main").await;
    // Certificates now live 400 days and are renewed 366 days before expiry: today's,
    // with 365 days left, are due.
    patch_spec(&kit, &ns, "main", json!({"tls": {"certificateValidityDays": 400, "renewBeforeDays": 366}})).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let new = loop {
        let now = secret_data(&kit, &ns, "main-server-tls").await;
        if now["tls.crt"] != old["tls.crt"] {
            break now;
        }
        assert!(Instant::now() < deadline, "the server certificate was not renewed");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(new["ca.crt"], old["ca.crt"], "renewed by the same CA");
    // The kubelet refreshes the mounted Secret within its sync period; etcd reads the
    // files at each handshake.
    let want = pem_der(&new["tls.crt"].0);
    let deadline = Instant::now() + Duration::from_secs(180);
    while served_certificate(&addr).as_ref() != Some(&want) {
        assert!(Instant::now() < deadline, "etcd does not serve the renewed certificate");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // New connections (fresh handshakes with the renewed client certificate) work.
    let mut client = etcd(&kit, &ns, "main").await;
    client.put("after-rotation", "yes", None).await.expect("write after rotation");
    let (acked, failed) = writer.finish(&kit, &ns, "main").await;
    println!("rotation: {acked} writes acknowledged, {failed} failed");
    assert_eq!(failed, 0, "no write failed while certificates rotated");
    wait_ready(&kit, &ns, "main", 3).await;
    assert_eq!(restarts(&member_pods(&kit, &ns, "main").await), before, "no member pod restarted or replaced");
    let ev = events(&kit, &ns, "main").await;
    assert!(ev.iter().any(|e| e.contains("CertificateIssued") && e.contains("expiring")), "{ev:#?}");
    kit.delete_namespace(&ns).await;
}

// tls.mode Secrets: the user's own certificates.
#[tokio::test]
async fn a_cluster_runs_on_certificates_the_user_provides() {
    use etcd_pilot::pki::{self, Usage};
    let (kit, ns) = setup("lc-usertls").await;
    let year = Duration::from_secs(365 * 24 * 3600);
    let ca = pki::generate_ca("my own etcd CA", year).unwrap();
    // etcd checks a peer's certificate against the reverse DNS name of its IP: the
    // fully qualified name must be there.
    let peers = vec![format!("*.user-peers.{ns}.svc"), format!("*.user-peers.{ns}.svc.cluster.local")];
    let server_sans = vec![peers[0].clone(), format!("user-client.{ns}.svc")];
    let certs = [
        ("my-peer", pki::issue(&ca, "peer", &peers, Usage::Peer, year).unwrap()),
        ("my-server", pki::issue(&ca, "server", &server_sans, Usage::Server, year).unwrap()),
        ("my-client", pki::issue(&ca, "me", &[], Usage::Client, year).unwrap()),
    ];
    for (name, pair) in &certs {
        let _: Secret = kit
            .create(
                &ns,
                json!({"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "metadata": {"name": name},
                       "stringData": {"tls.crt": pair.cert_pem, "tls.key": pair.key_pem, "ca.crt": ca.cert_pem}}),
            )
            .await;
    }
    let tls = json!({"tls": {"mode": "Secrets", "secrets": {"peer": "my-peer", "server": "my-server", "client": "my-client"}}});
    create_cluster(&kit, &ns, cluster_manifest("user", 3, "3.4.23", tls)).await;
    wait_ready(&kit, &ns, "user", 3).await;
    let mut client = etcd_with(&kit, &ns, "user", "my-client").await;
    client.put("mine", "yes", None).await.expect("put with the user's client certificate");
    let svc = Api::<Service>::namespaced(kit.client.clone(), &ns).get("user-client").await.unwrap();
    let addr = format!("{}:2379", svc.spec.and_then(|s| s.cluster_ip).unwrap());
    assert_eq!(served(&addr, ca.cert_pem.as_bytes()).await, pem_der(certs[1].1.cert_pem.as_bytes()));
    let generated = Api::<Secret>::namespaced(kit.client.clone(), &ns).get_opt("user-ca").await.unwrap();
    assert!(generated.is_none(), "no operator CA in mode Secrets");
    kit.delete_namespace(&ns).await;
}
