#!/usr/bin/env bash
# Usage: hack/debian-etcd.sh <version> <debian package version>
# Puts etcd, etcdctl and etcdutl of that release in $ETCD_PILOT_CACHE/bin/etcd-<version>
# (default ~/.cache/etcd-pilot) and prints the directory. Current etcd 3.5 releases come
# from Debian's trixie and sid binary packages, which run on bookworm as they are. They
# are fetched with a private apt configuration (its own source list, lists and cache in a
# temp dir, the mirror the machine already uses), so nothing on the machine is ever
# installed or upgraded from those suites. Used by the testbed (e2e/hack/install.sh) and
# `make image` (the etcdutl the operator image carries).
set -euo pipefail
version=$1 deb_version=$2
CACHE=${ETCD_PILOT_CACHE:-$HOME/.cache/etcd-pilot}
dest="$CACHE/bin/etcd-$version"
if [ ! -x "$dest/etcdutl" ]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  key=$(awk '/^Signed-By:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  printf 'Types: deb\nURIs: %s\nSuites: trixie sid\nComponents: main\nSigned-By: %s\n' "$uri" "$key" > "$tmp/etcd.sources"
  mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/x"
  opts=(-o "Dir::Etc::SourceList=$tmp/etcd.sources" -o Dir::Etc::SourceParts=/nonexistent
        -o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache" -o APT::Sandbox::User=root)
  apt-get "${opts[@]}" update -qq >&2
  (cd "$tmp" && apt-get "${opts[@]}" download -qq "etcd-server=$deb_version" "etcd-client=$deb_version" >&2)
  for f in "$tmp"/*.deb; do dpkg-deb -x "$f" "$tmp/x"; done
  mkdir -p "$dest"
  cp "$tmp/x/usr/bin/etcd" "$tmp/x/usr/bin/etcdctl" "$tmp/x/usr/bin/etcdutl" "$dest/"
fi
echo "$dest"
