//! The Kubernetes objects of an etcd cluster, built from its spec: pure functions, one
//! per object, so what etcd-pilot creates is unit-tested field by field.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, HTTPGetAction, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, Probe, SeccompProfile, SecurityContext, Service,
    ServicePort, ServiceSpec, Toleration, Volume, VolumeMount, VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::api::core::v1::{EmptyDirVolumeSource, PersistentVolumeClaimVolumeSource, Pod};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use crate::api::cluster::{AntiAffinity, RetentionAction, StorageMedium, TlsMode, Topology};
use crate::api::{EtcdCluster, EtcdClusterSpec};

pub const CLIENT_PORT: i32 = 2379;
pub const PEER_PORT: i32 = 2380;
pub const METRICS_PORT: i32 = 2381;
pub const DATA_DIR: &str = "/var/lib/etcd";
pub const CONTROL_PLANE_LABEL: &str = "node-role.kubernetes.io/control-plane";
/// The control-plane taint before Kubernetes 1.24.
pub const MASTER_LABEL: &str = "node-role.kubernetes.io/master";
/// Annotations of member pods: the etcd version, topology and storage medium they run.
pub const VERSION_ANNOTATION: &str = "etcdpilot.io/version";
pub const TOPOLOGY_ANNOTATION: &str = "etcdpilot.io/topology";
pub const MEDIUM_ANNOTATION: &str = "etcdpilot.io/storage-medium";
pub const TLS_MODE_ANNOTATION: &str = "etcdpilot.io/tls-mode";
/// Annotation of member pods: the cluster whose CA signed their certificates when it is
/// another's (`spec.tls.caFrom`), empty for the cluster's own.
pub const CA_FROM_ANNOTATION: &str = "etcdpilot.io/ca-from";
/// Annotation of member PVCs: uid of the EtcdCluster they were made for.
pub const CLUSTER_UID_ANNOTATION: &str = "etcdpilot.io/cluster-uid";
/// Annotation of member PVCs and of the EtcdCluster: the etcd cluster id, recorded once
/// the cluster formed. Durable evidence that it did: a cluster that formed is never
/// bootstrapped again, whatever happens to its status.
pub const CLUSTER_ID_ANNOTATION: &str = "etcdpilot.io/cluster-id";
/// Annotation of the EtcdCluster: the members of a bootstrap, recorded before its first
/// pod is created.
pub const BOOTSTRAP_ANNOTATION: &str = "etcdpilot.io/bootstrap";
/// Annotation of member pods: hash of everything in the pod that follows from the spec;
/// a pod with another hash is restarted (one at a time, the leader last).
pub const SPEC_HASH_ANNOTATION: &str = "etcdpilot.io/spec-hash";
/// What member pods' health probes ask etcd: `/health` with NOSPACE excluded, since
/// etcd reports every alarm in every member and a full cluster must keep serving reads
/// (etcd 3.4.16+ and 3.5 take `exclude`).
pub const HEALTH_PATH: &str = "/health?exclude=NOSPACE";

/// Names and addresses of one cluster's objects and members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    pub cluster: String,
    pub namespace: String,
    pub tls: bool,
}

impl Names {
    pub fn of(ec: &EtcdCluster) -> Names {
        Names {
            cluster: ec.name_any(),
            namespace: ec.namespace().unwrap_or_default(),
            tls: ec.spec.tls.mode != TlsMode::Disabled,
        }
    }

    /// Headless Service that gives members their DNS names.
    pub fn peer_service(&self) -> String {
        format!("{}-peers", self.cluster)
    }

    /// Service clients use.
    pub fn client_service(&self) -> String {
        format!("{}-client", self.cluster)
    }

    pub fn pvc(&self, member: &str) -> String {
        format!("data-{member}")
    }

