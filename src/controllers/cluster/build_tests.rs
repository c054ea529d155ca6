use super::*;

fn cluster(yaml: &str) -> EtcdCluster {
    let mut ec = EtcdCluster::new("main", serde_norway::from_str(yaml).unwrap());
    ec.metadata.namespace = Some("prod".into());
    ec.metadata.uid = Some("uid-1".into());
    ec
}

fn join3() -> Join {
    Join {
        initial_cluster: (0..3)
            .map(|i| (format!("main-{i}"), format!("https://main-{i}.main-peers.prod.svc:2380")))
            .collect(),
        existing: false,
    }
}

#[test]
fn names_and_urls() {
    let n = Names::of(&cluster("version: 3.5.17"));
    assert_eq!(n.peer_url("main-0"), "https://main-0.main-peers.prod.svc:2380");
    assert_eq!(n.client_url("main-0"), "https://main-0.main-peers.prod.svc:2379");
    assert_eq!(n.client_service_url(), "https://main-client.prod.svc:2379");
    assert_eq!(n.member_of_peer_url("https://main-7.main-peers.prod.svc:2380"), Some("main-7".into()));
    assert_eq!(n.member_of_peer_url("https://main-7.other-peers.prod.svc:2380"), None);
    let plain = Names::of(&cluster("{version: 3.5.17, tls: {mode: Disabled}}"));
    assert_eq!(plain.peer_url("main-1"), "http://main-1.main-peers.prod.svc:2380");
}

#[test]
fn bootstrap_member_flags() {
    let ec = cluster("{version: 3.4.23, etcd: {quotaBackendBytes: 4294967296}}");
    let args = etcd_args(&ec, "main-1", &join3());
    for want in [
        "--name=main-1",
        "--initial-cluster-state=new",
        "--initial-cluster=main-0=https://main-0.main-peers.prod.svc:2380,main-1=https://main-1.main-peers.prod.svc:2380,main-2=https://main-2.main-peers.prod.svc:2380",
        "--initial-cluster-token=uid-1",
        "--advertise-client-urls=https://main-1.main-peers.prod.svc:2379",
        "--initial-advertise-peer-urls=https://main-1.main-peers.prod.svc:2380",
        "--quota-backend-bytes=4294967296",
        "--auto-compaction-mode=periodic",
        "--client-cert-auth",
        "--peer-client-cert-auth",
    ] {
        assert!(args.iter().any(|a| a == want), "missing {want} in {args:?}");
    }
    let joining = etcd_args(&ec, "main-3", &Join { existing: true, ..join3() });
    assert!(joining.contains(&"--initial-cluster-state=existing".to_string()));
    let plain = etcd_args(&cluster("{version: 3.4.23, tls: {mode: Disabled}}"), "main-0", &join3());
    assert!(!plain.iter().any(|a| a.contains("cert")), "{plain:?}");
    assert!(plain.contains(&"--listen-client-urls=http://0.0.0.0:2379".to_string()));
}

