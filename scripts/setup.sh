#!/usr/bin/env bash
# Installs what the demo, the tests and the benchmarks need on a fresh Debian 12 machine
# (Node 20, npm and root only): Debian packages when missing, npm dependencies (with the
# install scripts that package.json's allowScripts approves), then the dist/ bundles.
set -euo pipefail
cd "$(dirname "$0")/.."

# One list; add a package here when a test starts to need it.
APT_PACKAGES="iproute2 iputils-ping containernetworking-plugins podman runc busybox-static iperf3 nftables etcd-server protobuf-compiler openssl chromium dpdk-dev librte-net-memif23 ethtool"

missing=""
for p in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "setup: installing Debian packages:$missing" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # With recommends, as tested here (podman recommends slirp4netns, uidmap, fuse-overlayfs, catatonit).
  apt-get install -y -qq $missing >/dev/null
fi

# npm ci when node_modules is missing or older than the lockfile.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm ci" >&2
  npm ci --no-audit --no-fund >/dev/null
fi

node build.mjs
