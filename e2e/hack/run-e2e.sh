#!/usr/bin/env bash
# Runs the end-to-end tests (or, with `bench`, the lifecycle benchmarks) on the testbed.
# A healthy running testbed is reused (with the operator image rebuilt from this tree);
# otherwise one is brought up for the run and taken down afterwards, also on failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
mode=${1:-test}
TESTBED=target/release/testbed
started=""
cleanup() {
  if [ -n "$started" ]; then $TESTBED down || true; fi
}
trap cleanup EXIT
if [ "$mode" = test ]; then
  # Refusals first: they need no testbed and never disturb one.
  cargo test --locked -p etcd-pilot-e2e --test refusals
fi
if $TESTBED status --check >/dev/null 2>&1; then
  echo "e2e: reusing the running testbed at $ETCD_PILOT_TESTBED_DIR"
else
  $TESTBED down >/dev/null 2>&1 || true
  started=1
  $TESTBED up --operator target/release/etcd-pilot --probe target/release/probe
fi
# The operator runs from the image `make image` wrote (the Makefile's e2e target builds
# it with the testbed's tag), imported into every node as it is.
$TESTBED load-operator target/image/etcd-pilot.tar
if [ "$mode" = bench ]; then
  cargo bench --locked -p etcd-pilot-e2e --bench lifecycle > target/bench-lifecycle.md
  cargo bench --locked -p etcd-pilot-e2e --bench restore > target/bench-restore.md
  cargo bench --locked -p etcd-pilot-e2e --bench maintenance > target/bench-maintenance.md
  cargo bench --locked -p etcd-pilot-e2e --bench continuous > target/bench-continuous.md
  exit 0
fi
# The README's install section (a registry, the image pushed, `helm install` as written)
# beside the smoke tests: none of them uses a cluster-wide operator, and it puts the
# testbed's release back when it is done.
cargo test --locked -p etcd-pilot-e2e --test install --test smoke --no-run
mkdir -p target
cargo test --locked -p etcd-pilot-e2e --test install -- --nocapture > target/e2e-install.log 2>&1 &
install_pid=$!
smoke_rc=0
cargo test --locked -p etcd-pilot-e2e --test smoke -- --test-threads=3 || smoke_rc=$?
install_rc=0
wait "$install_pid" || install_rc=$?
cat target/e2e-install.log
if [ "$smoke_rc" != 0 ] || [ "$install_rc" != 0 ]; then
  echo "e2e: smoke exited $smoke_rc, install exited $install_rc" >&2
  exit 1
fi
# helm upgrade with older CRDs installed, alone: it changes the CRDs every test shares.
cargo test --locked -p etcd-pilot-e2e --test upgrade -- --nocapture
# After the smoke tests, whose own operator install is gone by then: one operator at a
# time acts on the testbed's clusters.
cargo test --locked -p etcd-pilot-e2e --test lifecycle -- --test-threads="${E2E_THREADS:-2}" --nocapture
# The faults, each in its own namespace, three at a time on the same operator; beside
# them the placement tests (members no node can take), in their own namespaces.
cargo test --locked -p etcd-pilot-e2e --test placement --no-run
cargo test --locked -p etcd-pilot-e2e --test placement -- --test-threads=2 --nocapture > target/e2e-placement.log 2>&1 &
placement_pid=$!
faults_rc=0
cargo test --locked -p etcd-pilot-e2e --test faults -- --test-threads="${E2E_FAULT_THREADS:-3}" --nocapture || faults_rc=$?
placement_rc=0
wait "$placement_pid" || placement_rc=$?
cat target/e2e-placement.log
if [ "$faults_rc" != 0 ] || [ "$placement_rc" != 0 ]; then
  echo "e2e: faults exited $faults_rc, placement exited $placement_rc" >&2
  exit 1
fi
# Backups and restores, against the testbed's S3 server, all at once; beside them
# encryption at rest, and restore drills and second copies, each in its own namespace.
cargo test --locked -p etcd-pilot-e2e --test encryption --test drills --no-run
cargo test --locked -p etcd-pilot-e2e --test encryption -- --nocapture > target/e2e-encryption.log 2>&1 &
encryption_pid=$!
cargo test --locked -p etcd-pilot-e2e --test drills -- --test-threads=2 --nocapture > target/e2e-drills.log 2>&1 &
drills_pid=$!
backups_rc=0
cargo test --locked -p etcd-pilot-e2e --test backups -- --test-threads="${E2E_BACKUP_THREADS:-5}" --nocapture || backups_rc=$?
encryption_rc=0
wait "$encryption_pid" || encryption_rc=$?
drills_rc=0
wait "$drills_pid" || drills_rc=$?
cat target/e2e-encryption.log target/e2e-drills.log
if [ "$backups_rc" != 0 ] || [ "$encryption_rc" != 0 ] || [ "$drills_rc" != 0 ]; then
  echo "e2e: backups exited $backups_rc, encryption exited $encryption_rc, drills exited $drills_rc" >&2
  exit 1
fi
# Maintenance (defragmentation, NOSPACE, compaction, paused), all at once.
cargo test --locked -p etcd-pilot-e2e --test maintenance -- --test-threads=4 --nocapture
# kube-apiserver wiring: a hosted kube-apiserver (the testbed's build) on the published
# Secret; beside it the continuous backup and restores to a point, each in its own
# namespace (one of them kills the leading operator replica: the wiring tests only wait
# for Secrets, which the standby publishes as well).
# The test that kills the leading replica runs after the other two: their metrics (and
# a gap's counter) live in the leader's memory.
cargo test --locked -p etcd-pilot-e2e --test continuous --no-run
(cargo test --locked -p etcd-pilot-e2e --test continuous -- --test-threads=2 --nocapture --skip across_a_handover &&
  cargo test --locked -p etcd-pilot-e2e --test continuous -- --nocapture across_a_handover) > target/e2e-continuous.log 2>&1 &
continuous_pid=$!
wiring_rc=0
cargo test --locked -p etcd-pilot-e2e --test wiring -- --test-threads=2 --nocapture || wiring_rc=$?
continuous_rc=0
wait "$continuous_pid" || continuous_rc=$?
cat target/e2e-continuous.log
if [ "$wiring_rc" != 0 ] || [ "$continuous_rc" != 0 ]; then
  echo "e2e: wiring exited $wiring_rc, continuous exited $continuous_rc" >&2
  exit 1
fi
# A lost node, last and alone: a worker stopped for good would disturb other tests'
# clusters; the test starts it again at its end.
cargo test --locked -p etcd-pilot-e2e --test lost_node -- --nocapture
# The testbed's own kube-apiserver on a Stacked cluster for its Events, last and alone:
# it restarts the API every test uses (and puts it back as it was).
cargo test --locked -p etcd-pilot-e2e --test control_plane -- --nocapture
