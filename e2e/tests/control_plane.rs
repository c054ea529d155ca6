//! The testbed's own control plane on a Stacked cluster (issue 11, point 4): a Stacked
//! EtcdCluster on the testbed's 3 control-plane nodes, with `spec.apiServer: {}`, serves
//! the testbed's Events. The testbed's kube-apiserver is restarted (as a control plane is
//! rolled onto new etcd flags) with `--etcd-servers-overrides=/events#<the published
//! servers>` and the published certificate; afterwards the testbed's own Events (one
//! created through the API, the scheduler's and kubelet's of a new pod) are under
//! `/registry/events/` of the Stacked cluster, read from etcd directly, and not in the
//! testbed's etcd, which keeps everything else. kube-apiserver is restarted as it was at
//! the end, whatever the outcome. Runs last and alone: it restarts the API every test uses.

use std::time::Duration;

use etcd_client::{Client, GetOptions};
use etcd_pilot_e2e::fixtures::*;
use etcd_pilot_e2e::images::PAUSE;
use etcd_pilot_e2e::kit::Kit;
use k8s_openapi::api::core::v1::{Event, Pod, Secret};
use kube::api::{Api, ListParams};
use serde_json::json;

/// The published wiring: the value of each key.
async fn wiring(kit: &Kit, ns: &str, secret: &str) -> Option<std::collections::BTreeMap<String, String>> {
    let s = Api::<Secret>::namespaced(kit.client.clone(), ns).get_opt(secret).await.ok()??;
    let data = s.data?;
    let text = |k: &str| data.get(k).and_then(|b| String::from_utf8(b.0.clone()).ok());
    let keys = ["ca.crt", "tls.crt", "tls.key", "etcd-servers", "etcd-servers-overrides"];
    keys.iter().map(|k| Some((k.to_string(), text(k)?))).collect()
}

/// Keys under `prefix`.
async fn keys(c: &mut Client, prefix: &str) -> Vec<String> {
    let r = c.get(prefix, Some(GetOptions::new().with_prefix().with_keys_only())).await.expect("get");
    r.kvs().iter().map(|kv| String::from_utf8_lossy(kv.key()).into_owned()).collect()
}

#[tokio::test]
async fn a_stacked_cluster_serves_the_testbeds_own_events() {
    let (kit, ns) = setup("cp-events").await;
    create_cluster(&kit, &ns, cluster_manifest("events", 3, "3.4.23", json!({"topology": "Stacked", "apiServer": {}})))
        .await;
    wait_ready(&kit, &ns, "events", 3).await;
    let published = wait_for("the published wiring of events", Duration::from_secs(120), || async {
        let w = wiring(&kit, &ns, "events-apiserver-etcd").await?;
        (w["etcd-servers"].split(',').count() == 3).then_some(w)
    })
    .await;
    let cp_ips: Vec<String> = kit.state.nodes.iter().filter(|n| n.control_plane).map(|n| n.ip.clone()).collect();
    for server in published["etcd-servers"].split(',') {
        assert!(
            cp_ips.iter().any(|ip| server == format!("https://{ip}:2379")),
            "{server}: a control-plane node's address"
        );
    }

    // What a kubeadm node's kube-apiserver gets: the certificate files and the override.
    let dir = kit.state.dir.join("pki").join("events-etcd");
    std::fs::create_dir_all(&dir).expect("pki dir");
    for k in ["ca.crt", "tls.crt", "tls.key"] {
        std::fs::write(dir.join(k), &published[k]).expect("write wiring file");
    }
    let servers = published["etcd-servers"].replace(',', ";");
    let extra = vec![
        format!("--etcd-servers-overrides=/events#{servers}"),
        format!("--etcd-cafile={}", dir.join("ca.crt").display()),
        format!("--etcd-certfile={}", dir.join("tls.crt").display()),
        format!("--etcd-keyfile={}", dir.join("tls.key").display()),
    ];
    // The Events of this namespace the testbed's etcd holds before the restart (the
    // operator's, about creating the cluster): none may be added after it.
    let before = keys(&mut testbed_etcd(&kit).await, &format!("/registry/events/{ns}/")).await;
    etcd_pilot_e2e::cluster::restart_apiserver(&kit.state.dir, &extra).await.expect("restart kube-apiserver");

    // The checks run in their own task: kube-apiserver is put back whatever they find.
    let checks = tokio::spawn({
        let ns = ns.clone();
        async move { events_land_in_the_stacked_cluster(&ns, before).await }
    });
    let outcome = checks.await;
    etcd_pilot_e2e::cluster::restart_apiserver(&kit.state.dir, &[]).await.expect("restore kube-apiserver");
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
    // A client of the API as it is again.
    Kit::connect().await.delete_namespace(&ns).await;
}

