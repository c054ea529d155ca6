//! Smoke tests of the testbed: what etcd-pilot needs from a real cluster works.
//! Run by `make e2e` (which brings a testbed up if none is).

use std::time::Duration;

use etcd_pilot_e2e::images::{ETCD_REPOSITORY, TOOLBOX};
use etcd_pilot_e2e::kit::{Kit, on_node};
use etcd_pilot_e2e::layout::{S3_BUCKET, S3_SERVICE_PORT, TESTBED_NAMESPACE};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod, Secret, Service};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use serde_json::{Value, json};

fn pod(name: &str, image: &str, command: &[&str], extra: Value) -> Value {
    let mut spec = json!({
        "restartPolicy": "Never",
        "containers": [{"name": "main", "image": image, "imagePullPolicy": "Never", "command": command}],
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}}, "spec": spec})
}

/// A real etcd serving on 2379 in a pod.
fn etcd_pod(name: &str, extra: Value) -> Value {
    pod(
        name,
        &format!("{ETCD_REPOSITORY}:v3.4.23"),
        &[
            "/usr/local/bin/etcd",
            "--data-dir=/tmp/etcd",
            "--listen-client-urls=http://0.0.0.0:2379",
            "--advertise-client-urls=http://127.0.0.1:2379",
        ],
        extra,
    )
}

#[tokio::test]
async fn the_etcd_images_run_on_every_node() {
    let kit = Kit::connect().await;
    let ns = kit.namespace("smoke-images").await;
    for (i, node) in kit.state.nodes.iter().enumerate() {
        // Every etcd image, spread over the nodes (each node has all of them).
        let all = ["v3.4.23", "v3.5.1", "v3.5.16", "v3.5.30"];
        let version = all[i % all.len()];
        let out = kit
            .run_to_completion(
                &ns,
                pod(
                    &format!("etcd-{}", node.name),
                    &format!("{ETCD_REPOSITORY}:{version}"),
                    &["/usr/local/bin/etcd", "--version"],
                    on_node(&node.name),
                ),
            )
            .await;
        assert!(out.contains(&format!("etcd Version: {}", &version[1..])), "{}: {out}", node.name);
    }
    kit.delete_namespace(&ns).await;
}

#[tokio::test]
async fn a_pod_finds_another_by_its_headless_dns_name_across_nodes() {
    let kit = Kit::connect().await;
    let ns = kit.namespace("smoke-dns").await;
    let workers: Vec<_> = kit.state.nodes.iter().filter(|n| !n.control_plane).collect();
    let (a, b) = (&workers[0].name, &workers[workers.len() - 1].name);
    let _: Service = kit
        .create(
            &ns,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "peers"},
                   "spec": {"clusterIP": "None", "publishNotReadyAddresses": true, "selector": {"role": "member"},
                            "ports": [{"name": "client", "port": 2379}]}}),
        )
        .await;
    let mut member = etcd_pod("member-0", json!({"hostname": "member-0", "subdomain": "peers"}));
    member["metadata"]["labels"]["role"] = json!("member");
    member["spec"]["nodeSelector"] = on_node(a)["nodeSelector"].clone();
    let _: Pod = kit.create(&ns, member).await;
    let running = kit.wait_pod(&ns, "member-0", &["Running"], Duration::from_secs(60)).await;
    let ip = running.status.and_then(|s| s.pod_ip).expect("pod ip");

    let name = format!("member-0.peers.{ns}.svc.cluster.local");
    let out = kit
        .run_to_completion(
            &ns,
            pod(
                "client",
                TOOLBOX,
                &["/bin/sh", "-c", &format!("for i in 1 2 3 4 5 6 7 8 9 10; do probe resolve {name} && break; sleep 1; done && probe tcp {name}:2379")],
                on_node(b),
            ),
        )
        .await;
    assert!(out.contains(&ip), "{name} should resolve to {ip}: {out}");
    assert!(out.contains("connected to"), "{out}");
    kit.delete_namespace(&ns).await;
}

