"""The `wasm` job kind: WebAssembly modules run in a wasmtime sandbox with fuel, memory and
wall-clock limits and no imports (see sandbox.py; the API side is server/modules.py)."""

from boundq.core.wasm.errors import (
    BadArguments,
    ImportNotGranted,
    MemoryLimitExceeded,
    ModuleNotFound,
    OutOfFuel,
    UnknownExport,
    WallClockExceeded,
    WasmJobError,
    WasmTrap,
)
from boundq.core.wasm.handler import connection_loader, make_wasm_handler, validate_payload
from boundq.core.wasm.limits import WasmLimits
from boundq.core.wasm.sandbox import Sandbox, WasmCall

__all__ = [
    "BadArguments",
    "ImportNotGranted",
    "MemoryLimitExceeded",
    "ModuleNotFound",
    "OutOfFuel",
    "Sandbox",
    "UnknownExport",
    "WallClockExceeded",
    "WasmCall",
    "WasmJobError",
    "WasmLimits",
    "WasmTrap",
    "connection_loader",
    "make_wasm_handler",
    "validate_payload",
]
