//! `EtcdCluster`: an etcd cluster of 1, 3, 5 or 7 members run by etcd-pilot.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::S3Target;

mod policies;
mod status;
mod tls;

pub use policies::*;
pub use status::*;
pub use tls::*;

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