#[tokio::test]
async fn a_claim_binds_and_its_data_outlives_the_pod_and_goes_with_the_claim() {
    let kit = Kit::connect().await;
    let ns = kit.namespace("smoke-pvc").await;
    let node = &kit.state.nodes.iter().find(|n| !n.control_plane).expect("a worker").name;
    let claim: PersistentVolumeClaim = kit
        .create(
            &ns,
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
                   "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}}}}),
        )
        .await;
    let volume = |extra: Value| {
        let mut v = json!({"volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]});
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        v
    };
    let mut writer = pod("writer", TOOLBOX, &["/bin/sh", "-c", "echo kept > /data/file"], volume(on_node(node)));
    writer["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}]);
    kit.run_to_completion(&ns, writer).await;
    Api::<Pod>::namespaced(kit.client.clone(), &ns).delete("writer", &DeleteParams::default()).await.unwrap();

    let mut reader = pod("reader", TOOLBOX, &["/bin/cat", "/data/file"], volume(json!({})));
    reader["spec"]["containers"][0]["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}]);
    assert_eq!(kit.run_to_completion(&ns, reader).await.trim(), "kept");

    let claims: Api<PersistentVolumeClaim> = Api::namespaced(kit.client.clone(), &ns);
    let pv_name = claims.get("data").await.unwrap().spec.and_then(|s| s.volume_name).expect("bound");
    let pvs: Api<PersistentVolume> = Api::all(kit.client.clone());
    let path = pvs.get(&pv_name).await.unwrap().spec.and_then(|s| s.local).map(|l| l.path).expect("local path");
    assert!(std::path::Path::new(&path).join("file").exists());
    Api::<Pod>::namespaced(kit.client.clone(), &ns).delete("reader", &DeleteParams::default()).await.unwrap();
    claims.delete("data", &DeleteParams::default()).await.unwrap();
    let mut gone = false;
    for _ in 0..120 {
        if pvs.get_opt(&pv_name).await.unwrap().is_none() && !std::path::Path::new(&path).exists() {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(gone, "the volume of deleted claim {} should go, with its data", claim.name_any());
    kit.delete_namespace(&ns).await;
}

#[tokio::test]
async fn a_cluster_ip_service_reaches_its_pod() {
    let kit = Kit::connect().await;
    let ns = kit.namespace("smoke-svc").await;
    let _: Pod = kit.create(&ns, etcd_pod("backend", json!({}))).await;
    kit.wait_pod(&ns, "backend", &["Running"], Duration::from_secs(60)).await;
    let svc: Service = kit
        .create(
            &ns,
            json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "backend"},
                   "spec": {"selector": {"app": "backend"}, "ports": [{"port": 80, "targetPort": 2379}]}}),
        )
        .await;
    let ip = svc.spec.and_then(|s| s.cluster_ip).expect("cluster ip");
    let name = format!("backend.{ns}.svc.cluster.local");
    let script = format!(
        "for i in $(seq 1 20); do probe tcp {ip}:80 && probe resolve {name} && probe tcp {name}:80 && exit 0; sleep 1; done; exit 1"
    );
    let out = kit.run_to_completion(&ns, pod("client", TOOLBOX, &["/bin/sh", "-c", &script], json!({}))).await;
    assert!(out.contains(&format!("connected to {ip}:80")), "{out}");
    // kube-proxy makes ClusterIPs reachable from the host too.
    let mut ok = false;
    for _ in 0..40 {
        if tokio::net::TcpStream::connect((ip.as_str(), 80)).await.is_ok() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(ok, "{ip}:80 from the host");
    kit.delete_namespace(&ns).await;
}

#[tokio::test]
async fn a_pod_talks_to_the_api_with_its_service_account_token() {
    let kit = Kit::connect().await;
    let ns = kit.namespace("smoke-sa").await;
    let _: Value = serde_json::to_value(
        kit.create::<k8s_openapi::api::rbac::v1::RoleBinding>(
            &ns,
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "view"},
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                   "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns}]}),
        )
        .await,
    )
    .unwrap();
    let out = kit.run_to_completion(&ns, pod("api", TOOLBOX, &["probe", "api"], json!({}))).await;
    assert!(out.contains("API 1.20 as the pod's ServiceAccount"), "{out}");
    kit.delete_namespace(&ns).await;
}

#[tokio::test]
async fn a_pod_uploads_to_the_s3_server() {
    let kit = Kit::connect().await;
    let ns = kit.namespace("smoke-s3").await;
    let creds = Api::<Secret>::namespaced(kit.client.clone(), TESTBED_NAMESPACE).get("s3-credentials").await.unwrap();
    let _: Secret = kit
        .create(&ns, json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3"}, "data": creds.data}))
        .await;
    let key = format!("smoke/{ns}.txt");
    let endpoint = format!("http://s3.{TESTBED_NAMESPACE}.svc.cluster.local:{S3_SERVICE_PORT}");
    let mut p = pod("upload", TOOLBOX, &["probe", "s3-put", &endpoint, S3_BUCKET, &key], json!({}));
    p["spec"]["containers"][0]["envFrom"] = json!([{"secretRef": {"name": "s3"}}]);
    let out = kit.run_to_completion(&ns, p).await;
    assert!(out.contains("uploaded"), "{out}");

    // The host sees the object, verified.
    use etcd_pilot::backup_store::{BackupStore, StoreConfig};
    let store = BackupStore::new(StoreConfig::s3_compatible(
        &kit.state.s3_url(),
        S3_BUCKET,
        etcd_pilot_e2e::layout::S3_ACCESS_KEY,
        etcd_pilot_e2e::layout::S3_SECRET_KEY,
    ))
    .await
    .unwrap();
    let listed = store.list("smoke/").await.unwrap();
    assert!(listed.iter().any(|o| o.key == key), "{listed:?}");
    store.delete(&key).await.unwrap();
    kit.delete_namespace(&ns).await;
}

#[tokio::test]
async fn the_chart_lints_strictly_and_installs_scoped_to_namespaces() {
    let kit = Kit::connect().await;
    let chart = Kit::chart();
    let run = |args: &[&str]| kit.helm(args);
    run(&["lint", "--strict", chart.to_str().unwrap()]);
    // A namespace-scoped install (watchNamespaces), beside whatever cluster-wide
    // release the testbed already runs (the demo's, the e2e's): no name collides.
    let ns = "etcd-pilot-smoke";
    let watched = kit.namespace("smoke-watched").await;
    let watch = format!("watchNamespaces={{{watched}}}");
    run(&[
        "install",
        "smoke",
        chart.to_str().unwrap(),
        "--namespace",
        ns,
        "--create-namespace",
        "--set",
        "image.tag=dev",
        "--set",
        &watch,
        "--wait",
        "--timeout",
        "120s",
    ]);
    // Ready means it reached the API in-cluster and found its CRDs.
    let deploy: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(kit.client.clone(), ns);
    let d = deploy.get("smoke-etcd-pilot").await.unwrap();
    assert_eq!(d.status.and_then(|s| s.available_replicas), Some(1));
    // What the API server's authorizer grants its ServiceAccount: member pods and
    // Secrets in the watched namespace, nothing elsewhere.
    let sa = format!("system:serviceaccount:{ns}:smoke-etcd-pilot");
    let can = |verb: &str, what: &str, in_ns: &str| -> bool {
        let out = std::process::Command::new(kit.state.tools.join("kubectl"))
            .args(["auth", "can-i", verb, what, "-n", in_ns, "--as", &sa])
            .env("KUBECONFIG", kit.state.kubeconfig())
            .output()
            .expect("kubectl auth can-i");
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    assert!(
        can("create", "pods", &watched)
            && can("patch", "secrets", &watched)
            && can("list", "etcdclusters.etcdpilot.io", &watched)
    );
    assert!(
        !can("create", "pods", "default") && !can("get", "secrets", "default"),
        "no rights outside watchNamespaces"
    );
    assert!(!can("list", "etcdclusters.etcdpilot.io", "default"));
    let crs: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(kit.client.clone());
    let cr = crs.get(&format!("smoke-etcd-pilot-{ns}")).await.expect("the release's ClusterRole, named per namespace");
    let resources: Vec<String> =
        cr.rules.iter().flatten().flat_map(|r| r.resources.clone().unwrap_or_default()).collect();
    assert_eq!(
        resources,
        ["customresourcedefinitions", "customresourcedefinitions", "storageclasses", "nodes"],
        "cluster-wide: CRDs, StorageClasses and nodes only"
    );
    let verbs: Vec<String> = cr.rules.iter().flatten().flat_map(|r| r.verbs.clone()).collect();
    assert_eq!(verbs, ["get", "patch", "get", "list"], "cluster-wide: read only, but for its own CRDs (crds.apply)");
    let own =
        ["etcdclusters", "etcdbackups", "etcdbackupschedules", "etcdrestores"].map(|p| format!("{p}.etcdpilot.io"));
    let patchable: Vec<String> = cr
        .rules
        .iter()
        .flatten()
        .filter(|r| r.verbs.contains(&"patch".to_string()))
        .flat_map(|r| r.resource_names.clone().unwrap_or_default())
        .collect();
    assert_eq!(patchable, own, "patch on its own four CRDs, by name");
    assert!(can("patch", "customresourcedefinitions/etcdclusters.etcdpilot.io", ns));
    assert!(!can("patch", "customresourcedefinitions/certificates.cert-manager.io", ns), "no other CRD");
    assert!(
        !can("create", "customresourcedefinitions", ns)
            && !can("delete", "customresourcedefinitions/etcdclusters.etcdpilot.io", ns)
    );
    run(&["uninstall", "smoke", "--namespace", ns, "--wait"]);
    kit.delete_namespace(ns).await;
    kit.delete_namespace(&watched).await;
}
