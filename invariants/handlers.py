"""Job kinds for the fault tests, loaded by workers with `--handlers invariants.handlers`.

- `effect` is re-registered so an effect job can take time ({ms}: awaited sleep) and stall
  its event loop on chosen attempts ({stall_ms, stall_attempts}): faults then land while an
  effect job is in flight. Its effect row is still written only by the fenced completion
  (job_complete_batch in core/sql/queries.sql); this handler writes nothing.
- `stall` {ms}: blocks the event loop with time.sleep (heartbeats stop: the pgqueuer #323
  class). Every attempt stalls; long stalls end in the dead-letter set.
- `poison` {times}: SIGKILLs its own worker process while attempt <= times (default: every
  attempt), the job that kills every worker that takes it.
- `echo` is re-registered so it can take time ({ms}: awaited sleep) before the built-in
  echo returns `value` and creates `then`: faults then land while a chaining job is in
  flight. Its follow-up is still written only by the fenced completion.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Mapping
from typing import Any

from boundq.core.errors import JobValidationError
from boundq.core.handlers import JobContext, default_registry


def _ms(payload: Any, key: str, hi: int = 60_000) -> int:
    value = payload.get(key, 0) if isinstance(payload, Mapping) else 0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= hi:
        raise JobValidationError(f"payload.{key}", f"must be an integer between 0 and {hi}")
    return value


def _validate(payload: Any) -> None:
    if not isinstance(payload, Mapping):
        raise JobValidationError("payload", "must be a JSON object")
    for key in ("ms", "stall_ms"):
        _ms(payload, key)


async def effect(job: JobContext) -> None:
    stall_on = job.payload.get("stall_attempts", 0)
    if job.attempt <= stall_on:
        time.sleep(_ms(job.payload, "stall_ms") / 1000)  # noqa: ASYNC251 - the stall
    await asyncio.sleep(_ms(job.payload, "ms") / 1000)


async def stall(job: JobContext) -> None:
    time.sleep(_ms(job.payload, "ms") / 1000)  # noqa: ASYNC251 - blocking on purpose


async def poison(job: JobContext) -> None:
    if job.attempt <= int(job.payload.get("times", 1000)):
        os.kill(os.getpid(), signal.SIGKILL)


default_registry.register("effect", effect, _validate)
default_registry.register("stall", stall, _validate)
default_registry.register("poison", poison, _validate)

_builtin_echo = default_registry.get("echo")
assert _builtin_echo is not None and _builtin_echo.validate is not None
_validate_builtin_echo = _builtin_echo.validate
_run_builtin_echo = _builtin_echo.run


def _validate_echo(payload: Any) -> None:
    _validate_builtin_echo(payload)
    _ms(payload, "ms")


async def echo(job: JobContext) -> Any:
    await asyncio.sleep(_ms(job.payload, "ms") / 1000)
    return await _run_builtin_echo(job)


default_registry.register("echo", echo, _validate_echo)
