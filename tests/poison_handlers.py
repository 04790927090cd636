"""Handlers for the worker-process tests, loaded by the worker under test with
`boundq worker --handlers tests.poison_handlers` (never imported by pytest itself)."""

from __future__ import annotations

import os
import signal

from boundq.core.handlers import JobContext, handler


@handler("poison")
async def poison(job: JobContext) -> None:
    """Kills the worker process that runs it, every time."""
    os.kill(os.getpid(), signal.SIGKILL)
