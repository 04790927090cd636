"""The `wasm` kind against real PostgreSQL: the loader, the handler, and a real worker
running wasm jobs next to other jobs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from boundq.core import queue
from boundq.core.handlers import JobContext, PermanentJobError, Registry, register_builtins
from boundq.core.queries import Q
from boundq.core.wasm.errors import ModuleNotFound
from boundq.core.wasm.handler import (
    ModuleBytes,
    ModuleLoader,
    connection_loader,
    default_sandbox,
    make_wasm_handler,
)
from boundq.core.wasm.kind import run_wasm
from boundq.core.wasm.limits import WasmLimits
from boundq.core.wasm.modules import inspect_module
from boundq.core.wasm.sandbox import Sandbox
from boundq.core.worker import Worker
from tests.conftest import fast_settings
from tests.helpers import rows, spec, wait_until
from tests.wasm.wat import ARITH, GREEDY, SPIN, WASI_WRITER, wasm

MUL = """(module (func (export "add") (param i32 i32) (result i32)
  local.get 0 local.get 1 i32.mul))"""


async def upload(conn: psycopg.AsyncConnection[Any], name: str, data: bytes) -> None:
    info = inspect_module(data)
    await conn.execute(Q.job_module_put, {"name": name, "wasm": data, "sha256": info.sha256,
                                          "size_bytes": info.size_bytes,
                                          "exports": Jsonb(info.exports)})


@pytest.fixture
async def pool(db_url: str) -> AsyncIterator[AsyncConnectionPool[Any]]:
    async with AsyncConnectionPool(db_url, min_size=1, max_size=4, open=False,
                                   kwargs={"autocommit": True}) as opened:
        yield opened


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    box = Sandbox(WasmLimits(threads=2))
    yield box
    box.close()


def job(payload: Any) -> JobContext:
    return JobContext(1, 1, "wasm", payload, "test-owner")


async def test_the_handler_fetches_bytes_only_when_the_module_changed(conn, pool, sandbox
                                                                      ) -> None:
    await upload(conn, "math", wasm(ARITH))
    load = connection_loader(pool.connection)
    sent: list[int | None] = []

    async def counting(name: str, known: str | None) -> tuple[str, bytes | None]:
        sha256, data = await load(name, known)
        sent.append(None if data is None else len(data))
        return sha256, data

    loader: ModuleLoader = counting
    run = make_wasm_handler(loader, sandbox)
    payload = {"module": "math", "function": "add", "args": [2, 3]}
    assert await run(job(payload)) == 5
    assert await run(job(payload)) == 5
    assert sent == [len(wasm(ARITH)), None]  # the second job moved no module bytes
    assert sandbox.compiles <= 2  # once per thread at most

    await upload(conn, "math", wasm(MUL))  # replaced: the next job runs the new code
    assert await run(job(payload)) == 6
    assert sent[-1] == len(wasm(MUL))


async def test_a_missing_module_is_a_retryable_failure(pool, sandbox) -> None:
    run = make_wasm_handler(connection_loader(pool.connection), sandbox)
    with pytest.raises(ModuleNotFound, match=r"module 'ghost' is not uploaded") as caught:
        await run(job({"module": "ghost", "function": "f"}))
    assert not isinstance(caught.value, PermanentJobError)


async def test_a_payload_that_skipped_validation_fails_for_good(pool, sandbox) -> None:
    run = make_wasm_handler(connection_loader(pool.connection), sandbox)
    with pytest.raises(PermanentJobError, match=r"payload\.fuel"):
        await run(job({"module": "m", "function": "f", "fuel": -1}))


def test_the_byte_cache_is_bounded_in_entries_and_bytes() -> None:
    held = ModuleBytes(max_entries=2, max_bytes=10)
    held.put("a", "1", b"xxxx")
    held.put("b", "2", b"yyyy")
    held.put("c", "3", b"zzzz")  # over two entries: a goes
    assert held.get("a") is None and len(held) == 2
    held.put("d", "4", b"w" * 8)  # over ten bytes: b and c go
    assert held.get("b") is None and held.get("c") is None and held.get("d") is not None
    held.put("huge", "5", b"h" * 11)  # never held
    assert held.get("huge") is None and held.get("d") is not None


async def test_a_worker_runs_wasm_jobs_and_fails_the_bad_ones_for_good(db_url, conn, pool
                                                                       ) -> None:
    for name, text in [("math", ARITH), ("spin", SPIN), ("greedy", GREEDY),
                       ("wasi", WASI_WRITER)]:
        await upload(conn, name, wasm(text))
    # The built-in kind, as every worker has it: modules come through the job's own
    # connection accessor; the process's default sandbox runs the calls.
    registry = Registry()
    register_builtins(registry)
    assert registry.get("wasm") is not None and registry.get("wasm").run is run_wasm
    interrupted = default_sandbox().interrupted
    jobs = {
        "ok": {"module": "math", "function": "add", "args": [2, 3]},
        "spin": {"module": "spin", "function": "spin", "fuel": 1_000_000},
        # Longer than the 1.5 s lease of these settings on most machines: its heartbeats
        # must go on while it runs, or the reaper takes the job away (a `lost` attempt).
        "long": {"module": "spin", "function": "spin", "fuel": 1_000_000_000},
        "greedy": {"module": "greedy", "function": "grow", "memory_mib": 2},
        "wasi": {"module": "wasi", "function": "hello"},
        "export": {"module": "math", "function": "sub", "args": [1, 2]},
        "trap": {"module": "math", "function": "crash"},
        "missing": {"module": "ghost", "function": "f"},
    }
    ids = {}
    for name, payload in jobs.items():
        row, _ = await queue.enqueue(conn, spec(name, registry, kind="wasm", payload=payload,
                                                max_attempts=2))
        ids[name] = row["id"]
    noops = [(await queue.enqueue(conn, spec(f"noop-{i}", registry)))[0]["id"]
             for i in range(20)]
    worker = Worker(fast_settings(max_concurrent_jobs=4), db_url, registry=registry)
    await worker.start()
    try:
        await wait_until(lambda: _settled(conn), 60, what="every job finished")
        # Then, alone (every sandbox thread free, so its call starts at once rather than
        # wait behind `long` and be cancelled still queued): fuel for tens of seconds, a
        # timeout of two. The timeout must stop the wasm itself (its thread is
        # interrupted), not just stop waiting for it.
        row, _ = await queue.enqueue(conn, spec("timeout", registry, kind="wasm",
                                                max_attempts=1, timeout=2.0, payload={
                                                    "module": "spin", "function": "spin",
                                                    "fuel": 10_000_000_000}))
        ids["timeout"] = row["id"]
        await wait_until(lambda: _settled(conn), 60, what="the timed-out job finished")
    finally:
        await worker.stop()

    found = {r["id"]: r for r in await rows(conn, "SELECT id, status::text, attempts, "
                                                  "last_error FROM jobs")}
    assert all(found[i]["status"] == "success" for i in noops)
    assert found[ids["ok"]]["status"] == "success"
    expected = {
        "spin": "out of fuel after 1000000 units",
        "long": "out of fuel after 1000000000 units",
        "greedy": "memory limit of 2 MiB exceeded",
        "wasi": "imports wasi_snapshot_preview1.fd_write, which this job was not granted",
        "export": "module 'math' has no export 'sub'",
        "trap": "trap: unreachable",
    }
    for name, message in expected.items():
        row = found[ids[name]]
        assert row["status"] == "failed", (name, row)
        assert row["attempts"] == 1, (name, row)  # permanent: no retry
        assert message in row["last_error"], (name, row)
    missing = found[ids["missing"]]
    assert (missing["status"], missing["attempts"]) == ("failed", 2)  # retried
    assert "module 'ghost' is not uploaded" in missing["last_error"]
    timed_out = found[ids["timeout"]]
    assert timed_out["status"] == "failed" and "timed out" in timed_out["last_error"]

    async def thread_interrupted() -> bool:  # counted on the sandbox thread, after the trap
        return default_sandbox().interrupted == interrupted + 1

    await wait_until(thread_interrupted, 30, what="the timed-out call's thread interrupted")
    lost = await rows(conn, "SELECT job_id FROM job_attempts WHERE outcome = 'lost'")
    assert lost == [], lost  # heartbeats went on during the long calls


async def _settled(conn: psycopg.AsyncConnection[Any]) -> bool:
    left = await rows(conn, "SELECT count(*) AS n FROM jobs WHERE finished_at IS NULL")
    return int(left[0]["n"]) == 0
