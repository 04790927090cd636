"""The built-in `wasm` kind as core/handlers.py registers it, and the one call by which a
worker gives it database access.

    registry.register("wasm", run_wasm, validate_payload)   # register_builtins
    use_connections(self.pool.connection)                    # Worker.start, before its tasks

Handlers get no connection (JobContext holds none), so a worker hands its pool's
`connection` to the kind through a context variable: the tasks it creates after the call
(its acquirers, and the job tasks they spawn) see that worker's pool, and two workers in
one process each see their own; no registry is changed. Importing this module loads
neither wasmtime nor the handler: both come with the first wasm job.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import psycopg

from boundq.core.wasm.payload import validate_payload

if TYPE_CHECKING:
    from boundq.core.handlers import JobContext

__all__ = ["CONNECT", "Connect", "run_wasm", "use_connections", "validate_payload"]

Connect = Callable[[], contextlib.AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]]

CONNECT: ContextVar[Connect | None] = ContextVar("boundq_wasm_connect", default=None)


def use_connections(connect: Connect) -> None:
    """Called by a worker (with its pool's `connection`) before it creates its tasks."""
    CONNECT.set(connect)


_handler: Callable[[JobContext], Awaitable[Any]] | None = None


async def run_wasm(job: JobContext) -> Any:
    """The built-in handler: the module loaded through the running worker's connections."""
    global _handler
    if _handler is None:
        # Here, not at the top: the handler imports core.handlers, which imports this module.
        from boundq.core.wasm.handler import context_loader, make_wasm_handler

        _handler = make_wasm_handler(context_loader())
    return await _handler(job)
