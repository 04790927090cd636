from __future__ import annotations

import asyncio

from boundq.core import queue
from boundq.core.handlers import default_registry
from boundq.core.validation import validate_job
from boundq.core.worker import Worker
from tests.conftest import fast_settings


async def test_worker_drains_backlog(db_url: str, conn) -> None:
    settings = fast_settings()
    specs = [validate_job({"name": f"j{i}"}, default_registry, settings) for i in range(200)]
    await queue.enqueue_many(conn, specs)
    worker = Worker(settings, db_url)
    await worker.start()
    try:
        for _ in range(200):
            counts = await queue.count_by_status(conn)
            if counts["success"] == 200:
                break
            await asyncio.sleep(0.05)
    finally:
        await worker.stop()
    assert counts["success"] == 200
    assert worker.permits.high_water <= settings.max_concurrent_jobs
