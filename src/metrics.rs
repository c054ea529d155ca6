//! Prometheus metrics of the operator process, served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

type GaugeF = Gauge<f64, std::sync::atomic::AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// One EtcdCluster.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub namespace: String,
    pub cluster: String,
}

/// One member of one EtcdCluster.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemberLabels {
    pub namespace: String,
    pub cluster: String,
    pub member: String,
}

/// A reconcile error, by the step that failed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub namespace: String,
    pub cluster: String,
    /// The controller (`cluster`, later `backup`, `restore`, ...).
    pub controller: String,
    pub step: String,
}

/// A backup's outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackupResultLabels {
    pub namespace: String,
    pub cluster: String,
    /// `succeeded` or `failed` (backups); `success` or `failure` (defragmentations).
    pub result: String,
}

fn backup_histogram() -> Histogram {
    Histogram::new([1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0])
}

fn reconcile_histogram() -> Histogram {
    Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
}

/// The registry and the metrics in it.
pub struct Metrics {
    registry: Registry,
    /// 1 once the operator checked its CRDs and started its controllers.
    pub ready: Gauge,
    /// 1 while this replica holds the leader-election lease.
    pub leader: Gauge,
    pub members: Family<ClusterLabels, Gauge>,
    pub healthy_members: Family<ClusterLabels, Gauge>,
    pub learners: Family<ClusterLabels, Gauge>,
    pub leader_changes: Family<ClusterLabels, Counter>,
    pub quota_bytes: Family<ClusterLabels, Gauge>,
    pub db_size_bytes: Family<MemberLabels, Gauge>,
    pub db_size_in_use_bytes: Family<MemberLabels, Gauge>,
    pub reconcile_duration: Family<ClusterLabels, Histogram, fn() -> Histogram>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub backups: Family<BackupResultLabels, Counter>,
    pub last_backup_timestamp: Family<ClusterLabels, Gauge>,
    pub last_backup_size: Family<ClusterLabels, Gauge>,
    pub backup_uploaded_bytes: Family<ClusterLabels, Counter>,
    pub backup_duration: Family<ClusterLabels, Histogram, fn() -> Histogram>,
    pub quota_used_ratio: Family<MemberLabels, GaugeF>,
    pub fragmentation_ratio: Family<MemberLabels, GaugeF>,
    pub last_defrag_timestamp: Family<MemberLabels, Gauge>,
    pub last_defrag_blocked: Family<MemberLabels, GaugeF>,
    pub defrags: Family<BackupResultLabels, Counter>,
    pub compactions: Family<ClusterLabels, Counter>,
    pub nospace_recoveries: Family<ClusterLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("etcdpilot");
        let build = Family::<BuildLabels, Gauge>::default();
        build.get_or_create(&BuildLabels { version: env!("CARGO_PKG_VERSION").to_string() }).set(1);
        registry.register("build_info", "etcd-pilot build, as a label", build);
        let m = Metrics {
            ready: Gauge::default(),
            leader: Gauge::default(),
            members: Family::default(),
            healthy_members: Family::default(),
            learners: Family::default(),
            leader_changes: Family::default(),
            quota_bytes: Family::default(),
            db_size_bytes: Family::default(),
            db_size_in_use_bytes: Family::default(),
            reconcile_duration: Family::new_with_constructor(reconcile_histogram),
            reconcile_errors: Family::default(),
            backups: Family::default(),
            last_backup_timestamp: Family::default(),
            last_backup_size: Family::default(),
            backup_uploaded_bytes: Family::default(),
            backup_duration: Family::new_with_constructor(backup_histogram),
            quota_used_ratio: Family::default(),
            fragmentation_ratio: Family::default(),
            last_defrag_timestamp: Family::default(),
            last_defrag_blocked: Family::default(),
            defrags: Family::default(),
            compactions: Family::default(),
            nospace_recoveries: Family::default(),
            registry: Registry::default(),
        };
        registry.register("ready", "1 when the operator is ready to reconcile", m.ready.clone());
        registry.register("leader", "1 while this replica holds the leader-election lease", m.leader.clone());
        registry.register("cluster_members", "etcd members (voters and learners)", m.members.clone());
        registry.register("cluster_healthy_members", "Healthy voting members", m.healthy_members.clone());
        registry.register("cluster_learners", "Learner members", m.learners.clone());
        registry.register("cluster_leader_changes", "Leader changes etcd-pilot observed", m.leader_changes.clone());
        registry.register("cluster_quota_backend_bytes", "Backend quota of each member", m.quota_bytes.clone());
        registry.register("member_db_size_bytes", "Size of a member's db file", m.db_size_bytes.clone());
        registry.register(
            "member_db_size_in_use_bytes",
            "Bytes in use of a member's db file",
            m.db_size_in_use_bytes.clone(),
        );
        registry.register("reconcile_duration_seconds", "Duration of one reconcile", m.reconcile_duration.clone());
        registry.register("reconcile_errors", "Failed reconciles, by controller and step", m.reconcile_errors.clone());
        registry.register("backups", "Backups finished, by result", m.backups.clone());
        registry.register(
            "last_successful_backup_timestamp_seconds",
            "When the newest successful backup of a cluster finished (Unix time)",
            m.last_backup_timestamp.clone(),
        );
        registry.register(
            "last_successful_backup_size_bytes",
            "Size of the newest successful backup",
            m.last_backup_size.clone(),
        );
        registry.register("backup_uploaded_bytes", "Snapshot bytes uploaded to S3", m.backup_uploaded_bytes.clone());
        registry.register(
            "backup_duration_seconds",
            "Duration of a backup, snapshot to verified object",
            m.backup_duration.clone(),
        );
        registry.register(
            "member_quota_used_ratio",
            "A member's db file as a share of the backend quota (NOSPACE at 1)",
            m.quota_used_ratio.clone(),
        );
        registry.register(
            "member_fragmentation_ratio",
            "Free share of a member's db file, reclaimed by defragmentation",
            m.fragmentation_ratio.clone(),
        );
        registry.register(
            "member_last_defrag_timestamp_seconds",
            "When etcd-pilot last defragmented a member (Unix time)",
            m.last_defrag_timestamp.clone(),
        );
        registry.register(
            "member_last_defrag_blocked_seconds",
            "How long the member was blocked by its last defragmentation",
            m.last_defrag_blocked.clone(),
        );
        registry.register("defrags", "Defragmentations of a member, by result", m.defrags.clone());
        registry.register("compactions", "Compactions etcd-pilot did", m.compactions.clone());
        registry.register(
            "nospace_recoveries",
            "NOSPACE alarms etcd-pilot recovered from",
            m.nospace_recoveries.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts a failed pass of `controller` over something of `cluster`, by the step
    /// that failed.
    pub fn count_error(&self, namespace: &str, cluster: &str, controller: &str, step: &str) {
        let l = ErrorLabels {
            namespace: namespace.into(),
            cluster: cluster.into(),
            controller: controller.into(),
            step: step.into(),
        };
        self.reconcile_errors.get_or_create(&l).inc();
    }

    /// Drops every series of a cluster that is gone.
    pub fn forget_cluster(&self, namespace: &str, cluster: &str, members: &[String]) {
        let c = ClusterLabels { namespace: namespace.into(), cluster: cluster.into() };
        for f in [&self.members, &self.healthy_members, &self.learners, &self.quota_bytes] {
            f.remove(&c);
        }
        self.leader_changes.remove(&c);
        self.reconcile_duration.remove(&c);
        self.compactions.remove(&c);
        self.nospace_recoveries.remove(&c);
        for result in ["success", "failure"] {
            self.defrags.remove(&BackupResultLabels {
                namespace: namespace.into(),
                cluster: cluster.into(),
                result: result.into(),
            });
        }
        for m in members {
            self.forget_member(namespace, cluster, m);
        }
    }

    /// Drops the series of a member that is gone.
    pub fn forget_member(&self, namespace: &str, cluster: &str, member: &str) {
        let l = MemberLabels { namespace: namespace.into(), cluster: cluster.into(), member: member.into() };
        self.db_size_bytes.remove(&l);
        self.db_size_in_use_bytes.remove(&l);
        self.quota_used_ratio.remove(&l);
        self.fragmentation_ratio.remove(&l);
        self.last_defrag_timestamp.remove(&l);
        self.last_defrag_blocked.remove(&l);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_series_render_and_go_with_the_cluster() {
        let m = Metrics::default();
        let c = ClusterLabels { namespace: "prod".into(), cluster: "main".into() };
        m.members.get_or_create(&c).set(3);
        m.leader_changes.get_or_create(&c).inc();
        let l = MemberLabels { namespace: "prod".into(), cluster: "main".into(), member: "main-0".into() };
        m.db_size_bytes.get_or_create(&l).set(4096);
        m.reconcile_duration.get_or_create(&c).observe(0.2);
        let text = m.render();
        for want in [
            "etcdpilot_cluster_members{namespace=\"prod\",cluster=\"main\"} 3",
            "etcdpilot_cluster_leader_changes_total{namespace=\"prod\",cluster=\"main\"} 1",
            "etcdpilot_member_db_size_bytes{namespace=\"prod\",cluster=\"main\",member=\"main-0\"} 4096",
            "etcdpilot_reconcile_duration_seconds_count{namespace=\"prod\",cluster=\"main\"} 1",
        ] {
            assert!(text.contains(want), "{want} not in\n{text}");
        }
        m.forget_cluster("prod", "main", &["main-0".to_string()]);
        assert!(!m.render().contains("cluster=\"main\""), "series of a deleted cluster are dropped");
    }
}
