#!/usr/bin/env bash
# The whole test suite, as .ci/run runs it: setup, type check, lint, then node-tap over every test.
# Needs root: the kernel, CNI and agent tests make real network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# What a killed earlier run of the fuzz test may have left under /var/run/netns (a file, a directory and a
# FIFO named t<run>f[fdo]<n>, never namespaces): iproute2 opens every entry there to name a link's peer
# netns, and its open(2) of a FIFO waits for a writer, so `ip link show` would hang in the tests below.
for p in /var/run/netns/t[0-9a-f][0-9a-f][0-9a-f][0-9a-f]f[fdo][0-9]*; do
  if [ -e "$p" ] && ! mountpoint -q "$p"; then rm -rf -- "$p"; echo "removed $p, left by an earlier run"; fi
done
npx tsc --noEmit
npx eslint .
# The plugin set in .taprc (tsx instead of ts-node) takes effect only after a build; on a fresh
# clone the first run would otherwise start with the default set.
npx tap build >/dev/null
# On a failure, the failed assertions again at the end of the output (CI shows only the output's tail), read
# from the per-file results node-tap keeps under .tap/test-results (only those this run wrote).
stamp=$(mktemp)
trap 'rm -f "$stamp"' EXIT
failed() {
  echo "=== failed: the 'not ok' lines of each file that had one, with what followed them ==="
  find .tap/test-results -type f -newer "$stamp" -exec grep -lE '^[[:space:]]*not ok' {} + | while read -r f; do
    echo "--- ${f#.tap/test-results/}"
    grep -nE -A 30 '^[[:space:]]*not ok' "$f" | head -150
  done
  return 1
}
if [ "$#" -gt 0 ]; then npx tap "$@" || failed; exit; fi
npx tap || failed
# These run alone after the others, one file at a time (.taprc excludes them from the parallel run): the
# fuzz test's bound, <= 60 s, holds for the file by itself, not beside another file on a 2-core machine;
# the memif tests run DPDK testpmd processes that each busy-poll a CPU while they forward.
npx tap --jobs 1 test/integration/hardening-fuzz.test.ts test/integration/memif-forwarder-pairs.test.ts test/integration/memif-forwarder-recovery.test.ts test/integration/memif.test.ts || failed
