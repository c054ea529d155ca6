//! `EtcdCluster`: an etcd cluster of 1, 3, 5 or 7 members run by etcd-pilot.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::S3Target;

/// An etcd cluster run by etcd-pilot.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "etcdpilot.io",
    version = "v1alpha1",
    kind = "EtcdCluster",
    namespaced,
    status = "EtcdClusterStatus",
    // The scale subresource: `kubectl scale`, and the disruption controller counts the
    // expected member pods from it (a PodDisruptionBudget with maxUnavailable needs the
    // pods' controller to have one).
    scale(spec_replicas_path = ".spec.size", status_replicas_path = ".status.readyMembers"),
    shortname = "etcd",
    category = "etcdpilot",
    derive = "PartialEq",
    doc = "An etcd cluster of 1, 3, 5 or 7 members, provisioned, scaled, healed, upgraded, kept healthy (defragmentation, compaction, NOSPACE) and backed up by etcd-pilot.",
    printcolumn(
        name = "Size",
        type_ = "integer",
        json_path = ".spec.size",
        description = "Desired number of voting members"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.readyMembers",
        description = "Healthy voting members"
    ),
    printcolumn(
        name = "Available",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Available\")].status",
        description = "Whether a quorum of voting members is healthy"
    ),
    printcolumn(
        name = "Doing",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Progressing\")].reason",
        description = "What etcd-pilot is doing (Idle, AddingLearner, Defragmenting, Blocked, ...)"
    ),
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.version",
        description = "Lowest etcd version running"
    ),
    printcolumn(
        name = "Leader",
        type_ = "string",
        json_path = ".status.leader",
        description = "Member that leads the raft group"
    ),
    printcolumn(
        name = "Last Backup",
        type_ = "date",
        json_path = ".status.lastBackup.completionTime",
        description = "When the newest successful backup finished"
    ),
    printcolumn(
        name = "Alarm",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Alarm\")].reason",
        priority = 1,
        description = "Active etcd alarms (NOSPACE, CORRUPT), or None"
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Progressing\")].message",
        priority = 1,
        description = "What etcd-pilot is doing, in a sentence"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct EtcdClusterSpec {
    /// Number of voting members. Only odd sizes 1, 3, 5 or 7 are allowed: an even size adds
    /// a member without adding fault tolerance. Changing it scales the cluster one member
    /// at a time (new members join as learners and are promoted once in sync).
    #[serde(default = "default_size")]
    #[schemars(extend("enum" = [1, 3, 5, 7]))]
    pub size: i32,

    /// etcd version to run, as `MAJOR.MINOR.PATCH` (e.g. `3.5.17`). Changing it rolls the
    /// members one at a time, leader last. etcd supports upgrades of one minor version at
    /// a time; a larger jump is refused with a condition and an Event.
    #[schemars(regex(pattern = r"^\d+\.\d+\.\d+$"))]
    pub version: String,

    /// Container image for the members. Defaults to the operator's configured etcd image
    /// repository with the tag `v<version>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Where members run: `External` (dedicated pods with their own volumes, the default)
    /// or `Stacked` (one member on each control-plane node). Cannot change on a live cluster.
    #[serde(default)]
    pub topology: Topology,

    /// Member data volumes.
    #[serde(default)]
    pub storage: StorageSpec,

    /// Compute resources of each member's etcd container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Where member pods may be scheduled.
    #[serde(default)]
    pub scheduling: SchedulingSpec,

    /// Transport security for peer and client traffic.
    #[serde(default)]
    pub tls: TlsSpec,

    /// etcd server settings.
    #[serde(default)]
    pub etcd: EtcdTuning,

    /// When to defragment members (one at a time, the leader last).
    #[serde(default)]
    pub defrag: DefragPolicy,

    /// Operator-driven compaction of old revisions.
    #[serde(default)]
    pub compaction: CompactionPolicy,

    /// Warning before the backend quota is reached, and automatic recovery from NOSPACE.
    #[serde(default)]
    pub quota: QuotaPolicy,

    /// Default target of EtcdBackups and EtcdBackupSchedules of this cluster that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<S3Target>,

    /// Which kube-apiserver resources this cluster serves, wired through
    /// `--etcd-servers-overrides` (e.g. `events`, to move event churn off the main etcd).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server: Option<ApiServerWiring>,

    /// How failed members are replaced.
    #[serde(default)]
    pub healing: HealingPolicy,

    /// Stop every action on this cluster (membership, upgrades, defragmentation,
    /// backups). Status keeps being updated.
    #[serde(default)]
    pub paused: bool,
}

fn is_zero(n: &i32) -> bool {
    *n == 0
}

fn default_size() -> i32 {
    3
}

/// Where the members of a cluster run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Topology {
    /// Dedicated member pods with their own persistent volumes, spread across nodes.
    #[default]
    External,
    /// One member on each control-plane node, as kubeadm's stacked etcd: on the host
    /// network, serving on the node's address (ports 2379, 2380, 2381 of the node).
    Stacked,
}

