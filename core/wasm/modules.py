"""What a WebAssembly module is to boundq: its name, its bytes, and what wasmtime says of them.

Shared by the upload (server/modules.py validates and describes a module before storing
it) and the sandbox (which compiles the same bytes with the same engine configuration), so
a module the API accepted is one the worker can compile.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import wasmtime

MAX_MODULE_BYTES = 10 * 1024 * 1024

# A core module starts with the magic and version 1. wasmtime would also take WAT text
# (it parses anything without the magic as text) and refuses components only with a
# message about "component model"; raw core modules are the contract, so say so first.
_MAGIC = b"\0asm"
_CORE_VERSION = b"\x01\0\0\0"
_VALUE_TYPES = ("i32", "i64", "f32", "f64")


class ModuleRejected(Exception):
    """wasmtime (or the header check before it) refused the bytes; the message says why."""


def engine_config() -> wasmtime.Config:
    """The one configuration of every engine: fuel metering (the CPU limit) and epoch
    interruption (the wall-clock limit and cancellation). A module compiled under another
    configuration could not run in the sandbox, so the upload check uses this one too."""
    config = wasmtime.Config()
    config.consume_fuel = True
    config.epoch_interruption = True
    # Traps by explicit checks rather than by signals (SIGILL for `unreachable`, SIGSEGV
    # for out-of-bounds, SIGFPE for division by zero) caught by wasmtime's process-wide
    # handlers: those are lost when anything installs its own handler after the first
    # engine exists (faulthandler.enable() does), and the next trap kills the process.
    # Somewhat slower memory-heavy code is the price; fuel counts work, not time.
    config.signals_based_traps = False
    # Compile on the calling thread: the sandbox bounds its threads, and wasmtime's own
    # compile pool would spread one upload over every core of the API process.
    config.parallel_compilation = False
    return config


def new_engine() -> wasmtime.Engine:
    return wasmtime.Engine(engine_config())


def wasmtime_reason(exc: Exception) -> str:
    """wasmtime's multi-line error ("... Caused by: ...") as one line."""
    lines = [line.strip() for line in str(exc).splitlines()]
    parts = [line for line in lines if line and line not in ("Caused by:",)
             and not line.startswith(("0:", "wasm backtrace:"))]
    return ": ".join(dict.fromkeys(parts)) or type(exc).__name__


def check_header(wasm: bytes) -> None:
    if len(wasm) < 8 or wasm[:4] != _MAGIC:
        raise ModuleRejected("not a WebAssembly binary: it must start with \\0asm (upload the "
                             "compiled .wasm, not WAT text)")
    if wasm[4:8] != _CORE_VERSION:
        raise ModuleRejected(f"unsupported WebAssembly binary version {wasm[4:8].hex()}: "
                             "only core modules (version 1) run here, not components")


def compile_module(engine: wasmtime.Engine, wasm: bytes) -> wasmtime.Module:
    check_header(wasm)
    try:
        return wasmtime.Module(engine, wasm)
    except wasmtime.WasmtimeError as exc:
        raise ModuleRejected(wasmtime_reason(exc)) from None


def value_type(valtype: wasmtime.ValType) -> str:
    return str(valtype)


def describe_export(export: wasmtime.ExportType) -> dict[str, Any]:
    kind = export.type
    out: dict[str, Any] = {"name": export.name}
    if isinstance(kind, wasmtime.FuncType):
        out.update(kind="func", params=[value_type(p) for p in kind.params],
                   results=[value_type(r) for r in kind.results])
    elif isinstance(kind, wasmtime.MemoryType):
        out.update(kind="memory", min_pages=kind.limits.min, max_pages=kind.limits.max)
    elif isinstance(kind, wasmtime.GlobalType):
        out.update(kind="global", type=value_type(kind.content), mutable=kind.mutable)
    elif isinstance(kind, wasmtime.TableType):
        out.update(kind="table", element=value_type(kind.element), min=kind.limits.min,
                   max=kind.limits.max)
    else:
        out.update(kind="other")
    return out


def import_names(module: wasmtime.Module) -> list[str]:
    return [f"{imp.module}.{imp.name}" for imp in module.imports]


def callable_signature(kind: Any) -> tuple[tuple[str, ...], tuple[str, ...]] | None:
    """(params, results) of a function export a job can call: numbers in and out."""
    if not isinstance(kind, wasmtime.FuncType):
        return None
    params = tuple(value_type(p) for p in kind.params)
    results = tuple(value_type(r) for r in kind.results)
    return params, results


def supported(types: tuple[str, ...]) -> bool:
    return all(t in _VALUE_TYPES for t in types)


@dataclass(frozen=True, slots=True)
class ModuleInfo:
    """What the API stores and lists next to the bytes."""

    sha256: str
    size_bytes: int
    exports: list[dict[str, Any]]
    imports: list[str]


def inspect_module(wasm: bytes, engine: wasmtime.Engine | None = None) -> ModuleInfo:
    """Validate by compiling (what the worker will do) and describe. CPU-bound: call it
    off the event loop. Raises ModuleRejected."""
    if len(wasm) > MAX_MODULE_BYTES:
        raise ModuleRejected(f"the module exceeds {MAX_MODULE_BYTES} bytes")
    module = compile_module(engine or new_engine(), wasm)
    return ModuleInfo(hashlib.sha256(wasm).hexdigest(), len(wasm),
                      [describe_export(e) for e in module.exports], import_names(module))
