//! `helm upgrade` leaves users with the CRDs of the new version (helm itself installs
//! `crds/` on first install only): the operator brings them up to date at start. Proven
//! with CRDs of a previous version (0.0.1: no `spec.quota.warnAtPercent`) and a live
//! cluster under writes that keeps running through the upgrade. Runs alone: it changes
//! the CRDs every test shares and rolls the shared operator release.

use std::time::{Duration, Instant};

use etcd_pilot::crdgen::VERSION_ANNOTATION;
use etcd_pilot_e2e::fixtures::*;
use etcd_pilot_e2e::traffic::*;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use serde_json::json;

const CRD: &str = "etcdclusters.etcdpilot.io";

fn quota_schema(crd: &CustomResourceDefinition) -> serde_json::Value {
    let v = serde_json::to_value(crd).expect("CRD as JSON");
    v["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["quota"].clone()
}

// Two workers: helm runs as a blocking process while the writer keeps writing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn helm_upgrade_brings_the_crds_to_the_new_version_and_live_clusters_keep_running() {
    let (kit, ns) = setup("upgrade").await;
    let crds: Api<CustomResourceDefinition> = Api::all(kit.client.clone());

    // The CRD as a previous version installed it: without spec.quota.warnAtPercent.
    let mut old = crds.get(CRD).await.expect("the EtcdCluster CRD");
    let mut value = serde_json::to_value(&old).unwrap();
    let quota =
        &mut value["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["quota"];
    quota["properties"].as_object_mut().expect("quota properties").remove("warnAtPercent");
    quota["default"].as_object_mut().expect("quota default").remove("warnAtPercent");
    old = serde_json::from_value(value).unwrap();
    old.annotations_mut().insert(VERSION_ANNOTATION.into(), "0.0.1".into());
    crds.replace(CRD, &PostParams::default(), &old).await.expect("install the previous version's CRD");

    // The API server serves the old schema once a dry-run create no longer defaults the
    // field (it takes a moment to switch).
    let gvk = kube::api::GroupVersionKind::gvk("etcdpilot.io", "v1alpha1", "EtcdCluster");
    let raw_api: Api<DynamicObject> =
        Api::namespaced_with(kit.client.clone(), &ns, &ApiResource::from_gvk_with_plural(&gvk, "etcdclusters"));
    let manifest: DynamicObject = serde_json::from_value(cluster_manifest("main", 3, "3.4.23", json!({}))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let dry = raw_api.create(&PostParams { dry_run: true, ..Default::default() }, &manifest).await.unwrap();
        if dry.data["spec"]["quota"].get("warnAtPercent").is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "the old CRD is not served: {}", dry.data["spec"]);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A live cluster made under the old CRD, as a user's manifest: the field does not
    // exist for it.
    raw_api.create(&PostParams::default(), &manifest).await.expect("create the EtcdCluster");
    wait_ready(&kit, &ns, "main", 3).await;
    let raw = raw_api.get("main").await.unwrap();
    assert!(raw.data["spec"]["quota"].get("warnAtPercent").is_none(), "old schema: {}", raw.data["spec"]);
    let pods_before: Vec<(String, Option<String>)> =
        member_pods(&kit, &ns, "main").await.iter().map(|p| (p.name_any(), p.uid())).collect();
    // Container restarts so far (a learner's etcd may exit once while it joins, before
    // its peer name resolves): the upgrade must add none.
    let restarts = |pods: &[k8s_openapi::api::core::v1::Pod]| -> Vec<(String, i32)> {
        pods.iter()
            .map(|p| {
                let n = p
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .map_or(0, |c| c.iter().map(|c| c.restart_count).sum());
                (p.name_any(), n)
            })
            .collect()
    };
    let restarts_before = restarts(&member_pods(&kit, &ns, "main").await);
    let writer = Writer::start(&kit, &ns, "main").await;
    writer.wait_acked(20).await;

    // The upgrade, as a user runs it: helm upgrade (new pod annotations roll the operator).
    let started = Instant::now();
    let before = writer.acked();
    kit.helm_upgrade_operator(&["--set", "podAnnotations.etcdpilot\\.io/upgrade=crd-test"]);
    let during = writer.acked() - before;
    assert!(during > 50, "the cluster served writes while the operator was upgraded: {during}");
    let deadline = Instant::now() + Duration::from_secs(120);
    let new = loop {
        let crd = crds.get(CRD).await.unwrap();
        if crd.annotations().get(VERSION_ANNOTATION).map(String::as_str) == Some(env!("CARGO_PKG_VERSION")) {
            break crd;
        }
        assert!(Instant::now() < deadline, "the CRD was not brought to {}", env!("CARGO_PKG_VERSION"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    println!("CRD upgraded {:.1} s after helm upgrade started", started.elapsed().as_secs_f64());
    assert_eq!(quota_schema(&new)["properties"]["warnAtPercent"]["default"], 80, "{}", quota_schema(&new));
    let managers: Vec<String> = new.managed_fields().iter().filter_map(|m| m.manager.clone()).collect();
    assert!(managers.iter().any(|m| m == "etcd-pilot-crds"), "applied by the operator: {managers:?}");

    // The live cluster reads with the new schema's default, kept running throughout.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let raw = raw_api.get("main").await.unwrap();
        if raw.data["spec"]["quota"]["warnAtPercent"] == 80 {
            break;
        }
        assert!(Instant::now() < deadline, "the new schema is not served: {}", raw.data["spec"]);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ec = wait_ready(&kit, &ns, "main", 3).await;
    let pods_after: Vec<(String, Option<String>)> =
        member_pods(&kit, &ns, "main").await.iter().map(|p| (p.name_any(), p.uid())).collect();
    assert_eq!(pods_before, pods_after, "no member pod was replaced by the upgrade");
    assert_eq!(restarts(&member_pods(&kit, &ns, "main").await), restarts_before, "no member restarted by the upgrade");
    writer.wait_acked(writer.acked() + 20).await;
    let (acked, failed) = writer.finish(&kit, &ns, "main").await;
    println!(
        "upgrade: {acked} writes acknowledged ({during} during helm upgrade), {failed} failed and retried, 0 lost"
    );
    assert!(ec.status.is_some());

    // The new version's columns: what an on-call person needs at a glance.
    let table = kit.kubectl(&["get", "etcd", "main", "-n", &ns, "-o", "wide"]);
    let header: Vec<&str> = table.lines().next().unwrap_or_default().split_whitespace().collect();
    for col in ["SIZE", "READY", "AVAILABLE", "DOING", "VERSION", "LEADER", "LAST", "ALARM", "MESSAGE"] {
        assert!(header.contains(&col), "{col} in {table}");
    }
    let row = table.lines().nth(1).unwrap_or_default();
    assert!(row.contains("True") && row.contains("Idle") && row.contains("3.4.23"), "{table}");
    println!("{table}");

    // `kubectl explain` reads the new field's documentation.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = kit.kubectl_ok(&["explain", "etcdcluster.spec.quota.warnAtPercent"]);
        // An optional field keeps its type (no `nullable`, which OpenAPI v2 cannot say).
        let optional = kit.kubectl_ok(&["explain", "etcdcluster.spec.healing.recoverQuorumLossAfterSeconds"]);
        if out.as_deref().is_some_and(|o| o.contains("QuotaHigh"))
            && optional.as_deref().is_some_and(|o| o.contains("<integer>"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "kubectl explain: {out:?}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // Back to the release every other test uses.
    kit.helm_upgrade_operator(&[]);
    kit.delete_namespace(&ns).await;
}
