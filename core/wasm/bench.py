"""What a `wasm` job costs beyond a `noop` one: the handler's own overhead, measured side by
side in one run.

    python -m boundq.core.wasm.bench [--calls 3000] [--repeats 5] [--concurrency 1,8]

Three ways of running "one job's work", each `calls` times with `concurrency` in flight:
- noop: the built-in `noop` handler (an empty coroutine);
- wasm: the `wasm` handler calling add(i32, i32) of a module it has compiled already
  (fresh store and instance per call, on a sandbox thread, result back on the loop), with
  the module bytes served from memory: the database lookup a worker adds per job (one
  small query for the module's hash) is not part of this figure;
- inline: the same store + instantiate + call on the event loop's thread, no hop: what
  the thread costs is wasm minus inline.
Per call: wall time (the median of the repeats) and process CPU time, which is the steadier
figure on a busy machine. Ratios are to noop.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import wasmtime

from boundq.core.handlers import JobContext, default_registry
from boundq.core.wasm.handler import make_wasm_handler
from boundq.core.wasm.limits import MIB, WasmLimits
from boundq.core.wasm.modules import new_engine
from boundq.core.wasm.sandbox import Sandbox

ADD = """(module (func (export "add") (param i32 i32) (result i32)
  local.get 0 local.get 1 i32.add))"""

Run = Callable[[JobContext], Awaitable[Any]]


def _inline_runner() -> Run:
    engine = new_engine()
    module = wasmtime.Module(engine, bytes(wasmtime.wat2wasm(ADD)))

    async def inline(job: JobContext) -> Any:
        store = wasmtime.Store(engine)
        store.set_fuel(1_000_000)
        store.set_limits(memory_size=64 * MIB)
        store.set_epoch_deadline(1)
        add = wasmtime.Instance(store, module, []).exports(store)["add"]
        assert isinstance(add, wasmtime.Func)
        return add(store, 2, 3)

    return inline


async def _measure(run: Run, payload: Any, calls: int, concurrency: int) -> tuple[float, float]:
    """Seconds of wall and of process CPU per call."""
    job = JobContext(1, 1, "bench", payload, "bench")
    per_task = calls // concurrency

    async def worker() -> None:
        for _ in range(per_task):
            await run(job)

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    done = per_task * concurrency
    return (time.perf_counter() - wall) / done, (time.process_time() - cpu) / done


async def bench(calls: int, repeats: int, concurrencies: list[int]) -> list[dict[str, Any]]:
    wasm = bytes(wasmtime.wat2wasm(ADD))
    digest = hashlib.sha256(wasm).hexdigest()

    async def load(name: str, known: str | None) -> tuple[str, bytes | None]:
        return digest, (None if known == digest else wasm)

    sandbox = Sandbox(WasmLimits())
    noop = default_registry.get("noop")
    assert noop is not None
    runs: dict[str, tuple[Run, Any]] = {
        "noop": (noop.run, {}),
        "wasm": (make_wasm_handler(load, sandbox),
                 {"module": "bench", "function": "add", "args": [2, 3]}),
        "inline": (_inline_runner(), None),
    }
    results = []
    try:
        for concurrency in concurrencies:
            for run, payload in runs.values():  # warm up: compile, threads, caches
                await _measure(run, payload, min(calls, 200), concurrency)
            samples: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
            for _ in range(repeats):
                for name, (run, payload) in runs.items():  # interleaved: same noise for all
                    samples[name].append(await _measure(run, payload, calls, concurrency))
            for name, values in samples.items():
                results.append({"kind": name, "concurrency": concurrency,
                                "wall_us": statistics.median(v[0] for v in values) * 1e6,
                                "cpu_us": statistics.median(v[1] for v in values) * 1e6})
    finally:
        sandbox.close()
    return results


def _report(results: list[dict[str, Any]]) -> str:
    lines = [f"{'kind':<8}{'in flight':>10}{'wall us/call':>14}{'cpu us/call':>13}"
             f"{'wall x noop':>13}{'cpu x noop':>12}"]
    base = {r["concurrency"]: r for r in results if r["kind"] == "noop"}
    for r in results:
        b = base[r["concurrency"]]
        lines.append(f"{r['kind']:<8}{r['concurrency']:>10}{r['wall_us']:>14.1f}"
                     f"{r['cpu_us']:>13.1f}{r['wall_us'] / b['wall_us']:>13.0f}"
                     f"{r['cpu_us'] / b['cpu_us']:>12.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m boundq.core.wasm.bench",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=3000, help="calls per measurement")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per kind")
    parser.add_argument("--concurrency", default="1,8",
                        help="calls in flight at once, comma-separated (default 1,8)")
    args = parser.parse_args(argv)
    try:
        concurrencies = [int(c) for c in args.concurrency.split(",") if c.strip()]
    except ValueError:
        parser.error("--concurrency: comma-separated integers, e.g. 1,8")
    if args.calls < 1 or args.repeats < 1 or not concurrencies or min(concurrencies) < 1:
        parser.error("--calls, --repeats and each --concurrency must be at least 1")
    print(f"{args.repeats} x {args.calls} calls per kind, in flight {concurrencies}; "
          f"{WasmLimits().threads} sandbox threads", file=sys.stderr)
    print(_report(asyncio.run(bench(args.calls, args.repeats, concurrencies))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