/// A client of the testbed's own etcd (plain HTTP on loopback).
async fn testbed_etcd(kit: &Kit) -> Client {
    Client::connect([format!("http://127.0.0.1:{}", kit.state.etcd_client_port)], None)
        .await
        .expect("the testbed's etcd")
}

async fn events_land_in_the_stacked_cluster(ns: &str, before: Vec<String>) {
    // A client of the restarted API (the kit's own connections were to the old process).
    let kit = Kit::connect().await;
    let _: Event = kit
        .create(
            ns,
            json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "hello"},
                "involvedObject": {"kind": "ConfigMap", "name": "anything", "namespace": ns, "apiVersion": "v1"},
                "reason": "Checked", "message": "an Event of the testbed, stored in the Stacked cluster", "type": "Normal"}),
        )
        .await;
    let _: Pod = kit
        .create(
            ns,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sleeper"},
                "spec": {"containers": [{"name": "pause", "image": PAUSE, "imagePullPolicy": "Never"}]}}),
        )
        .await;
    kit.wait_pod(ns, "sleeper", &["Running"], Duration::from_secs(120)).await;

    let mut stacked = etcd(&kit, ns, "events").await;
    let mut testbed = testbed_etcd(&kit).await;
    let prefix = format!("/registry/events/{ns}/");
    // The scheduler's Scheduled and the kubelet's Started Events of the new pod, and the
    // one created through the API, all in the Stacked cluster.
    let events: Api<Event> = Api::namespaced(kit.client.clone(), ns);
    let listed =
        wait_for("the pod's Scheduled and Started Events through the API", Duration::from_secs(60), || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            let reasons: Vec<String> = list.items.iter().filter_map(|e| e.reason.clone()).collect();
            ["Checked", "Scheduled", "Started"].iter().all(|r| reasons.iter().any(|x| x == r)).then_some(list.items)
        })
        .await;
    let in_stacked = keys(&mut stacked, &prefix).await;
    for e in &listed {
        let name = e.metadata.name.clone().unwrap_or_default();
        let key = format!("{prefix}{name}");
        assert!(in_stacked.contains(&key), "{key} ({:?}) in the Stacked cluster: {in_stacked:?}", e.reason);
    }
    assert!(in_stacked.contains(&format!("{prefix}hello")), "{in_stacked:?}");
    let in_testbed = keys(&mut testbed, &prefix).await;
    assert_eq!(in_testbed, before, "no Event of {ns} added to the testbed's etcd after the restart");
    assert!(in_stacked.iter().all(|k| !in_testbed.contains(k)), "an Event in both: {in_stacked:?} {in_testbed:?}");
    // Everything else stays in the testbed's etcd.
    let pod_key = format!("/registry/pods/{ns}/sleeper");
    assert_eq!(keys(&mut testbed, &pod_key).await, vec![pod_key], "the pod in the testbed's etcd");
    assert!(keys(&mut stacked, "/registry/pods/").await.is_empty(), "no pod in the Stacked cluster");
}