/// Member data volumes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// `Persistent` (a PersistentVolumeClaim per member, the default) or `Memory` (a
    /// memory-backed emptyDir: fast, but a member that restarts comes back empty and is
    /// replaced; use only for data you can lose or restore).
    #[serde(default)]
    pub medium: StorageMedium,
    /// Size of each member's volume. Should exceed `etcd.quotaBackendBytes` with headroom.
    #[serde(default = "default_storage_size")]
    pub size: Quantity,
    /// StorageClass of the member PVCs. Unset means the cluster's default StorageClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// What happens to member PVCs when members go away.
    #[serde(default)]
    pub retention: PvcRetention,
    /// `Memory` only: accept that restarting the only member of a single-member cluster
    /// (for an upgrade or a spec change) loses all its data. Without it such a restart
    /// is refused with a condition.
    #[serde(default)]
    pub allow_data_loss: bool,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            medium: StorageMedium::default(),
            size: default_storage_size(),
            storage_class_name: None,
            retention: PvcRetention::default(),
            allow_data_loss: false,
        }
    }
}

fn default_storage_size() -> Quantity {
    Quantity("4Gi".to_string())
}

/// The backing of member data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum StorageMedium {
    /// A PersistentVolumeClaim per member.
    #[default]
    Persistent,
    /// A memory-backed emptyDir per member.
    Memory,
}

/// What happens to member PVCs, named after the StatefulSet field of the same purpose.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PvcRetention {
    /// When the EtcdCluster is deleted: `Retain` (the default: data outlives the cluster
    /// until you delete the PVCs) or `Delete`.
    #[serde(default = "retain")]
    pub when_deleted: RetentionAction,
    /// When a member is removed by a scale-down or replaced: `Delete` (the default: a
    /// removed member's data can never rejoin the cluster) or `Retain`.
    #[serde(default = "delete")]
    pub when_scaled: RetentionAction,
}

impl Default for PvcRetention {
    fn default() -> Self {
        Self { when_deleted: retain(), when_scaled: delete() }
    }
}

fn retain() -> RetentionAction {
    RetentionAction::Retain
}

fn delete() -> RetentionAction {
    RetentionAction::Delete
}

/// Keep or delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RetentionAction {
    /// Keep the PVC.
    Retain,
    /// Delete the PVC.
    Delete,
}

/// Scheduling of member pods.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingSpec {
    /// How strongly members avoid sharing a node: `Preferred` (the default: spread when
    /// there are enough nodes), `Required` (never two on one node; members wait for a
    /// free node) or `None`. Ignored for `Stacked`, which is one member per node by nature.
    #[serde(default)]
    pub anti_affinity: AntiAffinity,
    /// Extra affinity, merged with the anti-affinity above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Node labels a member's node must have.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of member pods. `Stacked` members also tolerate the control-plane taint.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Topology spread constraints of member pods (e.g. across zones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// PriorityClass of member pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// Anti-affinity between members of one cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AntiAffinity {
    /// Spread members across nodes when possible.
    #[default]
    Preferred,
    /// Never place two members on one node.
    Required,
    /// No anti-affinity.
    None,
}

