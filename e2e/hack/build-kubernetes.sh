#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and kube-proxy
# v1.20.2 from Debian bookworm's `kubernetes` source package, plus a static `pause`, once
# per machine (kubectl of the same source comes built, in Debian's kubernetes-client), with two patches: reflect2 for Go >= 1.18, and per-kubelet
# log directories so that several kubelets can share one machine. The result is cached
# outside the repo, keyed by the source version and by this script and its patches, so
# CI and developers build it once.
#
# Prints the directory holding bin/ on its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
SRC_VERSION="1.20.5+really1.20.2-1.1+deb12u1"
CACHE=${ETCD_PILOT_CACHE:-$HOME/.cache/etcd-pilot}
key=$(cat "$0" "$here/patch-reflect2.py" "$here/patch-kubelet-logs.py" | sha256sum | cut -c1-12)
out="$CACHE/kubernetes/${SRC_VERSION//+/_}-$key"
bins=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy pause)

have_all() { for b in "${bins[@]}"; do [ -x "$out/bin/$b" ] || return 1; done; }
if have_all; then echo "$out"; exit 0; fi
# One build at a time per machine; a second caller waits and then finds the result.
mkdir -p "$CACHE"
exec 9>"$CACHE/kubernetes.lock"
flock 9
if have_all; then echo "$out"; exit 0; fi

export DEBIAN_FRONTEND=noninteractive
need=()
for p in golang-go rsync jq dpkg-dev gcc libc6-dev; do
  [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == "install ok installed" ]] || need+=("$p")
done
# apt-get source needs a deb-src entry for the mirror and suites the machine uses.
if ! grep -rqs '^Types: deb-src' /etc/apt/sources.list.d/ && ! grep -qs '^deb-src' /etc/apt/sources.list; then
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    sed 's/^Types: deb$/Types: deb-src/' /etc/apt/sources.list.d/debian.sources > /etc/apt/sources.list.d/etcd-pilot-src.sources
  else
    grep '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' > /etc/apt/sources.list.d/etcd-pilot-src.list
  fi
  apt-get update -qq
fi
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

mkdir -p "$CACHE/src"
if [ ! -f "$CACHE/src/kubernetes_${SRC_VERSION}.dsc" ]; then
  (cd "$CACHE/src" && apt-get source -qq --download-only "kubernetes=$SRC_VERSION")
fi
# A fixed path for the tree: Go's build cache keys on source paths, so a rebuild (new
# patch or script) in the same place reuses most of the first build.
tree="$CACHE/kubernetes/tree"
rm -rf "$tree"
mkdir -p "$out/bin"
dpkg-source -x "$CACHE/src/kubernetes_${SRC_VERSION}.dsc" "$tree" >/dev/null
python3 "$here/patch-reflect2.py" "$tree"
python3 "$here/patch-kubelet-logs.py" "$tree"

# The way debian/rules builds: GOPATH inside the tree, static binaries.
mkdir -p "$tree/.go/src/k8s.io"
ln -sfn "$tree" "$tree/.go/src/k8s.io/kubernetes"
echo "kubernetes: building (about 6 minutes on 2 cores, once per machine)" >&2
(
  cd "$tree/.go/src/k8s.io/kubernetes"
  unset MAKEFLAGS MAKELEVEL MFLAGS
  export GOPATH="$tree/.go" CGO_ENABLED=0 GO111MODULE=off GOFLAGS=-mod=vendor
  export KUBE_GIT_VERSION=v1.20.2 KUBE_GIT_TREE_STATE=clean
  # Not make's status: once seen failing on a fresh tree after every binary was built.
  # The outputs are what count, and they are checked below.
  make WHAT="cmd/kube-apiserver cmd/kube-controller-manager cmd/kube-scheduler cmd/kubelet cmd/kube-proxy" >&2 \
    || echo "kubernetes: make exited non-zero; checking its outputs" >&2
)
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do
  if ! cp "$tree/_output/local/bin/linux/amd64/$b" "$out/bin/$b"; then
    echo "kubernetes: the build did not produce $b" >&2
    exit 1
  fi
done
gcc -Os -static -o "$out/bin/pause" "$tree/build/pause/linux/pause.c"
rm -rf "$tree"
have_all
echo "$out"