    fn scheme(&self) -> &'static str {
        if self.tls { "https" } else { "http" }
    }

    /// `<member>.<cluster>-peers.<ns>.svc`
    pub fn member_host(&self, member: &str) -> String {
        format!("{member}.{}.{}.svc", self.peer_service(), self.namespace)
    }

    pub fn peer_url(&self, member: &str) -> String {
        format!("{}://{}:{PEER_PORT}", self.scheme(), self.member_host(member))
    }

    pub fn client_url(&self, member: &str) -> String {
        format!("{}://{}:{CLIENT_PORT}", self.scheme(), self.member_host(member))
    }

    pub fn client_service_url(&self) -> String {
        format!("{}://{}.{}.svc:{CLIENT_PORT}", self.scheme(), self.client_service(), self.namespace)
    }

    /// The member a peer URL belongs to: the first label of its host.
    pub fn member_of_peer_url(&self, url: &str) -> Option<String> {
        let host = url.split("://").nth(1)?.split([':', '/']).next()?;
        let (member, rest) = host.split_once('.')?;
        rest.starts_with(&format!("{}.", self.peer_service())).then(|| member.to_string())
    }
}

/// Labels every object of a cluster carries.
pub fn labels(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "etcd".to_string()),
        ("app.kubernetes.io/instance".to_string(), cluster.to_string()),
        ("app.kubernetes.io/managed-by".to_string(), "etcd-pilot".to_string()),
    ])
}

/// Selects the member pods of a cluster.
pub fn selector(cluster: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "etcd".to_string()),
        ("app.kubernetes.io/instance".to_string(), cluster.to_string()),
    ])
}

fn owner(ec: &EtcdCluster) -> Option<OwnerReference> {
    ec.controller_owner_ref(&())
}

