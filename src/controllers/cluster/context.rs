//! What the cluster controller keeps: its settings, the shared runtime, and what it
//! remembers of each cluster between passes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::Client;

use super::requeue::DbSeen;
use crate::etcd::EtcdAdmin;
use crate::runtime::Runtime;

/// This controller's name in the operation slot and in metrics.
pub const CONTROLLER: &str = "cluster";
/// Field manager of everything this controller applies.
pub const FIELD_MANAGER: &str = "etcd-pilot";
/// Field manager of the status fields it applies.
pub const STATUS_MANAGER: &str = "etcd-pilot-status";
/// A pass's observation must finish well inside the Lease (15 s): Kubernetes' part is
/// an error past this, etcd's part counts as no answer past [`ETCD_OBSERVE_TIMEOUT`].
pub const OBSERVE_TIMEOUT: Duration = Duration::from_secs(5);
pub const ETCD_OBSERVE_TIMEOUT: Duration = Duration::from_secs(8);
/// The revision in the status is brought up to date at least this often.
pub const REVISION_RECORD_STEP: i64 = 10_000;
/// How long Services and the disruption budget, unchanged, go without being applied again.
pub const REAPPLY_FIXED_AFTER: Duration = Duration::from_secs(600);
/// How long after giving up on a learner another is added.
pub const LEARNER_RETRY_AFTER_SECS: u64 = 60;

/// (namespace, name) of a cluster.
pub type Key = (String, String);

/// What the controller remembers of a cluster between passes.
#[derive(Default)]
pub struct Memory {
    /// When each member was first seen unhealthy.
    pub(super) unhealthy_since: HashMap<String, Instant>,
    pub(super) leader: Option<u64>,
    pub(super) warned_no_pdb: bool,
    /// The last Warning published for each reason, so a standing problem is not
    /// repeated every pass.
    pub(super) last_warning: HashMap<String, String>,
    pub(super) member_names: Vec<String>,
    /// When a learner was last given up on.
    pub(super) learner_given_up: Option<Instant>,
    /// The cluster's etcd admin, kept between passes with its connections (closed while
    /// the cluster is calm).
    pub(super) admin: Option<EtcdAdmin>,
    /// Since when quorum has been lost for good (a majority gone with its volumes).
    pub(super) quorum_lost_since: Option<Instant>,
    /// What the Services and budget were last applied from, and when.
    pub(super) fixed_applied: Option<(String, Instant)>,
    /// The largest member db file at the last idle pass, and when: a db that grows
    /// brings the next pass forward (`growth_wait`).
    pub(super) db_seen: Option<DbSeen>,
    /// A member's plain `/health`, which [`sentinel`] asks between passes.
    pub(super) health_url: Option<String>,
}

/// Settings of the controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Repository of etcd images; a member runs `<repository>:v<version>` unless the
    /// cluster names an image.
    pub etcd_image_repository: String,
    /// The API server serves `policy/v1` PodDisruptionBudgets.
    pub policy_v1: bool,
    /// The API server serves `policy/v1beta1` PodDisruptionBudgets (before 1.25).
    pub policy_v1beta1: bool,
    /// The cluster's DNS domain, for the fully qualified names in certificates.
    pub cluster_domain: String,
    /// The operator's own image (restored members seed their volumes with it).
    pub operator_image: String,
}

/// The controller's state: the shared runtime, its settings, its memory.
pub struct Context {
    pub rt: Arc<Runtime>,
    pub settings: Settings,
    pub(super) memory: Mutex<HashMap<Key, Memory>>,
}

impl Context {
    pub fn new(rt: Arc<Runtime>, settings: Settings) -> Self {
        Self { rt, settings, memory: Mutex::new(HashMap::new()) }
    }

    pub(super) fn with_memory<T>(&self, key: &Key, f: impl FnOnce(&mut Memory) -> T) -> T {
        let mut all = self.memory.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(all.entry(key.clone()).or_default())
    }

    pub(super) fn forget(&self, key: &Key) -> Vec<String> {
        let mut all = self.memory.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        all.remove(key).map(|m| m.member_names).unwrap_or_default()
    }
}

/// Which PodDisruptionBudget APIs the API server serves: (`policy/v1`, `policy/v1beta1`).
pub async fn served_pdb_apis(client: &Client) -> (bool, bool) {
    let mut out = [false, false];
    for (i, gv) in ["policy/v1", "policy/v1beta1"].iter().enumerate() {
        if let Ok(list) = client.list_api_group_resources(gv).await {
            out[i] = list.resources.iter().any(|r| r.name == "poddisruptionbudgets");
        }
    }
    (out[0], out[1])
}