/// Transport security. etcd runs with client-certificate authentication on both the
/// peer and the client port unless `mode` is `Disabled`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// `Operator` (the default: etcd-pilot generates a CA per cluster and issues and
    /// rotates peer, server and client certificates), `Secrets` (you provide them),
    /// `CertManager` (cert-manager issues them from `certManager.issuerRef`; not supported
    /// by this version yet: refused with a condition) or `Disabled` (plain text; for tests
    /// only).
    #[serde(default)]
    pub mode: TlsMode,
    /// Your Secrets, for mode `Secrets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<TlsSecrets>,
    /// The issuer, for mode `CertManager`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_manager: Option<CertManagerTls>,
    /// Mode `Operator`: sign this cluster's certificates with the CA of another
    /// EtcdCluster in this namespace (as an `--etcd-servers-overrides` cluster must, to
    /// share the main cluster's CA). The cluster waits for that CA before it starts. Set
    /// at creation; it cannot change once members exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_from: Option<CaFrom>,
    /// Lifetime of operator-issued leaf certificates, in days.
    #[serde(default = "default_cert_validity_days")]
    #[schemars(range(min = 1, max = 3650))]
    pub certificate_validity_days: i32,
    /// Operator-issued leaf certificates are renewed (one member at a time) when this
    /// many days of validity remain.
    #[serde(default = "default_renew_before_days")]
    #[schemars(range(min = 1, max = 3650))]
    pub renew_before_days: i32,
    /// Mode `Operator`: raise this number to rotate the cluster's CA. The new CA is first
    /// trusted beside the old one (a rolling restart: etcd loads trusted CAs only at
    /// start), then signs new certificates, then the old CA is dropped (a second rolling
    /// restart); one member at a time, the leader last, quorum kept throughout. Condition
    /// `CertificatesReady` (reason `Rotating`) tells the phase. Refused (Warning, nothing
    /// changes) for a CA shared through `caFrom` or a cluster wired to kube-apiserver.
    /// Lowering it does nothing.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub ca_generation: i64,
}

impl Default for TlsSpec {
    fn default() -> Self {
        Self {
            mode: TlsMode::default(),
            secrets: None,
            cert_manager: None,
            ca_from: None,
            certificate_validity_days: default_cert_validity_days(),
            renew_before_days: default_renew_before_days(),
            ca_generation: 0,
        }
    }
}

fn default_cert_validity_days() -> i32 {
    365
}

fn default_renew_before_days() -> i32 {
    30
}

/// Who provides the certificates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TlsMode {
    /// etcd-pilot generates a CA per cluster and issues all certificates.
    #[default]
    Operator,
    /// The user provides the Secrets named in `tls.secrets`.
    Secrets,
    /// cert-manager issues the certificates.
    CertManager,
    /// No TLS. Anyone who reaches the pods reads and writes everything: tests only.
    Disabled,
}

/// User-provided `kubernetes.io/tls` Secrets (keys `tls.crt`, `tls.key`, `ca.crt`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSecrets {
    /// Secret with the certificate members present to each other. Must be valid for
    /// client and server auth and name every member's peer DNS name, fully qualified too
    /// (`*.<cluster>-peers.<namespace>.svc` and `*.<cluster>-peers.<namespace>.svc.cluster.local`):
    /// etcd checks a peer's certificate against the reverse DNS name of its IP.
    pub peer: String,
    /// Secret with the certificate members serve to clients. Must name every member
    /// (`*.<cluster>-peers.<namespace>.svc`, which etcd-pilot connects to) and the names
    /// your clients use (e.g. `<cluster>-client.<namespace>.svc`).
    pub server: String,
    /// Secret with the client certificate etcd-pilot (and you) use to talk to etcd.
    pub client: String,
}

/// cert-manager settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CertManagerTls {
    /// The Issuer or ClusterIssuer that signs the certificates.
    pub issuer_ref: IssuerRef,
}

/// A cert-manager issuer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// Name of the issuer.
    pub name: String,
    /// `Issuer` (the default) or `ClusterIssuer`.
    #[serde(default = "default_issuer_kind")]
    pub kind: String,
    /// API group of the issuer.
    #[serde(default = "default_issuer_group")]
    pub group: String,
}

fn default_issuer_kind() -> String {
    "Issuer".to_string()
}

fn default_issuer_group() -> String {
    "cert-manager.io".to_string()
}

