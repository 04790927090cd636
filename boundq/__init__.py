"""boundq: a bounded, fenced job queue on PostgreSQL.

The public API (everything else is internal and may change):

    from boundq import handler, JobContext, PermanentJobError   # write job handlers
    from boundq import Client                                    # enqueue / get / cancel
    from boundq import Worker, Settings, load_settings           # run workers in-process
    from boundq import create_app                                # the HTTP API (ASGI)

The folders of the source tree map into this package: core/ is boundq.core (the engine),
server/ is boundq.server (the HTTP API), loadtests/ is boundq.loadtests (the flood) and
reports/ is boundq.reports (benchmarks and figures).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from boundq.core.client import Client
    from boundq.core.config import Settings, load_settings
    from boundq.core.handlers import JobContext, PermanentJobError, handler
    from boundq.core.worker import Worker
    from boundq.server.app import create_app

# name -> module; imported on first use, so `import boundq` stays light (no Starlette
# for a worker, no psycopg pool for a handler module).
_EXPORTS = {
    "handler": "boundq.core.handlers",
    "JobContext": "boundq.core.handlers",
    "PermanentJobError": "boundq.core.handlers",
    "Client": "boundq.core.client",
    "Worker": "boundq.core.worker",
    "Settings": "boundq.core.config",
    "load_settings": "boundq.core.config",
    "create_app": "boundq.server.app",
}

__all__ = ["Client", "JobContext", "PermanentJobError", "Settings", "Worker", "create_app",
           "handler", "load_settings"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'boundq' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
