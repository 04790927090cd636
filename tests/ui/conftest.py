"""The dashboard under test: a real server (tests/api's `running_api`), real workers, real
PostgreSQL, and a real headless Chromium driven by Playwright.

The browser is the machine's Chromium, Debian's `chromium` package, obtained the way the
suite's other browser test obtains it (tests/loadtests/browser.py: `ensure_chromium`,
which `make test` runs first); never one Playwright downloads. Where it cannot be had
the browser tests fail, saying why: a dashboard that was never opened in a browser is
not tested.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from playwright.async_api import Browser, Page, async_playwright

from boundq.core.config import Settings
from boundq.core.worker import Worker
from tests.api.conftest import Api, running_api
from tests.conftest import fast_settings
from tests.helpers import wait_until
from tests.loadtests.browser import ensure_chromium

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync"]
DEADLINE_S = 20  # database conditions and page elements: generous on a busy machine
PAGE_TIMEOUT_MS = 15_000


def chromium_path() -> str:
    path = ensure_chromium()
    if path is None:
        reason = os.environ.get("CHROMIUM_SKIP_REASON", "it cannot be installed")
        pytest.fail(f"no Chromium for the dashboard's browser tests ({reason}): install "
                    "Debian's package (apt-get install chromium, or `make browser` as root)",
                    pytrace=False)
    return path


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    path = chromium_path()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS,
                                                    headless=True)
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class Dashboard:
    api: Api
    page: Page

    async def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        return await self.api.sql(query, *params)

    async def scalar(self, query: str, *params: Any) -> Any:
        return (await self.sql(query, *params))[0][0]

    async def open(self, path: str) -> None:
        response = await self.page.goto(self.api.base + path)
        assert response is not None

    async def until(self, check: Callable[[], Any], what: str) -> Any:
        return await wait_until(check, DEADLINE_S, interval=0.05, what=what)

    async def status_is(self, job_id: int, *statuses: str) -> None:
        async def check() -> bool:
            found = await self.scalar("SELECT status::text FROM jobs WHERE id = %s", job_id)
            return found in statuses

        await self.until(check, f"job {job_id} {'/'.join(statuses)}")


@contextlib.asynccontextmanager
async def dashboard(browser: Browser, db_url: str, settings: Settings | None = None
                    ) -> AsyncIterator[Dashboard]:
    async with running_api(db_url, settings) as api:
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(PAGE_TIMEOUT_MS)
        try:
            yield Dashboard(api, await context.new_page())
        finally:
            await context.close()


@contextlib.asynccontextmanager
async def worker(db_url: str, **settings: Any) -> AsyncIterator[Worker]:
    running = Worker(fast_settings(**settings), db_url)
    await running.start()
    try:
        yield running
    finally:
        await running.stop(grace_s=1)


async def enqueue(db_url: str, n: int = 1, **fields: Any) -> list[int]:
    """Jobs through the real enqueue path (so the tallies count what happens to them)."""
    from tests.helpers import add_jobs

    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        return await add_jobs(conn, n, **fields)
