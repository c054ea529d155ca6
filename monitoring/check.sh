#!/usr/bin/env bash
# `make monitoring`: the chart's alerts, their tests, the dashboard and the monitoring
# objects the chart renders.
set -euo pipefail
cd "$(dirname "$0")/.."
HELM=${HELM:-$HOME/.cache/etcd-pilot/bin/helm}
RULES=charts/etcd-pilot/files/prometheus-rules.yaml
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

promtool check rules "$RULES"
promtool test rules monitoring/alerts.test.yaml
python3 monitoring/dashboard.py --check

# Off by default: none of the monitoring objects render.
"$HELM" template t charts/etcd-pilot > "$tmp/default.yaml"
if grep -qE '^kind: (ServiceMonitor|PrometheusRule)$|grafana_dashboard' "$tmp/default.yaml"; then
  echo "monitoring objects render with the default values" >&2
  exit 1
fi

# On: two ServiceMonitors, the PrometheusRule (whose spec promtool checks again, as
# rendered), the dashboard ConfigMap; the chart lints with them.
set_all=(--set monitoring.serviceMonitor.enabled=true --set monitoring.prometheusRule.enabled=true
  --set monitoring.dashboard.enabled=true --set monitoring.serviceMonitor.labels.release=kps)
"$HELM" lint charts/etcd-pilot "${set_all[@]}" >/dev/null
"$HELM" template t charts/etcd-pilot --namespace ops "${set_all[@]}" > "$tmp/on.yaml"
"$HELM" template t charts/etcd-pilot --namespace ops "${set_all[@]}" --set 'watchNamespaces={prod,dev}' > "$tmp/scoped.yaml"
python3 - "$tmp" <<'PY'
import json, sys, yaml
tmp = sys.argv[1]
docs = [d for d in yaml.safe_load_all(open(f"{tmp}/on.yaml")) if d]
by = lambda kind: [d for d in docs if d["kind"] == kind]
sms = by("ServiceMonitor")
assert len(sms) == 2, [d["metadata"]["name"] for d in sms]
svc = next(d for d in by("Service") if d["metadata"]["name"].endswith("-metrics"))
op = next(s for s in sms if not s["metadata"]["name"].endswith("-members"))
assert op["metadata"]["labels"]["release"] == "kps"
assert op["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items(), "selects the metrics Service"
assert op["spec"]["endpoints"][0]["port"] in [p["name"] for p in svc["spec"]["ports"]]
assert op["spec"]["namespaceSelector"] == {"matchNames": ["ops"]}
members = next(s for s in sms if s["metadata"]["name"].endswith("-members"))
assert members["spec"]["endpoints"][0]["port"] == "metrics"
assert members["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "etcd", "app.kubernetes.io/managed-by": "etcd-pilot"}
assert members["spec"]["namespaceSelector"] == {"any": True}
targets = {r["targetLabel"] for r in members["spec"]["endpoints"][0]["relabelings"]}
assert targets == {"cluster", "member"}, targets
scoped = [d for d in yaml.safe_load_all(open(f"{tmp}/scoped.yaml")) if d and d["kind"] == "ServiceMonitor"]
assert any(s["spec"]["namespaceSelector"] == {"matchNames": ["prod", "dev"]} for s in scoped)
rule, = by("PrometheusRule")
assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["spec"]["groups"]
yaml.safe_dump(rule["spec"], open(f"{tmp}/rendered-rules.yaml", "w"))
cm, = [d for d in by("ConfigMap") if d["metadata"]["name"].endswith("-dashboard")]
assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
dash = json.loads(cm["data"]["etcd-pilot.json"])
assert dash["uid"] == "etcd-pilot" and len(dash["panels"]) >= 10
print(f"monitoring: {len(sms)} ServiceMonitors, {sum(len(g['rules']) for g in rule['spec']['groups'])} alerts, {len(dash['panels'])} dashboard panels")
PY
promtool check rules "$tmp/rendered-rules.yaml"
