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
    /// What the step failed on (`kubernetes`, `etcd`, `object-store`, `certificates`,
    /// `invalid-input`).
    pub category: String,
}

/// A backup's outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackupResultLabels {
    pub namespace: String,
    pub cluster: String,
    /// `succeeded` or `failed` (backups); `success` or `failure` (defragmentations).
    pub result: String,
}

/// An etcd alarm raised in a cluster (`NOSPACE`, `CORRUPT`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlarmLabels {
    pub namespace: String,
    pub cluster: String,
    pub alarm: String,
}

/// One certificate etcd-pilot issued for a cluster (`ca`, `server`, `peer`, `client`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    pub namespace: String,
    pub cluster: String,
    pub certificate: String,
}

/// One EtcdBackupSchedule.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScheduleLabels {
    pub namespace: String,
    pub schedule: String,
    pub cluster: String,
}

/// One EtcdBackupSchedule's restore drills, by verdict.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerificationLabels {
    pub namespace: String,
    pub schedule: String,
    pub cluster: String,
    /// `passed` or `failed`.
    pub result: String,
}

fn backup_histogram() -> Histogram {
    Histogram::new([1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0])
}

fn reconcile_histogram() -> Histogram {
    Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
}

/// The alarms etcd raises (`etcdpilot_cluster_alarm{alarm}`).
pub const KNOWN_ALARMS: [&str; 2] = ["NOSPACE", "CORRUPT"];
/// The certificates of `etcdpilot_certificate_expiry_timestamp_seconds{certificate}`.
pub const CERTIFICATES: [&str; 4] = ["ca", "server", "peer", "client"];