#[test]
fn member_pod_shape() {
    let ec = cluster("version: 3.4.23");
    let pod = member_pod(&ec, "main-0", &join3(), "etcd-pilot.local/etcd", "op");
    let spec = pod.spec.as_ref().unwrap();
    assert_eq!(spec.hostname.as_deref(), Some("main-0"));
    assert_eq!(spec.subdomain.as_deref(), Some("main-peers"));
    let c = &spec.containers[0];
    assert_eq!(c.image.as_deref(), Some("etcd-pilot.local/etcd:v3.4.23"));
    assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
    let vols = spec.volumes.as_ref().unwrap();
    assert_eq!(vols[0].persistent_volume_claim.as_ref().unwrap().claim_name, "data-main-0");
    assert!(vols.iter().any(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref()) == Some("main-peer-tls")));
    let labels = pod.metadata.labels.as_ref().unwrap();
    assert_eq!(labels["app.kubernetes.io/instance"], "main");
    assert_eq!(labels["etcdpilot.io/member"], "main-0");
    assert_eq!(pod.metadata.owner_references.as_ref().unwrap()[0].kind, "EtcdCluster");
    // Preferred anti-affinity across nodes by default.
    let paa = spec.affinity.as_ref().unwrap().pod_anti_affinity.as_ref().unwrap();
    let pref = paa.preferred_during_scheduling_ignored_during_execution.as_ref().unwrap();
    assert_eq!(pref[0].pod_affinity_term.topology_key, "kubernetes.io/hostname");
    assert!(paa.required_during_scheduling_ignored_during_execution.is_none());
    // Non-root, the volume the member's group's, no token, no privilege.
    let psc = spec.security_context.as_ref().unwrap();
    assert_eq!((psc.run_as_non_root, psc.run_as_user, psc.fs_group), (Some(true), Some(MEMBER_UID), Some(MEMBER_UID)));
    assert_eq!(psc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
    assert_eq!(spec.automount_service_account_token, Some(false));
    let csc = c.security_context.as_ref().unwrap();
    assert_eq!((csc.allow_privilege_escalation, csc.read_only_root_filesystem), (Some(false), Some(true)));
    assert_eq!(csc.capabilities.as_ref().unwrap().drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert!(csc.run_as_user.is_none(), "the pod's user, never root");
}

#[test]
fn probes_ask_what_each_version_serves() {
    for (version, ready, alive) in [
        ("3.4.23", HEALTH_PATH, HEALTH_PATH),
        ("3.5.30", HEALTH_PATH, HEALTH_PATH),
        ("3.6.0", "/readyz", "/livez"),
        ("3.7.1", "/readyz", "/livez"),
    ] {
        let pod = member_pod(&cluster(&format!("{{version: {version}}}")), "main-0", &join3(), "r", "op");
        let c = &pod.spec.as_ref().unwrap().containers[0];
        let path = |p: &Option<Probe>| p.as_ref().and_then(|p| p.http_get.as_ref()).and_then(|h| h.path.clone());
        assert_eq!(path(&c.readiness_probe).as_deref(), Some(ready), "{version}");
        assert_eq!(path(&c.liveness_probe).as_deref(), Some(alive), "{version}");
        assert_eq!(
            path(&c.startup_probe).as_deref(),
            Some(alive),
            "{version}: started once alive (a learner catching up)"
        );
        // Every flag etcd-pilot writes is one 3.6 still takes: no --experimental-*
        // (3.6 moves them to --feature-gates and plain names) and no v2 store flag.
        let args = c.args.clone().unwrap_or_default();
        assert!(!args.iter().any(|a| a.starts_with("--experimental-") || a.starts_with("--enable-v2")), "{args:?}");
    }
}

#[test]
fn stacked_members_go_to_control_plane_nodes_one_each() {
    let pod = member_pod(&cluster("{version: 3.4.23, topology: Stacked}"), "main-0", &join3(), "r", "op");
    let spec = pod.spec.unwrap();
    assert_eq!(spec.node_selector.unwrap()[CONTROL_PLANE_LABEL], "");
    assert_eq!(spec.tolerations.unwrap()[0].key.as_deref(), Some(CONTROL_PLANE_LABEL));
    let paa = spec.affinity.unwrap().pod_anti_affinity.unwrap();
    assert_eq!(paa.required_during_scheduling_ignored_during_execution.unwrap().len(), 1);
}

#[test]
fn stacked_members_serve_on_their_nodes_address_and_external_ones_in_their_pod() {
    let stacked = member_pod(&cluster("{version: 3.4.23, topology: Stacked}"), "main-0", &join3(), "r", "op");
    let spec = stacked.spec.unwrap();
    assert_eq!(spec.host_network, Some(true));
    assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"), "peers still resolve by cluster DNS");
    let c = &spec.containers[0];
    let env = c.env.as_ref().unwrap();
    assert_eq!(env[0].name, NODE_IP_ENV);
    let field = env[0].value_from.as_ref().unwrap().field_ref.as_ref().unwrap();
    assert_eq!(field.field_path, "status.hostIP");
    let args = c.args.as_ref().unwrap();
    for want in [
        "--listen-client-urls=https://$(NODE_IP):2379",
        "--listen-peer-urls=https://$(NODE_IP):2380",
        "--listen-metrics-urls=http://$(NODE_IP):2381",
        "--advertise-client-urls=https://main-0.main-peers.prod.svc:2379",
    ] {
        assert!(args.iter().any(|a| a == want), "missing {want} in {args:?}");
    }
    assert!(!args.iter().any(|a| a.contains("0.0.0.0")), "never every address of the host: {args:?}");

    let external = member_pod(&cluster("{version: 3.4.23}"), "main-0", &join3(), "r", "op");
    let spec = external.spec.unwrap();
    assert_eq!((spec.host_network, spec.dns_policy.as_deref()), (None, None));
    let c = &spec.containers[0];
    assert!(c.env.is_none());
    assert!(c.args.as_ref().unwrap().contains(&"--listen-client-urls=https://0.0.0.0:2379".to_string()));
    // The two shapes hash apart: an existing Stacked cluster rolls once onto the host network.
    assert_ne!(
        spec_hash(&cluster("{version: 3.4.23, topology: Stacked}"), "r"),
        spec_hash(&cluster("{version: 3.4.23}"), "r")
    );
}

#[test]
fn memory_members_have_no_claim() {
    let ec = cluster("{version: 3.4.23, storage: {medium: Memory, size: 1Gi}}");
    assert!(member_pvc(&ec, "main-0").is_none());
    let pod = member_pod(&ec, "main-0", &join3(), "r", "op");
    let v = &pod.spec.unwrap().volumes.unwrap()[0];
    assert_eq!(v.empty_dir.as_ref().unwrap().medium.as_deref(), Some("Memory"));
    assert!(v.persistent_volume_claim.is_none());
}

#[test]
fn claims_and_services() {
    let ec = cluster("{version: 3.4.23, storage: {size: 8Gi, storageClassName: fast}}");
    let pvc = member_pvc(&ec, "main-2").unwrap();
    assert_eq!(pvc.metadata.name.as_deref(), Some("data-main-2"));
    assert!(pvc.metadata.owner_references.is_none(), "retained by default: not collected with the cluster");
    let deleting = cluster("{version: 3.4.23, storage: {retention: {whenDeleted: Delete}}}");
    let owned = member_pvc(&deleting, "main-0").unwrap().metadata.owner_references.unwrap();
    assert_eq!(owned[0].kind, "EtcdCluster", "whenDeleted: Delete lets GC collect it");
    let spec = pvc.spec.unwrap();
    assert_eq!(spec.storage_class_name.as_deref(), Some("fast"));
    assert_eq!(spec.resources.unwrap().requests.unwrap()["storage"].0, "8Gi");

    let pdb = pod_disruption_budget(&ec).spec.unwrap();
    assert_eq!(pdb.max_unavailable, Some(IntOrString::Int(1)));
    assert_eq!(pdb.selector.unwrap().match_labels.unwrap()["app.kubernetes.io/instance"], "main");

    let peers = peer_service(&ec).spec.unwrap();
    assert_eq!(peers.cluster_ip.as_deref(), Some("None"));
    assert_eq!(peers.publish_not_ready_addresses, Some(true));
    let client = client_service(&ec).spec.unwrap();
    assert_eq!(client.ports.unwrap()[0].port, 2379);
    assert!(client.publish_not_ready_addresses.is_none());
}

#[test]
fn image_override() {
    let spec: EtcdClusterSpec = serde_norway::from_str("{version: 3.5.17, image: 'quay.io/me/etcd:custom'}").unwrap();
    assert_eq!(image(&spec, "ignored"), "quay.io/me/etcd:custom");
}
