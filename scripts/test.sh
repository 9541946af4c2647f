#!/usr/bin/env bash
# The whole test suite, as .ci/run runs it: setup, type check, lint, then node-tap over every test.
# Needs root: the kernel, CNI and agent tests make real network namespaces.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
npx tsc --noEmit
npx eslint .
# The plugin set in .taprc (tsx instead of ts-node) takes effect only after a build; on a fresh
# clone the first run would otherwise start with the default set.
npx tap build >/dev/null
if [ "$#" -gt 0 ]; then exec npx tap "$@"; fi
npx tap
# The fuzz test runs alone after the others (.taprc excludes it from the parallel run): its bound,
# <= 60 s, holds for the file by itself, not beside another file on a 2-core machine.
npx tap test/integration/hardening-fuzz.test.ts
