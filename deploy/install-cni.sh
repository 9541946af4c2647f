#!/bin/sh
# Installs the nsm CNI plugins on a node; run by the agent DaemonSet's init container (any POSIX sh).
#
# 1. Copies each binary in NSM_CNI_BINARIES (default "nsm nsm-ipam") from NSM_DIST_DIR (default: ../dist/sea
#    beside this script: the self-contained executables of `npm run build:sea`, which run on hosts without
#    Node.js; NSM_DIST_DIR=../dist copies the JS bundles, which need node on the host, with a warning) into
#    CNI_BIN_DIR (default /host/opt/cni/bin): a copy to a hidden temp file in the
#    target dir, chmod 755, then rename over the old one, so a runtime exec'ing the plugin at that moment sees
#    the old or the new file, never a half-written one (and no ETXTBSY writing into a running binary).
# 2. When NSM_CHAIN_PRIMARY=true, appends NSM_CHAIN_PLUGIN (default {"type":"nsm"}) to the primary conflist
#    in CNI_CONF_DIR (default /host/etc/cni/net.d): the one the runtime loads (cni-conflist.mjs, with node).
#    Idempotent. No conflist yet: a notice and exit 0, or exit 1 with NSM_CHAIN_REQUIRED=true so that
#    Kubernetes restarts the init container until the cluster network has written its conflist.
# Exit status: 0 installed; 1 a source binary is missing, a target dir is not writable, or the conflist is
# invalid (left untouched).
set -eu

here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
dist=${NSM_DIST_DIR:-$here/../dist/sea}
bin_dir=${CNI_BIN_DIR:-/host/opt/cni/bin}
conf_dir=${CNI_CONF_DIR:-/host/etc/cni/net.d}
binaries=${NSM_CNI_BINARIES:-nsm nsm-ipam}

say() { printf 'install-cni: %s\n' "$*" >&2; }

[ -d "$bin_dir" ] || { say "CNI_BIN_DIR $bin_dir is not a directory"; exit 1; }
for b in $binaries; do
	[ -f "$dist/$b" ] || { say "source binary $dist/$b does not exist (NSM_DIST_DIR=$dist; npm run build:sea makes dist/sea)"; exit 1; }
	if dd if="$dist/$b" bs=64 count=1 2>/dev/null | grep -q '^#!.*node'; then
		say "warning: $dist/$b is a node script: it runs only on hosts with node on PATH (use dist/sea)"
	fi
done

for b in $binaries; do
	tmp="$bin_dir/.$b.nsm-install.$$"
	trap 'rm -f "$tmp"' EXIT INT TERM
	cp "$dist/$b" "$tmp"
	chmod 0755 "$tmp"
	mv -f "$tmp" "$bin_dir/$b"
	trap - EXIT INT TERM
	say "installed $bin_dir/$b"
done

case ${NSM_CHAIN_PRIMARY:-false} in
true | 1 | yes) ;;
*) exit 0 ;;
esac
exec node "$here/cni-conflist.mjs" "$conf_dir"
