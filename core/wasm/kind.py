"""The built-in `wasm` kind as core/handlers.py registers it.

    registry.register("wasm", run_wasm, validate_payload)   # register_builtins

The handler reads modules through the job's own connection accessor (JobContext.
connection: the worker's pool for handlers). Importing this module loads neither wasmtime
nor the handler: both come with the first wasm job.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from boundq.core.wasm.payload import validate_payload

if TYPE_CHECKING:
    from boundq.core.handlers import JobContext

__all__ = ["run_wasm", "validate_payload"]

_handler: Callable[[JobContext], Awaitable[Any]] | None = None


async def run_wasm(job: JobContext) -> Any:
    """The built-in handler, modules loaded through the job's connections."""
    global _handler
    if _handler is None:
        # Here, not at the top: the handler imports core.handlers, which imports this module.
        from boundq.core.wasm.handler import make_wasm_handler

        _handler = make_wasm_handler()
    return await _handler(job)