fn meta(ec: &EtcdCluster, name: &str, extra: &[(&str, &str)]) -> ObjectMeta {
    let mut l = labels(&ec.name_any());
    l.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: ec.namespace(),
        labels: Some(l),
        owner_references: owner(ec).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// The headless Service behind member DNS names. It publishes members before they are
/// ready: a member must resolve its peers to join them. Its `metrics` port (etcd's
/// plain-HTTP `/metrics` of every member) is what the chart's ServiceMonitor scrapes.
pub fn peer_service(ec: &EtcdCluster) -> Service {
    let n = Names::of(ec);
    Service {
        metadata: meta(ec, &n.peer_service(), &[]),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector(&n.cluster)),
            ports: Some(vec![port("peer", PEER_PORT), port("client", CLIENT_PORT), port("metrics", METRICS_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The Service clients use: ready members only.
pub fn client_service(ec: &EtcdCluster) -> Service {
    let n = Names::of(ec);
    Service {
        metadata: meta(ec, &n.client_service(), &[]),
        spec: Some(ServiceSpec {
            selector: Some(selector(&n.cluster)),
            ports: Some(vec![port("client", CLIENT_PORT)]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::Int(port)),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

/// Lets voluntary disruptions (drains, evictions) take at most one member at a time.
pub fn pod_disruption_budget(ec: &EtcdCluster) -> PodDisruptionBudget {
    let n = Names::of(ec);
    PodDisruptionBudget {
        metadata: meta(ec, &n.cluster, &[]),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector { match_labels: Some(selector(&n.cluster)), ..LabelSelector::default() }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    }
}

/// The claim of a member's data volume (none for memory-backed members).
pub fn member_pvc(ec: &EtcdCluster, member: &str) -> Option<PersistentVolumeClaim> {
    if ec.spec.storage.medium == StorageMedium::Memory {
        return None;
    }
    let n = Names::of(ec);
    let mut metadata = meta(ec, &n.pvc(member), &[("etcdpilot.io/member", member)]);
    // Owned (and so collected with the cluster) only when the user asked for that; the
    // reconciler keeps the reference in line when `storage.retention` changes.
    metadata.owner_references = pvc_owner_references(ec);
    // The cluster object it was made for: a later cluster of the same name must never
    // start a member on an earlier cluster's data.
    metadata.annotations = Some(BTreeMap::from([(CLUSTER_UID_ANNOTATION.to_string(), ec.uid().unwrap_or_default())]));
    Some(PersistentVolumeClaim {
        metadata,
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: ec.spec.storage.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_string(), ec.spec.storage.size.clone())])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    })
}

/// The owner references a member PVC should have under `storage.retention.whenDeleted`.
pub fn pvc_owner_references(ec: &EtcdCluster) -> Option<Vec<OwnerReference>> {
    (ec.spec.storage.retention.when_deleted == RetentionAction::Delete).then(|| owner(ec).into_iter().collect())
}

/// How a member starts: as part of a new cluster, or joining an existing one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Join {
    /// `--initial-cluster`: name=peer-url of every member it starts with.
    pub initial_cluster: Vec<(String, String)>,
    /// `new` for a bootstrap member, `existing` for one added later.
    pub existing: bool,
}

/// The image of a version: `spec.image`, or the operator's repository tagged `v<version>`.
pub fn image(spec: &EtcdClusterSpec, repository: &str) -> String {
    spec.image.clone().unwrap_or_else(|| format!("{repository}:v{}", spec.version))
}

/// The environment variable a Stacked member's pod gets its node's address in (the
/// downward API's `status.hostIP`); its listen URLs name it as `$(NODE_IP)`.
pub const NODE_IP_ENV: &str = "NODE_IP";

/// The address a member listens on: every address of its own network namespace for an
/// External member; for a Stacked member, on the host network, its node's address only,
/// as kubeadm's stacked etcd does (ports are the node's: members of other clusters or
/// other nodes' addresses on one host must not collide).
fn listen_host(spec: &EtcdClusterSpec) -> String {
    match spec.topology {
        Topology::External => "0.0.0.0".into(),
        Topology::Stacked => format!("$({NODE_IP_ENV})"),
    }
}

/// etcd's command line for a member.
pub fn etcd_args(ec: &EtcdCluster, member: &str, join: &Join) -> Vec<String> {
    let n = Names::of(ec);
    let s = &ec.spec;
    let scheme = if n.tls { "https" } else { "http" };
    let host = listen_host(s);
    let initial: Vec<String> = join.initial_cluster.iter().map(|(m, u)| format!("{m}={u}")).collect();
    let mut args = vec![
        format!("--name={member}"),
        format!("--data-dir={DATA_DIR}/data"),
        format!("--listen-peer-urls={scheme}://{host}:{PEER_PORT}"),
        format!("--listen-client-urls={scheme}://{host}:{CLIENT_PORT}"),
        format!("--advertise-client-urls={}", n.client_url(member)),
        format!("--initial-advertise-peer-urls={}", n.peer_url(member)),
        format!("--initial-cluster={}", initial.join(",")),
        format!("--initial-cluster-state={}", if join.existing { "existing" } else { "new" }),
        // Unique per cluster object: a member of an old cluster of the same name can
        // never join this one.
        format!("--initial-cluster-token={}", ec.uid().unwrap_or_else(|| n.cluster.clone())),
        format!("--listen-metrics-urls=http://{host}:{METRICS_PORT}"),
        format!("--quota-backend-bytes={}", s.etcd.quota_backend_bytes),
        format!("--snapshot-count={}", s.etcd.snapshot_count),
        format!("--auto-compaction-mode={}", format!("{:?}", s.etcd.auto_compaction_mode).to_lowercase()),
        format!("--auto-compaction-retention={}", s.etcd.auto_compaction_retention),
        format!("--heartbeat-interval={}", s.etcd.heartbeat_interval_ms),
        format!("--election-timeout={}", s.etcd.election_timeout_ms),
    ];
    if n.tls {
        args.extend([
            "--client-cert-auth".to_string(),
            "--trusted-ca-file=/etc/etcd/tls/server/ca.crt".to_string(),
            "--cert-file=/etc/etcd/tls/server/tls.crt".to_string(),
            "--key-file=/etc/etcd/tls/server/tls.key".to_string(),
            "--peer-client-cert-auth".to_string(),
            "--peer-trusted-ca-file=/etc/etcd/tls/peer/ca.crt".to_string(),
            "--peer-cert-file=/etc/etcd/tls/peer/tls.crt".to_string(),
            "--peer-key-file=/etc/etcd/tls/peer/tls.key".to_string(),
        ]);
        // Peers and clients share the operator's CA: only the peer certificate's CN
        // passes peer authentication, so no client certificate can act as a member.
        if s.tls.mode == TlsMode::Operator {
            args.push(format!("--peer-cert-allowed-cn={}", super::tls::PEER_CN));
        }
    }
    args
}

/// Hash of everything in a member pod that follows from the spec (image, resources,
/// etcd tuning, scheduling, TLS): the pod of a placeholder member, so a member's own
/// name and join flags do not count.
pub fn spec_hash(ec: &EtcdCluster, repository: &str) -> String {
    use sha2::{Digest, Sha256};
    let pod = pod_of(ec, "member", &Join { initial_cluster: Vec::new(), existing: true }, repository);
    let bytes = serde_json::to_vec(&pod.spec).unwrap_or_default();
    hex::encode(&Sha256::digest(&bytes)[..8])
}

/// A member's pod, annotated with the spec hash it was built from. A bootstrap member of
/// a restored cluster also gets the init container that seeds its volume (not part of
/// the spec hash: it only ever runs before the member's first start).
pub fn member_pod(ec: &EtcdCluster, member: &str, join: &Join, repository: &str, operator_image: &str) -> Pod {
    let mut pod = pod_of(ec, member, join, repository);
    pod.metadata
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(SPEC_HASH_ANNOTATION.into(), spec_hash(ec, repository));
    if let (Some(seed), Some(spec)) = (seed_container(ec, member, join, operator_image), pod.spec.as_mut()) {
        spec.init_containers = Some(vec![seed]);
    }
    pod
}

/// The init container that seeds a restored cluster's bootstrap member from the
/// snapshot its EtcdRestore recorded (see [`crate::seed`]).
pub fn seed_container(ec: &EtcdCluster, member: &str, join: &Join, operator_image: &str) -> Option<Container> {
    use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, SecretKeySelector};
    if join.existing {
        return None;
    }
    let source = crate::seed::SeedSource::from_cluster(ec)?;
    let n = Names::of(ec);
    let initial: Vec<String> = join.initial_cluster.iter().map(|(m, u)| format!("{m}={u}")).collect();
    let mut env = vec![EnvVar {
        name: "ETCD_PILOT_SEED_SOURCE".into(),
        value: Some(serde_json::to_string(&source).unwrap_or_default()),
        ..EnvVar::default()
    }];
    if let Some(c) = &source.credentials_secret {
        let from = |name: &str, key: &str| EnvVar {
            name: name.into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector { name: c.name.clone(), key: key.into(), optional: None }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        };
        env.push(from("AWS_ACCESS_KEY_ID", &c.access_key_id_key));
        env.push(from("AWS_SECRET_ACCESS_KEY", &c.secret_access_key_key));
        if let Some(k) = &c.session_token_key {
            env.push(from("AWS_SESSION_TOKEN", k));
        }
    }
    Some(Container {
        name: "seed".into(),
        image: Some(operator_image.into()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["/usr/local/bin/etcd-pilot".into()]),
        args: Some(vec![
            "seed-member".into(),
            format!("--data-dir={DATA_DIR}/data"),
            format!("--name={member}"),
            format!("--peer-url={}", n.peer_url(member)),
            format!("--initial-cluster={}", initial.join(",")),
            format!("--token={}", ec.uid().unwrap_or_else(|| n.cluster.clone())),
        ]),
        env: Some(env),
        volume_mounts: Some(vec![VolumeMount {
            name: "data".into(),
            mount_path: DATA_DIR.into(),
            ..VolumeMount::default()
        }]),
        resources: Some(default_resources()),
        // As etcd runs: the pod's non-root user, owning the volume through fsGroup.
        security_context: Some(container_security()),
        ..Container::default()
    })
}

/// The user and group member pods run as (the "nonroot" user of distroless images).
pub const MEMBER_UID: i64 = 65532;

/// Every container of a member pod: no privilege, no capability, a read-only root
/// filesystem (etcd writes only to its volume).
fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Capabilities::default() }),
        ..SecurityContext::default()
    }
}

