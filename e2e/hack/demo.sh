#!/usr/bin/env bash
# The main job: a cluster (the testbed, unless KUBECONFIG already points at one), the
# chart installed, an EtcdCluster applied, and what happens shown.
set -euo pipefail
cd "$(dirname "$0")/../.."
TESTBED=target/release/testbed
TOOLS=${ETCD_PILOT_TOOLS:-${ETCD_PILOT_CACHE:-$HOME/.cache/etcd-pilot}/bin}
export PATH="$TOOLS:$PATH"

# The testbed's own kubeconfig (as the demo tells users to export) is the testbed, not
# a foreign cluster: run again in that shell, the demo must still use the testbed's images.
testbed_kubeconfig="$ETCD_PILOT_TESTBED_DIR/kubeconfig"
if [ -n "${KUBECONFIG:-}" ] && [ "$(realpath -m "$KUBECONFIG")" = "$(realpath -m "$testbed_kubeconfig")" ]; then
  unset KUBECONFIG
fi
if [ -n "${KUBECONFIG:-}" ] && kubectl version >/dev/null 2>&1; then
  echo "demo: using the cluster KUBECONFIG points at ($KUBECONFIG)"
  on_testbed=""
else
  if $TESTBED status --check >/dev/null 2>&1; then
    echo "demo: using the running testbed"
    $TESTBED load-operator target/release/etcd-pilot
  else
    $TESTBED down >/dev/null 2>&1 || true
    $TESTBED up --operator target/release/etcd-pilot --probe target/release/probe
  fi
  export KUBECONFIG="$testbed_kubeconfig"
  on_testbed=1
fi

echo "demo: helm install etcd-pilot (charts/etcd-pilot)"
if [ -n "$on_testbed" ]; then
  # The testbed's nodes have the etcd images under etcd-pilot.local/etcd; the operator
  # image is rebuilt from this tree under the same tag, so a hash of the binary rolls
  # the Deployment when it changed (the e2e installs the same release the same way).
  build=$(sha256sum target/release/etcd-pilot | cut -c1-16)
  set -- --set etcdImageRepository=etcd-pilot.local/etcd --set "podAnnotations.etcdpilot\\.io/build=x$build"
else
  set --
fi
helm upgrade --install etcd-pilot charts/etcd-pilot --namespace etcd-pilot --create-namespace \
  --set image.tag=dev "$@" --wait --timeout 180s
kubectl -n etcd-pilot get deploy,pods -o wide

if [ -n "$on_testbed" ]; then
  # The example's backup target is the testbed's S3 server.
  kubectl -n etcd-pilot-testbed get secret s3-credentials -o json \
    | jq '{apiVersion, kind, type, data, metadata: {name: "etcd-backup-s3", namespace: "default"}}' \
    | kubectl apply -f -
fi
echo "demo: kubectl apply -f examples/etcdcluster.yaml"
kubectl apply -f examples/etcdcluster.yaml
echo "demo: waiting for the cluster to be Available with 3 healthy members"
kubectl -n default wait etcdcluster/main --for=condition=Available --timeout=180s
for _ in $(seq 1 60); do
  [ "$(kubectl -n default get etcdcluster main -o jsonpath='{.status.readyMembers}')" = 3 ] && break
  sleep 2
done
kubectl -n default wait pod -l app.kubernetes.io/instance=main --for=condition=Ready --timeout=60s >/dev/null
kubectl -n default get etcdclusters main
kubectl -n default get pods,pvc,svc -l app.kubernetes.io/instance=main -o wide
echo
echo "demo: the member table:"
kubectl -n default get etcdcluster main \
  -o jsonpath='{range .status.members[*]}{.name}{"\t"}{.id}{"\tleader="}{.leader}{"\thealthy="}{.healthy}{"\t"}{.version}{"\n"}{end}'
echo
echo "demo: bad input is refused by the API server:"
sed 's/^  size: 3$/  size: 4/; s/name: main$/name: main-even/' examples/etcdcluster.yaml | kubectl apply -f - 2>&1 | sed 's/^/  /' || true
echo
echo "demo: what etcd-pilot did (Events):"
kubectl -n default get events --field-selector involvedObject.name=main --sort-by=.metadata.creationTimestamp \
  -o custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message
echo
# etcdctl inside a member, with the member's own certificate (valid for client auth).
member_etcdctl() { # <pod> <etcdctl args...>
  local pod=$1; shift
  kubectl -n default exec "$pod" -c etcd -- /usr/local/bin/etcdctl --endpoints=https://127.0.0.1:2379 \
    --cacert=/etc/etcd/tls/peer/ca.crt --cert=/etc/etcd/tls/peer/tls.crt --key=/etc/etcd/tls/peer/tls.key "$@"
}
wait_phase() { # <kind/name>
  for _ in $(seq 1 120); do
    phase=$(kubectl -n default get "$1" -o jsonpath='{.status.phase}')
    case "$phase" in Succeeded) return 0 ;; Failed) kubectl -n default get "$1" -o yaml; return 1 ;; esac
    sleep 2
  done
  echo "demo: $1 did not finish" >&2; return 1
}
echo "demo: a key written, then kubectl apply -f examples/etcdbackup.yaml"
member_etcdctl main-0 put /demo/greeting "written before the backup" >/dev/null
kubectl apply -f examples/etcdbackup.yaml
wait_phase etcdbackup/main-before-upgrade
kubectl -n default get etcdbackup main-before-upgrade
key=$(kubectl -n default get etcdbackup main-before-upgrade -o jsonpath='{.status.objectKey}')
kubectl -n default get etcdbackup main-before-upgrade \
  -o jsonpath='{"  object:   s3://"}{.status.bucket}{"/"}{.status.objectKey}{"\n  size:     "}{.status.sizeBytes}{" bytes\n  revision: "}{.status.etcdRevision}{" (etcd "}{.status.etcdVersion}{", from "}{.status.member}{")\n  sha256:   "}{.status.sha256}{"\n"}'
if [ -n "$on_testbed" ]; then
  echo "demo: the object on the testbed's S3 server, read from its disk:"
  object="$ETCD_PILOT_TESTBED_DIR/s3/etcd-backups/$key"
  echo "  $(stat -c %s "$object") bytes, sha256 $(sha256sum "$object" | cut -d' ' -f1)"
fi
echo
echo "demo: kubectl apply -f examples/etcdrestore-new-cluster.yaml (a new cluster from that backup)"
kubectl apply -f examples/etcdrestore-new-cluster.yaml
wait_phase etcdrestore/main-restored
kubectl -n default get etcdrestore main-restored \
  -o jsonpath='{range .status.steps[*]}{"  "}{.name}{": "}{.message}{"\n"}{end}{"  revisions start above "}{.status.restoredRevision}{" (snapshot at "}{.status.sourceRevision}{")\n"}'
kubectl -n default wait pod -l app.kubernetes.io/instance=main-restored --for=condition=Ready --timeout=120s >/dev/null
kubectl -n default get etcdclusters
echo "demo: the restored cluster serves the key:"
member_etcdctl main-restored-0 get /demo/greeting -w simple | sed 's/^/  /'
echo
if [ -n "$on_testbed" ]; then
  echo "The testbed stays up: export KUBECONFIG=$KUBECONFIG; make testbed-down when done."
fi
