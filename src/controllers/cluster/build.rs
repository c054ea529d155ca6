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
use crate::shared::names::*;

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
            args.push(format!("--peer-cert-allowed-cn={}", crate::shared::secrets::PEER_CN));
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
        spec.volumes.get_or_insert_with(Vec::new).extend(seed_key_volumes(ec));
    }
    pod
}

/// The Secret entries of the source's encryption keys, each a volume of the seed alone.
fn seed_key_volumes(ec: &EtcdCluster) -> Vec<Volume> {
    let Some(source) = crate::seed::SeedSource::from_cluster(ec) else { return Vec::new() };
    crate::seed::key_volumes(&source, "seed-key").0
}

/// The init container that seeds a restored cluster's bootstrap member from the
/// snapshot its EtcdRestore recorded (see [`crate::seed`]).
pub fn seed_container(ec: &EtcdCluster, member: &str, join: &Join, operator_image: &str) -> Option<Container> {
    if join.existing {
        return None;
    }
    let source = crate::seed::SeedSource::from_cluster(ec)?;
    let n = Names::of(ec);
    let initial: Vec<String> = join.initial_cluster.iter().map(|(m, u)| format!("{m}={u}")).collect();
    let env = crate::seed::pod_env(&source);
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
        volume_mounts: Some(
            std::iter::once(VolumeMount { name: "data".into(), mount_path: DATA_DIR.into(), ..VolumeMount::default() })
                .chain(crate::seed::key_volumes(&source, "seed-key").1)
                .collect(),
        ),
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
    if let Some(secrets) = crate::shared::secrets::secret_names(ec) {
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
#[path = "build_tests.rs"]
mod tests;
