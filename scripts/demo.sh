#!/usr/bin/env bash
# `npm run demo`: installs what it needs, builds dist/, then runs the demo (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec npx tsx scripts/demo.ts