/// etcd server settings that users tune.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdTuning {
    /// Backend quota in bytes (`--quota-backend-bytes`). Past it etcd raises the NOSPACE
    /// alarm and refuses writes. Default 2 GiB; etcd suggests at most 8 GiB.
    #[serde(default = "default_quota")]
    #[schemars(range(min = 16777216, max = 68719476736i64))]
    pub quota_backend_bytes: i64,
    /// Committed transactions between raft snapshots (`--snapshot-count`).
    #[serde(default = "default_snapshot_count")]
    #[schemars(range(min = 1000))]
    pub snapshot_count: i64,
    /// etcd's own auto-compaction mode: `Periodic` or `Revision` (`--auto-compaction-mode`).
    #[serde(default)]
    pub auto_compaction_mode: AutoCompactionMode,
    /// etcd's own auto-compaction retention (`--auto-compaction-retention`): a duration
    /// such as `1h` for `Periodic`, a revision count for `Revision`; `0` turns it off.
    #[serde(default = "default_auto_compaction_retention")]
    pub auto_compaction_retention: String,
    /// Heartbeat interval in milliseconds (`--heartbeat-interval`).
    #[serde(default = "default_heartbeat_ms")]
    #[schemars(range(min = 10, max = 10000))]
    pub heartbeat_interval_ms: i32,
    /// Election timeout in milliseconds (`--election-timeout`); at least 5x the heartbeat.
    #[serde(default = "default_election_ms")]
    #[schemars(range(min = 50, max = 50000))]
    pub election_timeout_ms: i32,
}

impl Default for EtcdTuning {
    fn default() -> Self {
        Self {
            quota_backend_bytes: default_quota(),
            snapshot_count: default_snapshot_count(),
            auto_compaction_mode: AutoCompactionMode::default(),
            auto_compaction_retention: default_auto_compaction_retention(),
            heartbeat_interval_ms: default_heartbeat_ms(),
            election_timeout_ms: default_election_ms(),
        }
    }
}

fn default_quota() -> i64 {
    2 * 1024 * 1024 * 1024
}

fn default_snapshot_count() -> i64 {
    10_000
}

fn default_auto_compaction_retention() -> String {
    "0".to_string()
}

fn default_heartbeat_ms() -> i32 {
    100
}

fn default_election_ms() -> i32 {
    1000
}

/// etcd's auto-compaction modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AutoCompactionMode {
    /// Keep a window of time.
    #[default]
    Periodic,
    /// Keep a number of revisions.
    Revision,
}

/// When members are defragmented. Defragmentation blocks a member while it runs, so
/// members go one at a time, followers first, the leader last, and only while the
/// cluster is healthy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DefragPolicy {
    /// Defragment at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Defragment a member when this share (percent) of its db file is free space:
    /// `(dbSize - dbSizeInUse) / dbSize`.
    #[serde(default = "default_frag_threshold")]
    #[schemars(range(min = 1, max = 100))]
    pub fragmentation_threshold_percent: i32,
    /// Members whose db file is smaller than this are left alone.
    #[serde(default = "default_defrag_min_db")]
    #[schemars(range(min = 0))]
    pub min_db_size_bytes: i64,
    /// Also defragment on this cron schedule (5 fields, UTC), whatever the fragmentation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::api::validation::CRON_PATTERN))]
    pub schedule: Option<String>,
}

impl Default for DefragPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            fragmentation_threshold_percent: default_frag_threshold(),
            min_db_size_bytes: default_defrag_min_db(),
            schedule: None,
        }
    }
}

fn yes() -> bool {
    true
}

fn default_frag_threshold() -> i32 {
    50
}

fn default_defrag_min_db() -> i64 {
    64 * 1024 * 1024
}

/// Compaction of old revisions by etcd-pilot (in addition to, or instead of, etcd's own
/// auto-compaction). kube-apiserver compacts its own etcd every 5 minutes; use this for
/// clusters no apiserver compacts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompactionPolicy {
    /// Cron schedule (5 fields, UTC) of compactions. Unset: etcd-pilot does not compact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = crate::api::validation::CRON_PATTERN))]
    pub schedule: Option<String>,
    /// Revisions kept behind the current one at each compaction.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub retain_revisions: i64,
}

