"""Micro benchmarks of the hot statements (pytest-benchmark), 100 jobs a statement:

  claim            job_claim: lock and lease 100 waiting jobs
  complete batch   job_complete_batch: finish 100 claimed jobs (fenced)
  COPY enqueue     queue.enqueue_many: 100 jobs through COPY in one transaction

A saved baseline lives in reports/baselines/; compare a change against it with

    .venv/bin/python -m pytest tests/reports/test_statements_bench.py \\
        --benchmark-storage=file://reports/baselines --benchmark-compare \\
        --benchmark-compare-fail=mean:50%

and save a new one with --benchmark-save=baseline (same storage). In `make test` they
run as ordinary tests with a few rounds: the numbers print, nothing is compared.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from boundq.core import queue
from tests.helpers import spec

BATCH = 100
ROUNDS = 30


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    running = asyncio.new_event_loop()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def aconn(db_url: str, loop: asyncio.AbstractEventLoop
          ) -> Iterator[psycopg.AsyncConnection[Any]]:
    conn = loop.run_until_complete(psycopg.AsyncConnection.connect(db_url, autocommit=True))
    try:
        yield conn
    finally:
        loop.run_until_complete(conn.close())


def _fill(loop: asyncio.AbstractEventLoop, conn: psycopg.AsyncConnection[Any], n: int) -> None:
    specs = [spec(f"bench-{i}") for i in range(n)]
    loop.run_until_complete(queue.enqueue_many(conn, specs))
    loop.run_until_complete(conn.execute("ANALYZE jobs"))


def test_bench_claim(benchmark: Any, loop: asyncio.AbstractEventLoop,
                     aconn: psycopg.AsyncConnection[Any]) -> None:
    _fill(loop, aconn, BATCH * (ROUNDS + 2))

    def claim() -> int:
        return len(loop.run_until_complete(queue.claim(aconn, "bench", BATCH, 30.0)))

    claimed = benchmark.pedantic(claim, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert claimed == BATCH


def test_bench_complete_batch(benchmark: Any, loop: asyncio.AbstractEventLoop,
                              aconn: psycopg.AsyncConnection[Any]) -> None:
    _fill(loop, aconn, BATCH * (ROUNDS + 2))

    def setup() -> tuple[tuple[list[tuple[int, int]]], dict[str, Any]]:
        rows = loop.run_until_complete(queue.claim(aconn, "bench", BATCH, 30.0))
        return ([(row[0], row[1]) for row in rows],), {}

    def complete(done: list[tuple[int, int]]) -> int:
        return len(loop.run_until_complete(queue.complete_batch(aconn, "bench", done)))

    committed = benchmark.pedantic(complete, setup=setup, rounds=ROUNDS, warmup_rounds=1)
    assert committed == BATCH


def test_bench_copy_enqueue(benchmark: Any, loop: asyncio.AbstractEventLoop,
                            aconn: psycopg.AsyncConnection[Any]) -> None:
    specs = [spec(f"bench-{i}") for i in range(BATCH)]

    def enqueue() -> int:
        return len(loop.run_until_complete(queue.enqueue_many(aconn, specs)))

    created = benchmark.pedantic(enqueue, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    assert created == BATCH
