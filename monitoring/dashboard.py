#!/usr/bin/env python3
"""Writes charts/etcd-pilot/files/dashboard.json, the Grafana dashboard of etcd-pilot's
metrics (`python3 monitoring/dashboard.py`; `make monitoring` checks the file is current).
One row of panels per question an on-call person asks about a cluster."""
import json, pathlib, sys

SEL = 'namespace="$namespace", cluster="$cluster"'


def panel(i, title, targets, unit="short", kind="timeseries", w=12, h=8, desc=""):
    x, y = (i % 2) * 12 if w == 12 else 0, (i // 2) * 8
    return {
        "id": i + 1, "type": kind, "title": title, "description": desc,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [{"refId": chr(65 + n), "expr": e, "legendFormat": l} for n, (e, l) in enumerate(targets)],
    }


panels = [
    panel(0, "Members", [
        (f"max(etcdpilot_cluster_desired_members{{{SEL}}})", "spec.size"),
        (f"max(etcdpilot_cluster_healthy_members{{{SEL}}})", "healthy voters"),
        (f"max(etcdpilot_cluster_learners{{{SEL}}})", "learners"),
    ], desc="Healthy voting members against spec.size; learners while a member is added."),
    panel(1, "Leader", [
        (f"max(etcdpilot_cluster_has_leader{{{SEL}}})", "has leader"),
        (f"sum(increase(etcdpilot_cluster_leader_changes_total{{{SEL}}}[1h]))", "leader changes / 1h"),
    ], desc="1 while a member answers as the leader; elections in the last hour."),
    panel(2, "Database size against the quota", [
        (f"max by (member) (etcdpilot_member_db_size_bytes{{{SEL}}})", "{{member}} db file"),
        (f"max by (member) (etcdpilot_member_db_size_in_use_bytes{{{SEL}}})", "{{member}} in use"),
        (f"max(etcdpilot_cluster_quota_backend_bytes{{{SEL}}})", "quota (NOSPACE)"),
        (f"max(etcdpilot_cluster_quota_backend_bytes{{{SEL}}}) * max(etcdpilot_cluster_quota_warn_ratio{{{SEL}}})", "QuotaHigh mark"),
    ], unit="bytes", desc="Each member's db file and the part in use; etcd refuses writes at the quota."),
    panel(3, "Fragmentation", [
        (f"max by (member) (etcdpilot_member_fragmentation_ratio{{{SEL}}})", "{{member}}"),
    ], unit="percentunit", desc="Free share of each db file, reclaimed by defragmentation."),
    panel(4, "Alarms", [
        (f"max by (alarm) (etcdpilot_cluster_alarm{{{SEL}}})", "{{alarm}}"),
    ], desc="1 while etcd reports the alarm (NOSPACE: writes refused; CORRUPT: members disagree)."),
    panel(5, "Maintenance", [
        (f"max by (member) (etcdpilot_member_last_defrag_blocked_seconds{{{SEL}}})", "{{member}} blocked by last defrag"),
        (f"sum by (result) (increase(etcdpilot_defrags_total{{{SEL}}}[1h]))", "defrags {{result}} / 1h"),
        (f"sum(increase(etcdpilot_compactions_total{{{SEL}}}[1h]))", "compactions / 1h"),
    ], desc="How long the last defragmentation blocked each member; defragmentations and compactions."),
    panel(6, "Backups", [
        (f"time() - max(etcdpilot_last_successful_backup_timestamp_seconds{{{SEL}}})", "age of the newest successful backup"),
        (f"max by (schedule) (etcdpilot_backup_schedule_interval_seconds{{{SEL}}})", "{{schedule}} interval"),
    ], unit="s", desc="Age of the newest successful backup against each schedule's interval."),
    panel(7, "Backup results and size", [
        (f"sum by (result) (increase(etcdpilot_backups_total{{{SEL}}}[6h]))", "{{result}} / 6h"),
        (f"max(etcdpilot_last_successful_backup_size_bytes{{{SEL}}})", "newest backup size (bytes)"),
    ], desc="Backups by result; the newest successful backup's size."),
    panel(8, "Reconcile latency", [
        (f"histogram_quantile(0.5, sum by (le) (rate(etcdpilot_reconcile_duration_seconds_bucket{{{SEL}}}[5m])))", "p50"),
        (f"histogram_quantile(0.99, sum by (le) (rate(etcdpilot_reconcile_duration_seconds_bucket{{{SEL}}}[5m])))", "p99"),
    ], unit="s", desc="Duration of one pass of the cluster controller."),
    panel(9, "Reconcile errors", [
        (f"sum by (controller, step) (rate(etcdpilot_reconcile_errors_total{{{SEL}}}[5m]))", "{{controller}} {{step}}"),
    ], unit="ops", desc="Failed passes per second, by controller and the step that failed."),
    panel(10, "Certificates: time to expiry", [
        (f"min by (certificate) (etcdpilot_certificate_expiry_timestamp_seconds{{{SEL}}}) - time()", "{{certificate}}"),
    ], unit="s", desc="etcd-pilot renews spec.tls.renewBeforeDays before expiry."),
]


def var(name, query):
    return {
        "name": name, "label": name, "type": "query",
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": name}, "definition": query, "refresh": 2, "sort": 1,
    }


dashboard = {
    "uid": "etcd-pilot", "title": "etcd-pilot: EtcdCluster", "tags": ["etcd", "etcd-pilot"],
    "schemaVersion": 39, "version": 1, "editable": True, "timezone": "browser",
    "time": {"from": "now-6h", "to": "now"}, "refresh": "30s",
    "templating": {"list": [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus"},
        var("namespace", "label_values(etcdpilot_cluster_members, namespace)"),
        var("cluster", 'label_values(etcdpilot_cluster_members{namespace="$namespace"}, cluster)'),
    ]},
    "panels": panels,
}

out = pathlib.Path(__file__).resolve().parent.parent / "charts/etcd-pilot/files/dashboard.json"
text = json.dumps(dashboard, indent=2) + "\n"
if sys.argv[1:] == ["--check"]:
    if out.read_text() != text:
        sys.exit(f"{out} is not what monitoring/dashboard.py writes: run python3 monitoring/dashboard.py")
else:
    out.write_text(text)
