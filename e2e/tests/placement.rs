//! Never a voter that cannot run (issue 26), on the testbed: 3 tainted control-plane
//! nodes and 3 workers. Throughout each test a watcher samples etcd's member list and the
//! member pods and records every voter whose pod had never run: there must be none.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use etcd_pilot::api::EtcdCluster;
use etcd_pilot_e2e::fixtures::*;
use etcd_pilot_e2e::kit::Kit;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use serde_json::json;

/// Samples etcd's voters and the member pods until stopped. A voter must have a pod that
/// runs on a node, or one that did at an earlier sample (a member restarted later, for a
/// spec change, was a running voter before): a voter never seen running is a violation.
struct VoterWatch {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(usize, Vec<String>)>,
}

impl VoterWatch {
    fn start(kit: &Kit, ns: &str, name: &str) -> VoterWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let (kube, ns, name, flag) = (kit.client.clone(), ns.to_string(), name.to_string(), stop.clone());
        let task = tokio::spawn(async move {
            let (mut ran, mut violations, mut samples) = (BTreeSet::<String>::new(), Vec::new(), 0usize);
            let mut client = None;
            while !flag.load(Ordering::Relaxed) {
                if client.is_none() {
                    client = connect_once(&kube, &ns, &name).await;
                }
                let voters: Option<Vec<String>> = match client.as_mut() {
                    Some(c) => match c.member_list().await {
                        Ok(l) => Some(
                            l.members()
                                .iter()
                                .filter(|m| !m.is_learner())
                                .filter_map(|m| m.peer_urls().first().map(|u| member_of(u)))
                                .collect(),
                        ),
                        Err(_) => {
                            client = None;
                            None
                        }
                    },
                    None => None,
                };
                if let Some(voters) = voters {
                    let lp = kube::api::ListParams::default()
                        .labels(&format!("app.kubernetes.io/instance={name},app.kubernetes.io/component=member"));
                    let pods = kube::Api::<Pod>::namespaced(kube.clone(), &ns).list(&lp).await.map(|l| l.items);
                    if let Ok(pods) = pods {
                        samples += 1;
                        for p in pods.iter().filter(|p| runs(p)) {
                            ran.insert(p.name_any());
                        }
                        for v in voters.iter().filter(|v| !ran.contains(*v)) {
                            violations.push(format!("{v} is a voter and its pod never ran"));
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            (samples, violations)
        });
        VoterWatch { stop, task }
    }

    /// Stops; asserts it sampled and saw no voter that never ran.
    async fn finish(self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        let (samples, violations) = self.task.await.expect("watcher");
        assert!(samples > 10, "the watcher sampled the cluster ({samples} samples)");
        assert!(violations.is_empty(), "{violations:#?}");
        samples
    }
}

/// `https://main-3.main-peers.ns.svc:2380` -> `main-3`.
fn member_of(peer_url: &str) -> String {
    peer_url.trim_start_matches("https://").trim_start_matches("http://").split('.').next().unwrap_or_default().into()
}

/// Placed on a node and running.
fn runs(p: &Pod) -> bool {
    p.spec.as_ref().is_some_and(|s| s.node_name.is_some())
        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

async fn wait_cluster(kit: &Kit, ns: &str, what: &str, check: impl Fn(&EtcdCluster) -> bool) -> EtcdCluster {
    let deadline = Instant::now() + WAIT;
    loop {
        let ec = clusters(kit, ns).get("main").await.expect("get EtcdCluster");
        if check(&ec) {
            return ec;
        }
        if Instant::now() > deadline {
            panic!("{ns}/main: {what} not reached\n{}", describe(kit, ns, "main").await);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn voters(ec: &EtcdCluster) -> Vec<String> {
    ec.status
        .iter()
        .flat_map(|s| &s.members)
        .filter(|m| !m.learner && !m.id.is_empty() && m.healthy)
        .map(|m| m.name.clone())
        .collect()
}

// size 5, anti-affinity Required, on the testbed's 3 workers: a healthy 3-member cluster,
// a condition naming the 2 members that cannot be placed, no learner left Pending; the
// anti-affinity relaxed, it reaches 5 by itself.
#[tokio::test]
async fn five_members_one_per_node_on_three_workers_run_as_three_and_grow_when_placement_allows() {
    let (kit, ns) = setup("place-nodes").await;
    let watch = VoterWatch::start(&kit, &ns, "main");
    let spec = json!({"scheduling": {"antiAffinity": "Required"}});
    create_cluster(&kit, &ns, cluster_manifest("main", 5, "3.5.30", spec)).await;
    let ec = wait_cluster(&kit, &ns, "3 healthy voters and MembersPlaced=False", |ec| {
        voters(ec).len() == 3 && condition(ec, "MembersPlaced").is_some_and(|c| c.0 == "False")
    })
    .await;
    let (_, reason, message) = condition(&ec, "MembersPlaced").expect("MembersPlaced");
    assert_eq!(reason, "NotEnoughNodes", "{message}");
    assert!(message.starts_with("main-3 and main-4 cannot be placed: size 5 needs a node per member"), "{message}");
    let supported = condition(&ec, "VersionSupported").expect("VersionSupported");
    assert_eq!((supported.0.as_str(), supported.1.as_str()), ("True", "Supported"), "3.5.30: {supported:?}");
    let available = condition(&ec, "Available").expect("Available");
    assert_eq!(available.0, "True", "{available:?}");
    let progressing = condition(&ec, "Progressing").expect("Progressing");
    assert_eq!(progressing.0, "True", "not claimed to match its spec: {progressing:?}");
    assert!(progressing.2.contains("3 of 5 members run, one per node"), "{progressing:?}");
    // Nothing more is tried: no learner, no fourth pod, each member on its own worker.
    let pods = member_pods(&kit, &ns, "main").await;
    assert_eq!(pods.len(), 3, "no pod for a member no node can take");
    assert_eq!(nodes_of(&pods).len(), 3, "one worker each");
    let mut c = etcd(&kit, &ns, "main").await;
    let list = c.member_list().await.expect("member list");
    assert_eq!(list.members().len(), 3, "etcd has 3 members, no learner waiting");
    let ev = wait_event(&kit, &ns, "main", |e| e.starts_with("Warning NotEnoughNodes")).await;
    assert!(ev.iter().any(|e| e.contains("main-3 and main-4 cannot be placed")), "{ev:#?}");

    // Capacity: the anti-affinity relaxed. The new members join (as learners, promoted
    // once they run), then the first three roll onto the new spec.
    patch_spec(&kit, &ns, "main", json!({"scheduling": {"antiAffinity": "Preferred"}})).await;
    let ec = wait_ready(&kit, &ns, "main", 5).await;
    let placed = condition(&ec, "MembersPlaced").expect("MembersPlaced");
    assert_eq!((placed.0.as_str(), placed.1.as_str()), ("True", "Placed"), "{placed:?}");
    let samples = watch.finish().await;
    println!("5 on 3 workers: 3 voters, then 5 once relaxed; {samples} samples, no voter before its pod ran");
    kit.delete_namespace(&ns).await;
}

// A learner the scheduler cannot place (a request no node can give): it waits without
// voting, past the learner deadline, its pod Pending with the scheduler's words in the
// condition; the voters are not restarted meanwhile. The request taken back, its pod is
// replaced from the new spec and the cluster reaches 5.
#[tokio::test]
async fn a_learner_no_node_can_take_waits_without_voting_and_joins_when_the_spec_allows() {
    let (kit, ns) = setup("place-learner").await;
    let watch = VoterWatch::start(&kit, &ns, "main");
    // A short learner deadline: waiting past it is what is shown.
    let healing = json!({"healing": {"replaceUnhealthyAfterSeconds": 30}});
    create_cluster(&kit, &ns, cluster_manifest("main", 3, "3.5.30", healing)).await;
    wait_ready(&kit, &ns, "main", 3).await;
    let before: BTreeSet<String> = member_pods(&kit, &ns, "main").await.iter().filter_map(|p| p.uid()).collect();

    let huge = json!({"requests": {"cpu": "64", "memory": "64Mi"}, "limits": {"memory": "512Mi"}});
    patch_spec(&kit, &ns, "main", json!({"size": 5, "resources": huge})).await;
    let ec = wait_cluster(&kit, &ns, "MembersPlaced=False/Unschedulable", |ec| {
        condition(ec, "MembersPlaced").is_some_and(|c| c.1 == "Unschedulable")
    })
    .await;
    let message = condition(&ec, "MembersPlaced").map(|c| c.2).unwrap_or_default();
    assert!(
        message.starts_with("main-3 cannot be placed: 0/6 nodes are available"),
        "the scheduler's words: {message}"
    );
    assert!(message.contains("Insufficient cpu"), "{message}");
    // Past the learner deadline (30 s since its pod was made) it is still there, still a
    // learner, still Pending: looked at on every poll until then.
    let mut c = etcd(&kit, &ns, "main").await;
    let pods = kube::Api::<Pod>::namespaced(kit.client.clone(), &ns);
    let created = pods.get("main-3").await.expect("main-3's pod").metadata.creation_timestamp.expect("created").0;
    let list = loop {
        let p = pods.get("main-3").await.expect("main-3's pod is kept");
        assert!(!runs(&p), "nothing could place it");
        let list = c.member_list().await.expect("member list");
        assert!(list.members().iter().any(|m| m.is_learner()), "the learner is kept");
        if (jiff::Timestamp::now() - created).get_seconds() >= 40 {
            break list;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let learners: Vec<String> = list
        .members()
        .iter()
        .filter(|m| m.is_learner())
        .filter_map(|m| m.peer_urls().first().map(|u| member_of(u)))
        .collect();
    assert_eq!(learners, ["main-3"], "the learner waits, not given up on");
    assert_eq!(list.members().len(), 4);
    let ev = events(&kit, &ns, "main").await;
    assert!(!ev.iter().any(|e| e.contains("LearnerGivenUp")), "{ev:#?}");
    assert!(ev.iter().any(|e| e.starts_with("Warning Unschedulable") && e.contains("main-3")), "{ev:#?}");
    let ec = clusters(&kit, &ns).get("main").await.expect("cluster");
    assert_eq!(voters(&ec).len(), 3, "three healthy voters");
    let now: BTreeSet<String> = member_pods(&kit, &ns, "main")
        .await
        .iter()
        .filter(|p| p.name_any() != "main-3")
        .filter_map(|p| p.uid())
        .collect();
    assert_eq!(now, before, "no voter restarted onto a spec no node can take");

    patch_spec(&kit, &ns, "main", json!({"resources": null})).await;
    let ec = wait_ready(&kit, &ns, "main", 5).await;
    let placed = condition(&ec, "MembersPlaced").expect("MembersPlaced");
    assert_eq!(placed.0, "True", "{placed:?}");
    let ev = events(&kit, &ns, "main").await;
    assert!(ev.iter().any(|e| e.contains("ReplacingPod") && e.contains("main-3")), "{ev:#?}");
    let samples = watch.finish().await;
    println!("an unplaceable learner: waited past its deadline, joined once placeable; {samples} samples");
    kit.delete_namespace(&ns).await;
}

// Specs that cannot work are refused, changing nothing: a cron expression that is not
// five fields, by the API server itself (the schema's pattern); a volume smaller than
// the quota with headroom, by a condition and an Event, with no pod or volume made.
#[tokio::test]
async fn specs_that_cannot_work_are_refused_with_a_reason() {
    let (kit, ns) = setup("place-refuse").await;
    let schedules: kube::Api<etcd_pilot::api::EtcdBackupSchedule> = kube::Api::namespaced(kit.client.clone(), &ns);
    let every_hour: etcd_pilot::api::EtcdBackupSchedule = serde_json::from_value(json!({
        "apiVersion": "etcdpilot.io/v1alpha1", "kind": "EtcdBackupSchedule", "metadata": {"name": "hourly"},
        "spec": {"clusterName": "main", "schedule": "every hour"}}))
    .expect("schedule");
    match schedules.create(&Default::default(), &every_hour).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 422, "{e:?}");
            assert!(e.message.contains("spec.schedule"), "the field is named: {}", e.message);
        }
        other => panic!("`every hour` was not refused at admission: {other:?}"),
    }
    let bad_defrag = cluster_manifest("other", 3, "3.5.30", json!({"defrag": {"schedule": "hourly"}}));
    let bad_defrag: EtcdCluster = serde_json::from_value(bad_defrag).expect("manifest");
    let refused = clusters(&kit, &ns).create(&Default::default(), &bad_defrag).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(e)) if e.code == 422 && e.message.contains("spec.defrag.schedule")),
        "{refused:?}"
    );

    let spec = json!({"storage": {"size": "1Gi"}, "etcd": {"quotaBackendBytes": 8589934592u64}});
    create_cluster(&kit, &ns, cluster_manifest("main", 3, "3.5.30", spec)).await;
    let ec = wait_cluster(&kit, &ns, "SpecValid=False", |ec| {
        condition(ec, "SpecValid").is_some_and(|c| c.0 == "False")
            && ec.status.as_ref().is_some_and(|s| s.observed_generation.is_some())
    })
    .await;
    let message = condition(&ec, "SpecValid").map(|c| c.2).unwrap_or_default();
    assert!(
        message.contains(
            "spec.storage.size: 1Gi is too small for the backend quota etcd.quotaBackendBytes 8589934592 (8Gi)"
        ) && message.contains("at least 10752Mi"),
        "{message}"
    );
    wait_event(&kit, &ns, "main", |e| e.starts_with("Warning InvalidSpec") && e.contains("spec.storage.size")).await;
    assert!(member_pods(&kit, &ns, "main").await.is_empty(), "no member pod made");
    let claims = kube::Api::<k8s_openapi::api::core::v1::PersistentVolumeClaim>::namespaced(kit.client.clone(), &ns)
        .list(&Default::default())
        .await
        .expect("claims");
    assert!(claims.items.is_empty(), "no volume made");
    // Fixed, the same cluster starts.
    patch_spec(&kit, &ns, "main", json!({"storage": {"size": "11Gi"}})).await;
    wait_ready(&kit, &ns, "main", 3).await;
    kit.delete_namespace(&ns).await;
}
