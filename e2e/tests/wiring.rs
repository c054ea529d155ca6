//! kube-apiserver wiring on the testbed: a real kube-apiserver v1.20.2 (the testbed's own
//! build) run as a Deployment, a hosted control plane started from the Secret etcd-pilot
//! publishes and nothing else; what it stored is read from etcd directly.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_pilot::api::EtcdCluster;
use etcd_pilot_e2e::fixtures::*;
use etcd_pilot_e2e::images::KUBE_APISERVER;
use etcd_pilot_e2e::kit::Kit;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, PersistentVolumeClaim, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

/// The hosted apiserver's one user (static token, group system:masters).
const TOKEN: &str = "etcd-pilot-e2e-token";

/// Waits until the cluster's `ApiServerWiring` condition has `status`; returns the cluster.
async fn wait_wiring(kit: &Kit, ns: &str, name: &str, status: &str) -> EtcdCluster {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ec = clusters(kit, ns).get(name).await.expect("cluster");
        if condition(&ec, "ApiServerWiring").is_some_and(|c| c.0 == status) {
            return ec;
        }
        assert!(Instant::now() < deadline, "ApiServerWiring never {status}: {:?}", condition(&ec, "ApiServerWiring"));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A kube-apiserver Deployment started from the published Secret only (plus its own
/// service-account key); returns a client of it through its pod IP.
async fn hosted_apiserver(kit: &Kit, ns: &str, wiring_secret: &str) -> kube::Client {
    let (private, public) = etcd_pilot::pki::generate_key_pair().expect("key");
    let _: Secret = kit
        .create(ns, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "sa-key"},
            "stringData": {"sa.key": private, "sa.pub": public, "tokens.csv": format!("{TOKEN},e2e-admin,1,\"system:masters\"\n")}}))
        .await;
    let env = |name: &str, key: &str| json!({"name": name, "valueFrom": {"secretKeyRef": {"name": wiring_secret, "key": key}}});
    let _: k8s_openapi::api::apps::v1::Deployment = kit
        .create(
            ns,
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "kube-apiserver"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "hosted-apiserver"}},
              "template": {"metadata": {"labels": {"app": "hosted-apiserver"}}, "spec": {
                "containers": [{"name": "kube-apiserver", "image": KUBE_APISERVER, "imagePullPolicy": "Never",
                  "env": [env("ETCD_SERVERS", "etcd-servers"), env("ETCD_OVERRIDES", "etcd-servers-overrides"),
                          {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                  "args": [
                    "--etcd-servers=$(ETCD_SERVERS)", "--etcd-servers-overrides=$(ETCD_OVERRIDES)",
                    "--etcd-cafile=/etc/etcd/ca.crt", "--etcd-certfile=/etc/etcd/tls.crt", "--etcd-keyfile=/etc/etcd/tls.key",
                    "--advertise-address=$(POD_IP)", "--secure-port=6443", "--cert-dir=/var/run/kube-apiserver",
                    "--authorization-mode=AlwaysAllow", "--token-auth-file=/etc/sa/tokens.csv",
                    "--service-cluster-ip-range=10.254.0.0/24",
                    "--service-account-issuer=https://hosted.etcd-pilot.test",
                    "--service-account-key-file=/etc/sa/sa.pub", "--service-account-signing-key-file=/etc/sa/sa.key",
                    "--enable-priority-and-fairness=false"],
                  "volumeMounts": [{"name": "etcd", "mountPath": "/etc/etcd", "readOnly": true},
                                   {"name": "sa", "mountPath": "/etc/sa", "readOnly": true},
                                   {"name": "certs", "mountPath": "/var/run/kube-apiserver"}]}],
                "volumes": [{"name": "etcd", "secret": {"secretName": wiring_secret}},
                            {"name": "sa", "secret": {"secretName": "sa-key"}},
                            {"name": "certs", "emptyDir": {}}]}}}}),
        )
        .await;
    let pods: Api<Pod> = Api::namespaced(kit.client.clone(), ns);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let list = pods.list(&ListParams::default().labels("app=hosted-apiserver")).await.expect("pods");
        if let Some(ip) = list.items.iter().find_map(|p| p.status.as_ref().and_then(|s| s.pod_ip.clone())) {
            let mut config = kube::Config::new(format!("https://{ip}:6443").parse().expect("url"));
            config.accept_invalid_certs = true;
            config.auth_info.token = Some(TOKEN.to_string().into());
            let client = kube::Client::try_from(config).expect("client");
            if client.apiserver_version().await.is_ok()
                && Api::<Namespace>::all(client.clone()).get_opt("default").await.ok().flatten().is_some()
            {
                return client;
            }
        }
        if Instant::now() > deadline {
            let names: Vec<String> = list.items.iter().filter_map(|p| p.metadata.name.clone()).collect();
            let logs = match names.first() {
                Some(n) => kit.logs(ns, n).await,
                None => String::new(),
            };
            panic!("the hosted kube-apiserver never served: {names:?}\n{logs}");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn key_in(c: &mut etcd_client::Client, key: &str) -> Option<i64> {
    let r = c.get(key, None).await.expect("get");
    r.kvs().first().map(|kv| kv.mod_revision())
}

#[tokio::test]
async fn a_hosted_kube_apiserver_keeps_objects_in_main_and_events_in_the_override_cluster() {
    let (kit, ns) = setup("wiring-hosted").await;
    let overrides = json!({"overrides": [{"resource": "events", "cluster": "main-events"},
                                          {"group": "events.k8s.io", "resource": "events", "cluster": "main-events"}]});
    create_cluster(&kit, &ns, cluster_manifest("main", 3, "3.4.23", json!({"apiServer": overrides}))).await;
    create_cluster(
        &kit,
        &ns,
        cluster_manifest("main-events", 1, "3.4.23", json!({"tls": {"caFrom": {"cluster": "main"}}})),
    )
    .await;
    wait_ready(&kit, &ns, "main", 3).await;
    wait_ready(&kit, &ns, "main-events", 1).await;
    let ec = wait_wiring(&kit, &ns, "main", "True").await;
    let wired = ec.status.and_then(|s| s.api_server).expect("status.apiServer");
    assert_eq!(wired.etcd_servers, format!("https://main-client.{ns}.svc:2379"));
    assert_eq!(
        wired.etcd_servers_overrides,
        format!(
            "/events#https://main-events-client.{ns}.svc:2379,events.k8s.io/events#https://main-events-client.{ns}.svc:2379"
        )
    );
    assert!(events(&kit, &ns, "main").await.iter().any(|e| e.contains("ApiServerWiringChanged")));

    let hosted = hosted_apiserver(&kit, &ns, &wired.secret_name).await;
    let _: Namespace = Api::all(hosted.clone())
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "tenant"}})).expect("ns"))
        .await
        .expect("create a namespace through the hosted apiserver");
    let cms: Api<ConfigMap> = Api::namespaced(hosted.clone(), "tenant");
    let cm = cms
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "cm1"}, "data": {"v": "1"}})).expect("cm"),
        )
        .await
        .expect("create a ConfigMap");
    let _: Event = Api::namespaced(hosted.clone(), "tenant")
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "ev1"}, "reason": "Test", "message": "hello",
                "involvedObject": {"kind": "ConfigMap", "namespace": "tenant", "name": "cm1"}}))
            .expect("event"),
        )
        .await
        .expect("create an Event");

    // Where it landed, read from etcd itself.
    let mut main = etcd(&kit, &ns, "main").await;
    let mut side = etcd(&kit, &ns, "main-events").await;
    let rev = key_in(&mut main, "/registry/configmaps/tenant/cm1").await.expect("the ConfigMap is in main");
    assert_eq!(key_in(&mut side, "/registry/configmaps/tenant/cm1").await, None);
    assert!(key_in(&mut side, "/registry/events/tenant/ev1").await.is_some(), "the Event is in main-events");
    assert_eq!(key_in(&mut main, "/registry/events/tenant/ev1").await, None);
    assert_eq!(
        cm.metadata.resource_version.as_deref(),
        Some(rev.to_string().as_str()),
        "resourceVersion = mod_revision"
    );

    // A stale resourceVersion is refused (the Txn guarded by mod_revision), and the
    // stored value stays.
    let mut fresh = cm.clone();
    fresh.data = Some([("v".to_string(), "2".to_string())].into());
    let updated = cms.replace("cm1", &PostParams::default(), &fresh).await.expect("update");
    let mut stale = cm.clone();
    stale.data = Some([("v".to_string(), "stale".to_string())].into());
    match cms.replace("cm1", &PostParams::default(), &stale).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 409, "{s:?}"),
        other => panic!("a stale update was not refused: {other:?}"),
    }
    let now = key_in(&mut main, "/registry/configmaps/tenant/cm1").await;
    assert_eq!(now.map(|r| r.to_string()), updated.metadata.resource_version, "unchanged by the refused update");
    assert_eq!(cms.get("cm1").await.expect("get").data.unwrap_or_default().get("v").map(String::as_str), Some("2"));

    // A watch through the hosted apiserver keeps delivering while main loses a member
    // (pod and volume gone) and etcd-pilot replaces it.
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let out = seen.clone();
    let watch_api: Api<ConfigMap> = Api::namespaced(hosted.clone(), "tenant");
    let watching = tokio::spawn(async move {
        let mut stream = watcher(watch_api, watcher::Config::default()).boxed();
        while let Some(ev) = stream.next().await {
            if let Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) = ev {
                out.lock().expect("seen").insert(cm.metadata.name.unwrap_or_default());
            }
        }
    });
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(kit.client.clone(), &ns);
    let _ = pvcs.delete("data-main-1", &DeleteParams::default()).await;
    let _ = Api::<Pod>::namespaced(kit.client.clone(), &ns).delete("main-1", &DeleteParams::default()).await;
    let mut made = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut i = 0;
    loop {
        let name = format!("during-{i:03}");
        let cm = serde_json::from_value(json!({"metadata": {"name": name}})).expect("cm");
        if cms.create(&PostParams::default(), &cm).await.is_ok() {
            made.push(name);
        }
        i += 1;
        let ec = clusters(&kit, &ns).get("main").await.expect("main");
        let replaced = ec.status.as_ref().is_some_and(|s| {
            s.ready_members == 3 && s.members.iter().any(|m| m.name == "main-3" && m.healthy && !m.learner)
        });
        if replaced {
            break;
        }
        assert!(Instant::now() < deadline, "main-1 was not replaced: {:?}", ec.status);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(made.len() > 5, "ConfigMaps were created during the replacement: {made:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let missing: Vec<String> = {
            let s = seen.lock().expect("seen");
            made.iter().filter(|n| !s.contains(*n)).cloned().collect()
        };
        if missing.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the watch missed {missing:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    watching.abort();
    kit.delete_namespace(&ns).await;
}

#[tokio::test]
async fn bad_wiring_input_gets_a_condition_and_an_event_and_publishes_nothing() {
    let (kit, ns) = setup("wiring-bad").await;
    let missing = json!({"overrides": [{"resource": "events", "cluster": "nowhere"}]});
    create_cluster(&kit, &ns, cluster_manifest("main", 1, "3.4.23", json!({"apiServer": missing}))).await;
    create_cluster(&kit, &ns, cluster_manifest("other", 1, "3.4.23", json!({}))).await;
    let other_ca = json!({"overrides": [{"resource": "events", "cluster": "other"}]});
    create_cluster(&kit, &ns, cluster_manifest("second", 1, "3.4.23", json!({"apiServer": other_ca}))).await;
    let ec = wait_wiring(&kit, &ns, "main", "False").await;
    let (_, reason, message) = condition(&ec, "ApiServerWiring").expect("condition");
    assert_eq!(reason, "Invalid");
    assert!(message.contains("EtcdCluster nowhere does not exist"), "{message}");
    let ec = wait_wiring(&kit, &ns, "second", "False").await;
    let (_, _, message) = condition(&ec, "ApiServerWiring").expect("condition");
    assert!(message.contains("does not share the CA of second"), "{message}");
    for name in ["main", "second"] {
        wait_event(&kit, &ns, name, |e| e.starts_with("Warning ApiServerWiringInvalid")).await;
        let ec = clusters(&kit, &ns).get(name).await.expect("cluster");
        assert!(ec.status.and_then(|s| s.api_server).is_none(), "nothing in status.apiServer");
        let secret =
            Api::<Secret>::namespaced(kit.client.clone(), &ns).get_opt(&format!("{name}-apiserver-etcd")).await;
        assert!(secret.expect("get").is_none(), "no Secret published for {name}");
    }
    kit.delete_namespace(&ns).await;
}
