#!/usr/bin/env bash
# The suite as `make test` runs it. Most of its time is waiting (on killed workers,
# restarted PostgreSQL, floods that run for seconds), not CPU, so it runs in parallel:
# invariants/ (the Hypothesis state machine) as one pytest process, and tests/ as three
# pytest-xdist workers that each take whole files (--dist loadfile: a module's fixtures,
# such as the installed wheel, are made once). Three on two cores, because tests/ spends
# much of its time waiting on leases, outages and signals: alone on two quiet cores,
# tests/ took 238 s with three workers against 294 s with two. Each process has its own
# throwaway cluster. The invariants' output is kept and printed whole after tests/ finish, so the
# two never interleave. Exit status: non-zero when either failed.
# Usage: scripts/run-suite.sh PYTHON [pytest options for both]
set -uo pipefail
py="$1"; shift
log="$(mktemp -t boundq-invariants.XXXXXX)"
"$py" -m pytest invariants -q "$@" >"$log" 2>&1 &
inv=$!
trap 'kill -TERM "$inv" 2>/dev/null; wait "$inv"; rm -f "$log"; exit 130' INT TERM
echo "invariants/ runs beside tests/ (its output follows when tests/ are done)"
"$py" -m pytest tests -q -n "${TEST_PROCESSES:-3}" --dist loadfile "$@"
tests_rc=$?
if kill -0 "$inv" 2>/dev/null; then echo "waiting for invariants/ ..."; fi
wait "$inv"
inv_rc=$?
echo "================================ invariants/ ================================"
cat "$log"
rm -f "$log"
echo "tests/: exit $tests_rc; invariants/: exit $inv_rc"
[ "$tests_rc" -eq 0 ] && [ "$inv_rc" -eq 0 ]