/// The health endpoints a member's probes ask, by etcd version: `(ready, alive)`. etcd
/// 3.6 serves `/readyz` and `/livez` (its upgrade guide points probes there); before it,
/// `/health` (NOSPACE excluded: a full cluster still serves reads) for both.
pub fn probe_paths(version: &str) -> (&'static str, &'static str) {
    match crate::api::validation::parse_version(version) {
        Ok(v) if (v.major, v.minor) >= (3, 6) => ("/readyz", "/livez"),
        _ => (HEALTH_PATH, HEALTH_PATH),
    }
}

fn health_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(METRICS_PORT),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(5),
        failure_threshold: Some(failures),
        ..Probe::default()
    }
}

fn pod_of(ec: &EtcdCluster, member: &str, join: &Join, repository: &str) -> Pod {
    let n = Names::of(ec);
    let s = &ec.spec;
    let mut metadata = meta(ec, member, &[("etcdpilot.io/member", member), ("app.kubernetes.io/component", "member")]);
    // What a member was built with, so a later spec can be checked against what runs.
    metadata.annotations = Some(BTreeMap::from([
        (VERSION_ANNOTATION.to_string(), s.version.clone()),
        (TOPOLOGY_ANNOTATION.to_string(), format!("{:?}", s.topology)),
        (MEDIUM_ANNOTATION.to_string(), format!("{:?}", s.storage.medium)),
        (TLS_MODE_ANNOTATION.to_string(), format!("{:?}", s.tls.mode)),
        (CA_FROM_ANNOTATION.to_string(), s.tls.ca_from.as_ref().map(|c| c.cluster.clone()).unwrap_or_default()),
    ]));

    let mut mounts = vec![VolumeMount { name: "data".into(), mount_path: DATA_DIR.into(), ..VolumeMount::default() }];
    let mut volumes = vec![Volume {
        name: "data".into(),
        persistent_volume_claim: (s.storage.medium == StorageMedium::Persistent)
            .then(|| PersistentVolumeClaimVolumeSource { claim_name: n.pvc(member), read_only: None }),
        empty_dir: (s.storage.medium == StorageMedium::Memory)
            .then(|| EmptyDirVolumeSource { medium: Some("Memory".into()), size_limit: Some(s.storage.size.clone()) }),
        ..Volume::default()
    }];
    if let Some(secrets) = super::tls::secret_names(ec) {
        for (vol, dir, secret) in [("tls-server", "server", secrets.server), ("tls-peer", "peer", secrets.peer)] {
            mounts.push(VolumeMount {
                name: vol.into(),
                mount_path: format!("/etc/etcd/tls/{dir}"),
                read_only: Some(true),
                ..VolumeMount::default()
            });
            volumes.push(Volume {
                name: vol.into(),
                secret: Some(k8s_openapi::api::core::v1::SecretVolumeSource {
                    secret_name: Some(secret),
                    // Keys readable by the member's group (fsGroup) only.
                    default_mode: Some(0o440),
                    ..Default::default()
                }),
                ..Volume::default()
            });
        }
    }

    let container = Container {
        name: "etcd".into(),
        image: Some(image(s, repository)),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(vec!["/usr/local/bin/etcd".into()]),
        args: Some(etcd_args(ec, member, join)),
        ports: Some(vec![
            container_port("client", CLIENT_PORT),
            container_port("peer", PEER_PORT),
            container_port("metrics", METRICS_PORT),
        ]),
        // /health answers 200 once the member has a leader (alarms but NOSPACE count).
        // Ready: in the client Service. Started: up to 5 minutes to join and catch up.
        // Alive: restarted only after 80 s without an answer.
        readiness_probe: Some(health_probe(probe_paths(&s.version).0, 5, 3)),
        startup_probe: Some(health_probe(probe_paths(&s.version).1, 5, 60)),
        liveness_probe: Some(health_probe(probe_paths(&s.version).1, 10, 8)),
        // Without requests a member is BestEffort: the first pod evicted under pressure.
        resources: Some(s.resources.clone().unwrap_or_else(default_resources)),
        env: (s.topology == Topology::Stacked).then(|| vec![node_ip_env()]),
        volume_mounts: Some(mounts),
        security_context: Some(container_security()),
        ..Container::default()
    };

    let mut tolerations: Vec<Toleration> = s.scheduling.tolerations.clone();
    let mut node_selector = s.scheduling.node_selector.clone();
    let mut anti = s.scheduling.anti_affinity;
    if s.topology == Topology::Stacked {
        node_selector.insert(CONTROL_PLANE_LABEL.into(), String::new());
        // Control-plane nodes are tainted with one or (before Kubernetes 1.24) the other.
        for key in [CONTROL_PLANE_LABEL, MASTER_LABEL] {
            tolerations.push(Toleration {
                key: Some(key.into()),
                operator: Some("Exists".into()),
                effect: Some("NoSchedule".into()),
                ..Toleration::default()
            });
        }
        // One member per control-plane node, by definition.
        anti = AntiAffinity::Required;
    }

    let stacked = s.topology == Topology::Stacked;
    Pod {
        metadata,
        spec: Some(PodSpec {
            // Stacked members serve on their node's address, where the node's own
            // kube-apiserver reaches them; they still resolve peers by cluster DNS.
            host_network: stacked.then_some(true),
            dns_policy: stacked.then(|| "ClusterFirstWithHostNet".to_string()),
            hostname: Some(member.into()),
            subdomain: Some(n.peer_service()),
            containers: vec![container],
            volumes: Some(volumes),
            affinity: affinity(&n.cluster, anti, s.scheduling.affinity.clone()),
            node_selector: (!node_selector.is_empty()).then_some(node_selector),
            tolerations: (!tolerations.is_empty()).then_some(tolerations),
            topology_spread_constraints: (!s.scheduling.topology_spread_constraints.is_empty())
                .then(|| s.scheduling.topology_spread_constraints.clone()),
            priority_class_name: s.scheduling.priority_class_name.clone(),
            // etcd needs no Kubernetes API access.
            automount_service_account_token: Some(false),
            // Non-root; the volume is made the member's group's (and group-writable) by
            // the kubelet, only when its top directory is not already (a member that ran
            // as root before is changed once, on its next start).
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(MEMBER_UID),
                run_as_group: Some(MEMBER_UID),
                fs_group: Some(MEMBER_UID),
                fs_group_change_policy: Some("OnRootMismatch".into()),
                seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..SeccompProfile::default() }),
                ..PodSecurityContext::default()
            }),
            // etcd flushes on SIGTERM; give it time.
            termination_grace_period_seconds: Some(30),
            restart_policy: Some("Always".into()),
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

