#!/usr/bin/env bash
# Runs every benchmark under bench/ (each writes its own section of BENCHMARKS.md). Needs root.
# Not part of `npm test`. Run one with: npx tsx bench/<name>.ts
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
for b in bench/*.ts; do
  # bench/agent.ts runs the table section after its own (BENCH_ONLY=agent|table selects one).
  [ "$b" = bench/agent-table.ts ] && continue
  echo "== $b" >&2
  npx tsx "$b"
done
