"""Why a `wasm` job failed. The message is what `last_error` shows, so it names the module,
the limit or the import involved.

Failures that a retry cannot change (the module ran out of fuel or memory, trapped, has no
such export, was called with wrong arguments, or imports something it was not granted)
are PermanentJobError: the job is dead-lettered at once. A module that is not uploaded
(yet) and the wall-clock backstop are ordinary failures, retried with backoff like any.
"""

from __future__ import annotations

from boundq.core.handlers import PermanentJobError


class WasmJobError(PermanentJobError):
    """A deterministic failure of the module or of the call: retrying cannot help."""


class OutOfFuel(WasmJobError):
    pass


class MemoryLimitExceeded(WasmJobError):
    pass


class WasmTrap(WasmJobError):
    pass


class UnknownExport(WasmJobError):
    pass


class BadArguments(WasmJobError):
    pass


class BadPayload(WasmJobError):
    """A payload that reached the worker without the enqueue-time validation (say, by SQL)."""


class ImportNotGranted(WasmJobError):
    pass


class ModuleInvalid(WasmJobError):
    """Stored bytes that this worker's wasmtime refuses to compile."""


class ModuleNotFound(Exception):
    """No module of that name: retried, since the upload may still come."""


class WallClockExceeded(Exception):
    """The epoch backstop fired: the call ran longer than the wall-clock limit. Retried
    like a timeout (a busy machine may finish the same fuel in time later)."""


class SandboxClosed(Exception):
    """The sandbox was closed while the call waited for a thread."""