/// The registry and the metrics in it.
pub struct Metrics {
    registry: Registry,
    /// 1 once the operator checked its CRDs and started its controllers.
    pub ready: Gauge,
    /// 1 while this replica holds the leader-election lease.
    pub leader: Gauge,
    pub members: Family<ClusterLabels, Gauge>,
    pub desired_members: Family<ClusterLabels, Gauge>,
    pub has_leader: Family<ClusterLabels, Gauge>,
    pub quota_warn_ratio: Family<ClusterLabels, GaugeF>,
    pub alarms: Family<AlarmLabels, Gauge>,
    pub certificate_expiry: Family<CertificateLabels, Gauge>,
    pub schedule_interval: Family<ScheduleLabels, Gauge>,
    pub schedule_last_success: Family<ScheduleLabels, Gauge>,
    /// Continuous backup: seconds the store is behind the cluster.
    pub stream_lag: Family<ScheduleLabels, Gauge>,
    /// Continuous backup: the last revision written to the store.
    pub stream_revision: Family<ScheduleLabels, Gauge>,
    /// Continuous backup: gaps (revisions compacted before the stream read them).
    pub stream_gaps: Family<ScheduleLabels, Counter>,
    /// Restore drills: the longest time between two of a schedule's.
    pub verify_interval: Family<ScheduleLabels, Gauge>,
    /// Restore drills: when one last passed (else when the schedule was created).
    pub verify_last_pass: Family<ScheduleLabels, Gauge>,
    /// Restore drills finished, by verdict.
    pub verifications: Family<VerificationLabels, Counter>,
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
    /// The schedule series exported, by (namespace, schedule): dropped when it goes.
    schedules: std::sync::Mutex<std::collections::BTreeMap<(String, String), ScheduleLabels>>,
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
            desired_members: Family::default(),
            has_leader: Family::default(),
            quota_warn_ratio: Family::default(),
            alarms: Family::default(),
            certificate_expiry: Family::default(),
            schedule_interval: Family::default(),
            schedule_last_success: Family::default(),
            stream_lag: Family::default(),
            stream_revision: Family::default(),
            stream_gaps: Family::default(),
            verify_interval: Family::default(),
            verify_last_pass: Family::default(),
            verifications: Family::default(),
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
            schedules: Default::default(),
            registry: Registry::default(),
        };
        registry.register("ready", "1 when the operator is ready to reconcile", m.ready.clone());
        registry.register("leader", "1 while this replica holds the leader-election lease", m.leader.clone());
        registry.register("cluster_members", "etcd members (voters and learners)", m.members.clone());
        registry.register("cluster_desired_members", "spec.size of the EtcdCluster", m.desired_members.clone());
        registry.register(
            "cluster_has_leader",
            "1 when a member answered as the leader in the last pass, else 0",
            m.has_leader.clone(),
        );
        registry.register(
            "cluster_quota_warn_ratio",
            "spec.quota.warnAtPercent as a ratio: the QuotaHigh mark of member_quota_used_ratio",
            m.quota_warn_ratio.clone(),
        );
        registry.register("cluster_alarm", "1 while etcd reports the alarm in the cluster", m.alarms.clone());
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "When a certificate etcd-pilot issued for the cluster expires (Unix time)",
            m.certificate_expiry.clone(),
        );
        registry.register(
            "backup_schedule_interval_seconds",
            "Longest time between two runs of an unsuspended EtcdBackupSchedule",
            m.schedule_interval.clone(),
        );
        registry.register(
            "backup_schedule_last_success_timestamp_seconds",
            "When the newest successful backup of an EtcdBackupSchedule finished, else when it was created (Unix time)",
            m.schedule_last_success.clone(),
        );
        registry.register(
            "stream_lag_seconds",
            "Continuous backup: how far the store is behind the cluster (seconds since everything received was durable)",
            m.stream_lag.clone(),
        );
        registry.register(
            "stream_last_revision",
            "Continuous backup: the last etcd revision written to the store",
            m.stream_revision.clone(),
        );
        registry.register(
            "stream_gaps",
            "Continuous backup: revisions compacted before the stream read them (a new base was taken)",
            m.stream_gaps.clone(),
        );
        registry.register(
            "backup_verification_interval_seconds",
            "Restore drills: the longest time between two drills of an EtcdBackupSchedule (spec.verify)",
            m.verify_interval.clone(),
        );
        registry.register(
            "backup_verification_last_success_timestamp_seconds",
            "Restore drills: when a drill of the schedule last passed, else when the schedule was created (Unix time)",
            m.verify_last_pass.clone(),
        );
        registry.register(
            "backup_verifications",
            "Restore drills finished, by result (passed, failed)",
            m.verifications.clone(),
        );
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
        registry.register(
            "reconcile_errors",
            "Failed reconciles, by controller, step and category",
            m.reconcile_errors.clone(),
        );
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
    pub fn count_error(&self, namespace: &str, cluster: &str, controller: &str, step: &str, category: &str) {
        let l = ErrorLabels {
            namespace: namespace.into(),
            cluster: cluster.into(),
            controller: controller.into(),
            step: step.into(),
            category: category.into(),
        };
        self.reconcile_errors.get_or_create(&l).inc();
    }

    /// Drops every series of a cluster that is gone.
    pub fn forget_cluster(&self, namespace: &str, cluster: &str, members: &[String]) {
        let c = ClusterLabels { namespace: namespace.into(), cluster: cluster.into() };
        for f in [
            &self.members,
            &self.desired_members,
            &self.has_leader,
            &self.healthy_members,
            &self.learners,
            &self.quota_bytes,
        ] {
            f.remove(&c);
        }
        self.quota_warn_ratio.remove(&c);
        self.set_alarms(namespace, cluster, &[]);
        self.set_certificate_expiries(namespace, cluster, &[]);
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

    /// The alarms raised in a cluster now: 1 for each, the series of cleared ones dropped.
    pub fn set_alarms(&self, namespace: &str, cluster: &str, raised: &[String]) {
        for alarm in KNOWN_ALARMS.iter().map(|a| a.to_string()).chain(raised.iter().cloned()) {
            let l = AlarmLabels { namespace: namespace.into(), cluster: cluster.into(), alarm: alarm.clone() };
            if raised.contains(&alarm) {
                self.alarms.get_or_create(&l).set(1);
            } else {
                self.alarms.remove(&l);
            }
        }
    }

    /// The expiry times of a cluster's certificates; those not given are dropped.
    pub fn set_certificate_expiries(&self, namespace: &str, cluster: &str, expiries: &[(&str, i64)]) {
        for certificate in CERTIFICATES {
            let l = CertificateLabels {
                namespace: namespace.into(),
                cluster: cluster.into(),
                certificate: certificate.to_string(),
            };
            match expiries.iter().find(|(c, _)| *c == certificate) {
                Some((_, at)) => {
                    self.certificate_expiry.get_or_create(&l).set(*at);
                }
                None => {
                    self.certificate_expiry.remove(&l);
                }
            }
        }
    }

    /// The series of one schedule: its interval while it runs (unsuspended and valid,
    /// else dropped) and its newest success.
    pub fn set_schedule(
        &self,
        namespace: &str,
        schedule: &str,
        cluster: &str,
        interval: Option<i64>,
        last: Option<i64>,
    ) {
        let l = ScheduleLabels { namespace: namespace.into(), schedule: schedule.into(), cluster: cluster.into() };
        let mut all = self.schedules.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = all.insert((namespace.into(), schedule.into()), l.clone())
            && old != l
        {
            self.schedule_interval.remove(&old);
            self.schedule_last_success.remove(&old);
        }
        match interval {
            Some(i) => {
                self.schedule_interval.get_or_create(&l).set(i);
            }
            None => {
                self.schedule_interval.remove(&l);
            }
        }
        match last {
            Some(t) => {
                self.schedule_last_success.get_or_create(&l).set(t);
            }
            None => {
                self.schedule_last_success.remove(&l);
            }
        }
    }

    /// The series of one schedule's continuous backup: its lag and last revision.
    pub fn set_stream(&self, l: &ScheduleLabels, lag: i64, revision: Option<i64>) {
        self.stream_lag.get_or_create(l).set(lag);
        if let Some(r) = revision {
            self.stream_revision.get_or_create(l).set(r);
        }
    }

    /// Drops a stream's series (streaming turned off, or the schedule gone).
    pub fn forget_stream(&self, l: &ScheduleLabels) {
        self.stream_lag.remove(l);
        self.stream_revision.remove(l);
        self.stream_gaps.remove(l);
    }

    /// The series of one schedule's restore drills: set while it has `spec.verify`
    /// (`Some((interval, last pass))`), dropped when it has none.
    pub fn set_verification(&self, l: &ScheduleLabels, drills: Option<(i64, i64)>) {
        match drills {
            Some((interval, last)) => {
                self.verify_interval.get_or_create(l).set(interval);
                self.verify_last_pass.get_or_create(l).set(last);
            }
            None => {
                self.verify_interval.remove(l);
                self.verify_last_pass.remove(l);
            }
        }
    }

    /// Drops the series of every schedule not in `live` (namespace, name).
    pub fn retain_schedules(&self, live: &[(String, String)]) {
        let mut all = self.schedules.lock().unwrap_or_else(|p| p.into_inner());
        all.retain(|k, l| {
            let keep = live.contains(k);
            if !keep {
                self.schedule_interval.remove(l);
                self.schedule_last_success.remove(l);
                self.forget_stream(l);
                self.set_verification(l, None);
            }
            keep
        });
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

    /// Every metric the chart's alerts, their promtool tests and the dashboard name is one this process
    /// exports, of the type the expression assumes (counters end in `_total`).
    #[test]
    fn the_alert_rules_name_only_metrics_the_operator_exports() {
        // Families render once they have a series: one of each.
        let m = Metrics::default();
        let c = ClusterLabels { namespace: "n".into(), cluster: "c".into() };
        let l = MemberLabels { namespace: "n".into(), cluster: "c".into(), member: "c-0".into() };
        let r = BackupResultLabels { namespace: "n".into(), cluster: "c".into(), result: "failed".into() };
        for f in [&m.members, &m.desired_members, &m.has_leader, &m.healthy_members, &m.learners, &m.quota_bytes] {
            f.get_or_create(&c).set(1);
        }
        for f in [&m.last_backup_timestamp, &m.last_backup_size] {
            f.get_or_create(&c).set(1);
        }
        for f in [&m.leader_changes, &m.backup_uploaded_bytes, &m.compactions, &m.nospace_recoveries] {
            f.get_or_create(&c).inc();
        }
        m.quota_warn_ratio.get_or_create(&c).set(0.8);
        for f in [&m.db_size_bytes, &m.db_size_in_use_bytes, &m.last_defrag_timestamp] {
            f.get_or_create(&l).set(1);
        }
        for f in [&m.quota_used_ratio, &m.fragmentation_ratio, &m.last_defrag_blocked] {
            f.get_or_create(&l).set(0.5);
        }
        m.backups.get_or_create(&r).inc();
        m.defrags.get_or_create(&r).inc();
        m.reconcile_duration.get_or_create(&c).observe(0.1);
        m.backup_duration.get_or_create(&c).observe(1.0);
        m.count_error("n", "c", "cluster", "observe", "kubernetes");
        m.set_alarms("n", "c", &["NOSPACE".to_string()]);
        m.set_certificate_expiries("n", "c", &[("ca", 1)]);
        m.set_schedule("n", "s", "c", Some(60), Some(1));
        let sl = ScheduleLabels { namespace: "n".into(), schedule: "s".into(), cluster: "c".into() };
        m.set_stream(&sl, 3, Some(10));
        m.stream_gaps.get_or_create(&sl).inc();
        m.set_verification(&sl, Some((600, 1)));
        let text = m.render();
        let rules = include_str!("../charts/etcd-pilot/files/prometheus-rules.yaml");
        let tests = include_str!("../monitoring/alerts.test.yaml");
        let dashboard = include_str!("../charts/etcd-pilot/files/dashboard.json");
        let mut seen = 0;
        for source in [rules, tests, dashboard] {
            for (i, _) in source.match_indices("etcdpilot_") {
                let name: String = source[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                let histogram = ["_bucket", "_sum", "_count"].iter().find_map(|s| name.strip_suffix(s));
                let exported = match (name.strip_suffix("_total"), histogram) {
                    (Some(base), _) => text.contains(&format!("# TYPE {base} counter")),
                    (None, Some(base)) => text.contains(&format!("# TYPE {base} histogram")),
                    (None, None) => {
                        text.contains(&format!("# TYPE {name} gauge"))
                            || text.contains(&format!("# TYPE {name} histogram"))
                    }
                };
                assert!(exported, "{name} is not exported as the rules use it:\n{text}");
                seen += 1;
            }
        }
        assert!(seen > 30, "the rules name the operator's metrics ({seen})");
    }

    #[test]
    fn alarm_certificate_and_schedule_series_follow_what_is_true_now() {
        let m = Metrics::default();
        m.set_alarms("prod", "main", &["NOSPACE".to_string()]);
        m.set_certificate_expiries("prod", "main", &[("ca", 2_000_000_000), ("server", 1_900_000_000)]);
        m.set_schedule("prod", "nightly", "main", Some(86400), Some(1_800_000_000));
        let text = m.render();
        for want in [
            "etcdpilot_cluster_alarm{namespace=\"prod\",cluster=\"main\",alarm=\"NOSPACE\"} 1",
            "etcdpilot_certificate_expiry_timestamp_seconds{namespace=\"prod\",cluster=\"main\",certificate=\"ca\"} 2000000000",
            "etcdpilot_backup_schedule_interval_seconds{namespace=\"prod\",schedule=\"nightly\",cluster=\"main\"} 86400",
            "etcdpilot_backup_schedule_last_success_timestamp_seconds{namespace=\"prod\",schedule=\"nightly\",cluster=\"main\"} 1800000000",
        ] {
            assert!(text.contains(want), "{want} not in\n{text}");
        }
        m.set_alarms("prod", "main", &[]);
        m.set_certificate_expiries("prod", "main", &[("ca", 2_000_000_000)]);
        m.set_schedule("prod", "nightly", "main", None, Some(1_800_000_000));
        let text = m.render();
        assert!(!text.contains("alarm=\"NOSPACE\""), "a cleared alarm's series goes: {text}");
        assert!(!text.contains("certificate=\"server\""));
        assert!(!text.contains("etcdpilot_backup_schedule_interval_seconds{"), "suspended: no interval");
        m.retain_schedules(&[]);
        assert!(!m.render().contains("schedule=\"nightly\""), "a deleted schedule's series go");
    }

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