/// What etcd-pilot does about the backend quota (`spec.etcd.quotaBackendBytes`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QuotaPolicy {
    /// Condition `QuotaHigh` and a Warning Event when a member's db file reaches this
    /// share (percent) of the quota, before etcd refuses writes.
    #[serde(default = "default_warn_at_percent")]
    #[schemars(range(min = 1, max = 100))]
    pub warn_at_percent: i32,
    /// When etcd raises NOSPACE: compact (keeping `compaction.retainRevisions`, or all
    /// history if that frees too little), defragment every member (the leader last),
    /// then disarm the alarm. Off: the alarm stays until someone acts.
    #[serde(default = "yes")]
    pub remediate_no_space: bool,
}

impl Default for QuotaPolicy {
    fn default() -> Self {
        Self { warn_at_percent: default_warn_at_percent(), remediate_no_space: true }
    }
}

fn default_warn_at_percent() -> i32 {
    80
}

/// kube-apiserver's wiring to this cluster (its main etcd), and which resources other
/// EtcdClusters of this namespace serve instead (`--etcd-servers-overrides`). etcd-pilot
/// publishes the flags' values and a client certificate for kube-apiserver in a Secret
/// (`status.apiServer.secretName`). `{}`: no overrides.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiServerWiring {
    /// Resources another EtcdCluster serves, each one `--etcd-servers-overrides` entry
    /// `group/resource#url`. That cluster must share this cluster's CA
    /// (`spec.tls.caFrom.cluster` naming this one): kube-apiserver has one set of etcd TLS
    /// flags for all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overrides: Vec<ApiServerOverride>,
}

/// One resource served by another EtcdCluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiServerOverride {
    /// API group; empty or unset for the core group (e.g. `events`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// Plural resource name (e.g. `events`, `leases`).
    #[schemars(length(min = 1))]
    pub resource: String,
    /// The EtcdCluster, in this namespace, that serves it.
    #[schemars(length(min = 1))]
    pub cluster: String,
}

/// Another EtcdCluster whose CA this one uses.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaFrom {
    /// The EtcdCluster, in this namespace, whose CA signs this cluster's certificates.
    #[schemars(length(min = 1))]
    pub cluster: String,
}

/// Replacement of failed members.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealingPolicy {
    /// Replace a member (remove it, add a fresh learner) when its pod and volume are gone,
    /// or when etcd and its pod agree it is down (etcd gets no healthy answer from it and
    /// its pod is not ready or failed) for this long; a learner not healthy within this
    /// long is removed and retried a minute later (one whose pod no node takes waits
    /// instead: it does not vote). Only when the rest keep quorum, and never two at once.
    #[serde(default = "default_unhealthy_seconds")]
    #[schemars(range(min = 30))]
    pub replace_unhealthy_after_seconds: i32,
    /// Off (unset) by default. When set, and quorum has been lost for good for this many
    /// seconds (a majority of voting members gone with their volumes; never while their
    /// pods are merely Pending or their volumes remain), etcd-pilot starts an in-place
    /// EtcdRestore from the most advanced surviving member by itself. Needs
    /// `spec.backup`, where the survivor's snapshot is staged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 30))]
    pub recover_quorum_loss_after_seconds: Option<i32>,
}

impl Default for HealingPolicy {
    fn default() -> Self {
        Self { replace_unhealthy_after_seconds: default_unhealthy_seconds(), recover_quorum_loss_after_seconds: None }
    }
}

fn default_unhealthy_seconds() -> i32 {
    300
}

/// What etcd-pilot observed of a cluster.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EtcdClusterStatus {
    /// `Available` (quorum and a leader), `Progressing` (a change under way), `Degraded`
    /// (a member unhealthy or missing), `Alarm` (NOSPACE or CORRUPT raised), `SpecValid`,
    /// and others with reasons. A map by type: each controller applies only its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The generation of the spec this status is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Every member etcd knows of, and pods of members it does not know of yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,
    /// Healthy voting members.
    #[serde(default)]
    pub ready_members: i32,
    /// Name of the leading member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Lowest etcd version running on any member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// etcd's cluster id, in hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// Client URLs: the client Service first, then each voting member.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_endpoints: Vec<String>,
    /// Highest member ordinal ever used. New members take the next one, so a member
    /// name (and DNS name) is never given twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub highest_ordinal: Option<i64>,
    /// The highest etcd revision etcd-pilot has seen the cluster serve (recorded when
    /// the status changes, and at least every 10000 revisions). A restore starts the
    /// restored data above it, so clients never see a revision twice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// The newest successful backup (written by the backup controller alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup: Option<BackupRef>,
    /// Compactions and NOSPACE recoveries etcd-pilot did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub maintenance: Option<MaintenanceStatus>,
    /// kube-apiserver's wiring, as published (written by the wiring controller alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_server: Option<ApiServerStatus>,
}

