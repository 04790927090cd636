"""A real uvicorn server on a free port, in the test's event loop, talked to over HTTP.

Running in-process keeps the API's pool within reach, so a test can hold every connection
(pool exhaustion) or look at the monitor; everything a client sees still goes over TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn

from boundq.core.config import Settings
from boundq.core.pgembed import EmbeddedPostgres, free_port
from boundq.server.api_process import ApiServer
from boundq.server.app import create_app
from boundq.server.state import ApiOptions, ApiState
from boundq.server.waits import WaitSettings
from tests.conftest import fast_settings, scratch_database

# Tight limits so the bad-input tests finish quickly. Shedding on event-loop lag is off:
# a test's server shares its event loop with the test, and a busy machine delays both
# (test_admission.py turns it on where it is what is tested).
TEST_OPTIONS = ApiOptions(pool_size=4, pool_wait_s=0.5, body_timeout_s=1.0,
                          bulk_body_timeout_s=1.0, depth_refresh_s=0.2, probe_interval_s=0.2,
                          stats_cache_s=0.0, shed_lag_s=3600.0,
                          waits=WaitSettings(max_wait_s=2.0, poll_s=0.05))


@dataclass
class Api:
    base: str
    port: int
    state: ApiState
    client: httpx.AsyncClient
    db_url: str

    async def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        async with await psycopg.AsyncConnection.connect(self.db_url, autocommit=True) as conn:
            cur = await conn.execute(query.encode(), params or None)
            return await cur.fetchall() if cur.description else []

    async def count_jobs(self) -> int:
        return int((await self.sql("SELECT count(*) FROM jobs"))[0][0])


@contextlib.asynccontextmanager
async def running_api(db_url: str, settings: Settings | None = None,
                      options: ApiOptions | None = None) -> AsyncIterator[Api]:
    app = create_app(settings or fast_settings(), db_url, options=options or TEST_OPTIONS)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http="httptools", lifespan="on",
                            log_config=None, access_log=False, timeout_graceful_shutdown=2)
    server = ApiServer(config)
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn exited before it started")
            await asyncio.sleep(0.01)
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            yield Api(base, port, app.state.api, client, db_url)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)


@pytest.fixture
async def api(db_url: str) -> AsyncIterator[Api]:
    async with running_api(db_url) as running:
        yield running


@pytest.fixture(scope="module")
def module_db_url(pg_cluster: EmbeddedPostgres, template_url: str) -> Iterator[str]:
    """One migrated database for a whole module (for tests that write nothing)."""
    with scratch_database(pg_cluster, "m") as url:
        yield url


@pytest.fixture(scope="module")
async def shared_api(module_db_url: str) -> AsyncIterator[Api]:
    """One server for a module whose tests must leave the database empty."""
    async with running_api(module_db_url) as running:
        yield running


async def raw_http(port: int, data: bytes, *, stall_after: int | None = None,
                   read_timeout: float = 10.0) -> tuple[int, bytes]:
    """Send raw bytes and return the response status and body. For what httpx will not
    send: a lying Content-Length, or a body that stalls after `stall_after` bytes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data if stall_after is None else data[:stall_after])
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        async with asyncio.timeout(read_timeout):
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            body = await reader.readexactly(length) if length else b""
        return status, body
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def request_bytes(method: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: test"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body
