"""The job kinds a drain's backlog can hold (`python -m boundq.reports.drain --kinds
noop,wasm`), and the ratio of each to `noop` drained beside it in the same round.

  noop  the built-in empty handler: what the queue itself costs per job
  wasm  add(2, 3) of a small module (WAT, compiled with wasmtime.wat2wasm), stored under
        the name `bench-add` by the statement PUT /modules runs (after the same
        inspection), before the fill: each job is one fresh store and instance, the
        call on a sandbox thread, and the worker's lookup of the module's hash

The ratio wasm / noop of a round is taken between drains of the same size at the same
MAX_CONCURRENT_JOBS, one after the other: jobs/s (timed by the database, first claim to
last finish) and CPU per job (the worker's process tree plus PostgreSQL's, when local).
"""

from __future__ import annotations

import json
import statistics
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from boundq.core.queries import Q
from boundq.reports.drain_summary import cpu_us_per_job

KINDS = ("noop", "wasm")
MODULE_NAME = "bench-add"
WASM_PAYLOAD = {"module": MODULE_NAME, "function": "add", "args": [2, 3]}

Result = dict[str, Any]


def store_module(url: str) -> str:
    """The add module, inspected and saved as PUT /modules does; returns its sha256."""
    import wasmtime  # loaded only by a wasm drain

    from boundq.core.wasm.bench import ADD
    from boundq.core.wasm.modules import inspect_module

    wasm = bytes(wasmtime.wat2wasm(ADD))
    info = inspect_module(wasm)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(Q.job_module_put, {"name": MODULE_NAME, "wasm": wasm,
                                        "sha256": info.sha256, "size_bytes": info.size_bytes,
                                        "exports": Jsonb(info.exports)})
    return info.sha256


def payload_text(kind: str) -> str:
    """The payload column of a backlog row of `kind` (COPY text)."""
    return json.dumps(WASM_PAYLOAD) if kind == "wasm" else "{}"


def label_of(level: int, kind: str) -> str:
    return f"boundq MAX_CONCURRENT_JOBS={level}" + ("" if kind == "noop" else f" kind={kind}")


def kind_ratios(results: list[Result]) -> dict[str, tuple[float, float]]:
    """Of one round: "<kind> / noop MAX_CONCURRENT_JOBS=c" -> (jobs/s ratio, CPU per job
    ratio), for each kind drained beside noop at the same level."""
    noop = {r["concurrency"]: r for r in results
            if r["mode"] == "boundq" and r.get("kind", "noop") == "noop"
            and not r.get("delayed") and r.get("flow", "none") == "none"}
    out: dict[str, tuple[float, float]] = {}
    for r in results:
        base = noop.get(r["concurrency"])
        if r.get("kind", "noop") == "noop" or base is None or not base["jobs_per_s"]:
            continue
        cpu, base_cpu = (sum(v or 0.0 for v in cpu_us_per_job(x)) for x in (r, base))
        out[f"{r['kind']} / noop MAX_CONCURRENT_JOBS={r['concurrency']}"] = (
            r["jobs_per_s"] / base["jobs_per_s"], cpu / base_cpu if base_cpu else float("nan"))
    return out


def print_kind_ratios(results: list[Result]) -> None:
    for name, (rate, cpu) in kind_ratios(results).items():
        print(f"  ratio {name:<40} jobs/s {rate:5.2f}x   CPU/job {cpu:5.2f}x", flush=True)


def summarize_kinds(results: list[Result]) -> None:
    """The median over the rounds of each round's ratios."""
    by_name: dict[str, list[tuple[float, float]]] = {}
    for round_no in sorted({r["round"] for r in results}):
        for name, pair in kind_ratios([r for r in results if r["round"] == round_no]).items():
            by_name.setdefault(name, []).append(pair)
    for name, pairs in by_name.items():
        rates, cpus = [p[0] for p in pairs], [p[1] for p in pairs]
        print(f"  {name:<40} jobs/s median {statistics.median(rates):5.2f}x, CPU/job median "
              f"{statistics.median(cpus):5.2f}x   rounds "
              f"{', '.join(f'{a:.2f}/{b:.2f}' for a, b in pairs)}", flush=True)
