#!/usr/bin/env bash
# Installs, on Debian 12, what building and testing etcd-pilot needs.
# Idempotent: each step is skipped when its result is already there.
set -euo pipefail

need_apt=()
for pkg in protobuf-compiler libprotobuf-dev etcd-server etcd-client pkg-config libssl-dev curl prometheus; do
  [[ $(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null) == "install ok installed" ]] || need_apt+=("$pkg")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "deps: apt-get install ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

# prometheus: only its promtool, which checks and unit-tests the chart's alert rules.
# Debian's etcd-server also installs a service; the tests never use it (they start
# their own members on free ports), so it is left as the machine has it.

echo "deps: ok (protoc $(protoc --version | cut -d' ' -f2), etcd $(etcd --version | awk 'NR==1{print $3}'))"