/// What etcd-pilot published for kube-apiserver.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiServerStatus {
    /// The Secret with `ca.crt`, `tls.crt`, `tls.key`, `etcd-servers` and
    /// `etcd-servers-overrides`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub secret_name: String,
    /// The value of `--etcd-servers`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub etcd_servers: String,
    /// The value of `--etcd-servers-overrides` (empty: none).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub etcd_servers_overrides: String,
    /// When the published values or certificate last changed: kube-apiserver reads them
    /// only at start, so restart it after this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_changed: Option<Time>,
    /// When kube-apiserver's client certificate expires (it is renewed before).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_not_after: Option<Time>,
}

/// Compaction and NOSPACE recovery, as done by etcd-pilot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceStatus {
    /// The last compaction etcd-pilot did (scheduled, or to recover from NOSPACE).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_compaction: Option<CompactionRecord>,
    /// A NOSPACE recovery under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_space: Option<NoSpaceRecovery>,
    /// The last NOSPACE recovery that finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_no_space_recovery: Option<NoSpaceRecovery>,
}

/// One compaction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompactionRecord {
    /// When it was done.
    pub time: Time,
    /// Revisions below this one are gone.
    pub revision: i64,
}

/// A recovery from NOSPACE: detected, compacted, every member defragmented, disarmed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NoSpaceRecovery {
    /// When etcd-pilot first saw the alarm.
    pub detected: Time,
    /// The largest member db file then.
    pub db_size_before: i64,
    /// When history was compacted for this recovery (members defragmented after it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compacted: Option<Time>,
    /// The revision compacted to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compacted_revision: Option<i64>,
    /// All history was compacted (keeping `compaction.retainRevisions` freed too little).
    #[serde(default)]
    pub all_history: bool,
    /// When the alarm was disarmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<Time>,
    /// The largest member db file after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_size_after: Option<i64>,
}

/// A member's last defragmentation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DefragRecord {
    /// When it finished.
    pub time: Time,
    /// How long the member was blocked (it serves nothing while etcd rewrites its db).
    pub blocked_millis: i64,
    /// Size of the db file before.
    pub db_size_before: i64,
    /// Size of the db file after.
    pub db_size_after: i64,
}

/// One member as etcd-pilot saw it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// Member (and pod) name.
    pub name: String,
    /// etcd member id, in hex. Unset for a pod etcd does not know of.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// Peer URLs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peer_urls: Vec<String>,
    /// Client URLs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_urls: Vec<String>,
    /// A learner: receives the log but does not vote.
    #[serde(default)]
    pub learner: bool,
    /// Leads the raft group.
    #[serde(default)]
    pub leader: bool,
    /// Answered its status and has no errors.
    #[serde(default)]
    pub healthy: bool,
    /// Size of the db file in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_size: Option<i64>,
    /// Bytes of the db file in use; the rest is reclaimed by defragmentation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db_size_in_use: Option<i64>,
    /// Share (percent) of the db file that is free space, reclaimed by defragmentation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fragmentation_percent: Option<i32>,
    /// Size of the db file as a share (percent) of the backend quota.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_used_percent: Option<i32>,
    /// The member's last defragmentation by etcd-pilot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_defragmentation: Option<DefragRecord>,
    /// Defragmentations of this member that failed in a row (retried with backoff).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub defrag_failures: i32,
    /// When the last of those failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_defrag_failure: Option<Time>,
    /// etcd raised a CORRUPT alarm for this member: never a backup source, never
    /// disarmed by etcd-pilot.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub corrupt: bool,
    /// etcd version the member runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Errors the member reported, or why it could not be reached.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// A backup, by name and object.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRef {
    /// Name of the EtcdBackup.
    pub name: String,
    /// Object key in the bucket.
    pub object_key: String,
    /// When it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
}