/// Requests of a member that names none: enough to schedule it as Burstable.
fn default_resources() -> k8s_openapi::api::core::v1::ResourceRequirements {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    k8s_openapi::api::core::v1::ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity("100m".into())),
            ("memory".to_string(), Quantity("128Mi".into())),
        ])),
        ..Default::default()
    }
}

/// `NODE_IP` from the downward API: the address of the node the pod runs on.
fn node_ip_env() -> k8s_openapi::api::core::v1::EnvVar {
    use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector};
    EnvVar {
        name: NODE_IP_ENV.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: "status.hostIP".into(), api_version: None }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: port,
        protocol: Some("TCP".into()),
        ..ContainerPort::default()
    }
}

/// The user's affinity with member anti-affinity added.
fn affinity(cluster: &str, anti: AntiAffinity, user: Option<Affinity>) -> Option<Affinity> {
    let term = PodAffinityTerm {
        label_selector: Some(LabelSelector { match_labels: Some(selector(cluster)), ..LabelSelector::default() }),
        topology_key: "kubernetes.io/hostname".into(),
        ..PodAffinityTerm::default()
    };
    let mut a = user.unwrap_or_default();
    let mut paa = a.pod_anti_affinity.take().unwrap_or_default();
    match anti {
        AntiAffinity::Required => {
            paa.required_during_scheduling_ignored_during_execution.get_or_insert_with(Vec::new).push(term)
        }
        AntiAffinity::Preferred => paa
            .preferred_during_scheduling_ignored_during_execution
            .get_or_insert_with(Vec::new)
            .push(WeightedPodAffinityTerm { weight: 100, pod_affinity_term: term }),
        AntiAffinity::None => {}
    }
    let empty = PodAntiAffinity::default();
    if paa != empty {
        a.pod_anti_affinity = Some(paa);
    }
    (a != Affinity::default()).then_some(a)
}

#[cfg(test)]
mod tests {
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
        assert_eq!(
            (psc.run_as_non_root, psc.run_as_user, psc.fs_group),
            (Some(true), Some(MEMBER_UID), Some(MEMBER_UID))
        );
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
        let spec: EtcdClusterSpec =
            serde_norway::from_str("{version: 3.5.17, image: 'quay.io/me/etcd:custom'}").unwrap();
        assert_eq!(image(&spec, "ignored"), "quay.io/me/etcd:custom");
    }
}
