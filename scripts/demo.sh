#!/usr/bin/env bash
# `npm run demo`: installs what it needs, builds dist/, then runs the demo (needs root). Arguments go to
# the demo (`npm run demo -- --nodes 3`: the multi-node form). node runs it directly, not under the tsx
# CLI: that one SIGKILLs a child that does not answer Ctrl-C within 30 ms (the demo may be in a synchronous
# CNI call then), which would skip the demo's teardown.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node --import tsx scripts/demo.ts "$@"
