#!/usr/bin/env bash
# Run a command beside CPU hogs (one per core by default, HOGS=N to choose): a busy
# machine, on purpose, so a test that depends on timing fails here first instead of in CI.
set -euo pipefail
hogs=${HOGS:-$(nproc 2>/dev/null || echo 2)}
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM
for _ in $(seq "$hogs"); do
  ( while :; do :; done ) &
  pids+=($!)
done
echo "with $hogs CPU hogs: $*" >&2
"$@"
