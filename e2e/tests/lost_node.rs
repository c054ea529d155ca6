//! A17. A lost node: a worker of the testbed stopped for good (its kubelet, every
//! container on it and its container runtime killed at once). The member there is
//! replaced on another node once `replaceUnhealthyAfterSeconds` has passed, with no
//! acknowledged write lost and never a second member removed. Runs alone on the testbed
//! (a node going away would disturb other tests' clusters); the node is started again
//! at the end, pass or fail.

use std::time::{Duration, Instant};

use etcd_pilot_e2e::fixtures::*;
use etcd_pilot_e2e::kit::{Kit, OPERATOR_NS};
use etcd_pilot_e2e::traffic::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::Api;
use serde_json::json;

fn node_of(p: &Pod) -> Option<String> {
    p.spec.as_ref().and_then(|s| s.node_name.clone())
}

/// The node the acting operator replica runs on.
async fn operator_node(kit: &Kit) -> Option<String> {
    let holder =
        Api::<Lease>::namespaced(kit.client.clone(), OPERATOR_NS).get(LEASE).await.ok()?.spec?.holder_identity?;
    node_of(&Api::<Pod>::namespaced(kit.client.clone(), OPERATOR_NS).get(&holder).await.ok()?)
}

async fn node_ready(kit: &Kit, node: &str) -> bool {
    let n = Api::<Node>::all(kit.client.clone()).get(node).await.expect("node");
    n.status.and_then(|s| s.conditions).unwrap_or_default().iter().any(|c| c.type_ == "Ready" && c.status == "True")
}

#[tokio::test]
async fn a_lost_nodes_member_is_replaced_on_another_node() {
    let (kit, ns) = setup("fault-node").await;
    let healing = json!({"healing": {"replaceUnhealthyAfterSeconds": 30}});
    create_cluster(&kit, &ns, cluster_manifest("main", 3, "3.5.30", healing)).await;
    let ec = wait_ready(&kit, &ns, "main", 3).await;
    let leader = ec.status.as_ref().and_then(|s| s.leader.clone()).unwrap_or_default();
    let operator = operator_node(&kit).await;
    // The leader's node when the operator does not run there (losing the operator's own
    // node is a different fault: its Lease moves), else a follower's.
    let pods = member_pods(&kit, &ns, "main").await;
    let mut candidates: Vec<&Pod> = pods.iter().filter(|p| node_of(p).is_some() && node_of(p) != operator).collect();
    candidates.sort_by_key(|p| p.name_any() != leader);
    let victim = candidates.first().map(|p| p.name_any()).expect("a member on a node without the operator");
    let node = pods.iter().find(|p| p.name_any() == victim).and_then(node_of).expect("victim's node");
    println!("lost node: stopping {node} (member {victim}, leader {leader}, operator on {operator:?})");

    let writer = Writer::start(&kit, &ns, "main").await;
    writer.wait_acked(100).await;
    let dir = kit.state.dir.clone();
    etcd_pilot_e2e::cluster::stop_node(&dir, &node).expect("stop the node");
    let started = Instant::now();

    let body = {
        let (ns, victim, node) = (ns.clone(), victim.clone(), node.clone());
        tokio::spawn(async move {
            let kit = Kit::connect().await;
            // Healed: three healthy voters, the lost member not among them, and its
            // replacement on another node.
            let ec = wait_for_ready_without(&kit, &ns, &victim).await;
            let healed = started.elapsed();
            let pods = member_pods(&kit, &ns, "main").await;
            let members: Vec<String> =
                ec.status.iter().flat_map(|s| &s.members).filter(|m| !m.id.is_empty()).map(|m| m.name.clone()).collect();
            for p in pods.iter().filter(|p| members.contains(&p.name_any())) {
                assert_ne!(node_of(p).as_deref(), Some(node.as_str()), "{} runs on the lost node", p.name_any());
            }
            let ev = events(&kit, &ns, "main").await;
            let removals: Vec<&String> = ev.iter().filter(|e| e.contains(" RemovingMember:")).collect();
            assert_eq!(removals.len(), 1, "exactly one member removed: {ev:#?}");
            assert!(removals[0].contains(&victim), "the lost member was the one removed: {ev:#?}");
            // The order the operator acted in: the removal, then the new member.
            let removed_at = ev.iter().position(|e| e.contains(" RemovingMember:")).unwrap_or(usize::MAX);
            // (The last learner added: the bootstrap added its own before.)
            let added_at = ev.iter().rposition(|e| e.contains(" AddingLearner:")).unwrap_or(0);
            assert!(removed_at < added_at, "removed before a new member was added: {ev:#?}");
            let (acked, failed) = writer.finish(&kit, &ns, "main").await;
            println!(
                "lost node {node} ({victim}): {acked} writes acknowledged ({failed} failed and retried), 0 lost, 3 healthy voters {:.1}s after the node stopped",
                healed.as_secs_f64()
            );
        })
        .await
    };
    // Pass or fail, the node comes back for the tests after this one.
    etcd_pilot_e2e::cluster::start_node(&dir, &node).await.expect("start the node again");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !node_ready(&kit, &node).await {
        assert!(Instant::now() < deadline, "{node} not Ready again after 120 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if let Err(e) = body {
        std::panic::resume_unwind(e.into_panic());
    }
    // The lost member's pod, stuck while its node was away, goes once the node is back.
    let deadline = Instant::now() + Duration::from_secs(120);
    while member_pods(&kit, &ns, "main").await.iter().any(|p| p.name_any() == victim) {
        assert!(Instant::now() < deadline, "{victim}'s pod still there 120 s after its node came back");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    kit.delete_namespace(&ns).await;
}

/// Ready with three members, none of them `gone`.
async fn wait_for_ready_without(kit: &Kit, ns: &str, gone: &str) -> etcd_pilot::api::EtcdCluster {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let ec = clusters(kit, ns).get("main").await.expect("cluster");
        let s = ec.status.clone().unwrap_or_default();
        // The lost member's pod may stay in the table (terminating on its unreachable
        // node, no member id) until the node comes back.
        let voters: Vec<_> = s.members.iter().filter(|m| !m.id.is_empty()).collect();
        let ok = condition(&ec, "Available").is_some_and(|c| c.0 == "True")
            && voters.len() == 3
            && voters.iter().all(|m| m.healthy && !m.learner && m.name != gone);
        if ok {
            return ec;
        }
        assert!(
            Instant::now() < deadline,
            "{ns}/main not healed without {gone}\nstatus: {:#?}\nevents:\n{}",
            ec.status,
            events(kit, ns, "main").await.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
