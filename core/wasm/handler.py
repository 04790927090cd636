"""The `wasm` job kind: payload `{"module", "function", "args"?, "fuel"?, "memory_mib"?}`.

    validate_payload(payload)                  # at enqueue: JobValidationError naming the field
    run = make_wasm_handler(connection_loader(pool.connection))
    registry.register("wasm", run, validate_payload)

The handler reads the module through a loader (the worker's own connections: handlers get
no pool), keeps the bytes of recently used modules by name, and asks the database only for
the current sha256 of a module it holds, so an unchanged module costs one small query and
no transfer; a replaced one (PUT again) is picked up by the next job. The function's
results are the handler's return value: null, a number, or a list of numbers.
"""

from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import psycopg

from boundq.core.errors import JobValidationError
from boundq.core.handlers import JobContext
from boundq.core.queries import Q
from boundq.core.wasm.errors import BadPayload, ModuleNotFound
from boundq.core.wasm.limits import WasmLimits
from boundq.core.wasm.modules import NAME_RULE, valid_name
from boundq.core.wasm.sandbox import Sandbox, WasmCall

PAYLOAD_KEYS = ("module", "function", "args", "fuel", "memory_mib")
MAX_ARGS = 1000
MAX_FUNCTION_NAME = 256
_INT_LO, _INT_HI = -(2**63), 2**64 - 1  # i64 signed or unsigned; per type at run time

# (name, sha256 of the bytes the caller holds or None) -> (current sha256, the bytes, or
# None when the caller's are current). Raises ModuleNotFound.
ModuleLoader = Callable[[str, str | None], Awaitable[tuple[str, bytes | None]]]
Connect = Callable[[], contextlib.AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]]


def _fail(field: str, message: str) -> JobValidationError:
    return JobValidationError(f"payload.{field}" if field else "payload", message)


def _bounded_int(payload: Mapping[str, Any], key: str, lo: int, hi: int, default: int) -> int:
    value = payload.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _fail(key, f"must be an integer between {lo} and {hi}")
    return value


def _args(value: Any) -> tuple[Any, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _fail("args", "must be a list of numbers (the function's parameters)")
    if len(value) > MAX_ARGS:
        raise _fail("args", f"must have at most {MAX_ARGS} items")
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int | float):
            raise _fail(f"args[{i}]", "must be a number")
        if isinstance(item, int) and not _INT_LO <= item <= _INT_HI:
            raise _fail(f"args[{i}]", f"must be between {_INT_LO} and {_INT_HI}")
        if isinstance(item, float) and not math.isfinite(item):
            raise _fail(f"args[{i}]", "must be a finite number")
    return tuple(value)


def parse_payload(payload: Any, limits: WasmLimits) -> WasmCall:
    """The call a payload asks for (sha256 left empty: the loader knows it)."""
    if not isinstance(payload, Mapping):
        raise _fail("", "must be a JSON object with module and function")
    for key in payload:
        if key not in PAYLOAD_KEYS:
            raise _fail(str(key), f"unknown key; a wasm payload has {', '.join(PAYLOAD_KEYS)} "
                                  "(no imports can be granted: no WASI, files, network or clock)")
    module = payload.get("module")
    if not isinstance(module, str) or not valid_name(module):
        raise _fail("module", f"{NAME_RULE} (the name given to PUT /modules/{{name}})")
    function = payload.get("function")
    if not isinstance(function, str) or not 1 <= len(function) <= MAX_FUNCTION_NAME:
        raise _fail("function", f"must be the name of an exported function, 1..{MAX_FUNCTION_NAME} "
                                "characters")
    return WasmCall(
        module=module, sha256="", function=function, args=_args(payload.get("args")),
        fuel=_bounded_int(payload, "fuel", 1, limits.max_fuel, limits.default_fuel),
        memory_mib=_bounded_int(payload, "memory_mib", 1, limits.max_memory_mib,
                                limits.default_memory_mib))


_DEFAULT_LIMITS = WasmLimits()


def validate_payload(payload: Any) -> WasmCall:
    """The registry's validator for kind `wasm` (raises JobValidationError)."""
    return parse_payload(payload, _DEFAULT_LIMITS)


class ModuleBytes:
    """Recently used modules' bytes by name, bounded in count and in total size."""

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self._size = 0

    def get(self, name: str) -> tuple[str, bytes] | None:
        found = self._entries.get(name)
        if found is not None:
            self._entries.move_to_end(name)
        return found

    def put(self, name: str, sha256: str, wasm: bytes) -> None:
        self.drop(name)
        if len(wasm) > self.max_bytes:
            return
        self._entries[name] = (sha256, wasm)
        self._size += len(wasm)
        while len(self._entries) > self.max_entries or self._size > self.max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self._size -= len(evicted)

    def drop(self, name: str) -> None:
        old = self._entries.pop(name, None)
        if old is not None:
            self._size -= len(old[1])

    def __len__(self) -> int:
        return len(self._entries)


def connection_loader(connect: Connect) -> ModuleLoader:
    """A loader over connections from `connect()` (e.g. a pool's `connection`)."""

    async def load(name: str, known_sha256: str | None) -> tuple[str, bytes | None]:
        async with connect() as conn:
            cur = await conn.execute(Q.job_module_load, {"name": name,
                                                         "known_sha256": known_sha256})
            row = await cur.fetchone()
        if row is None:
            raise ModuleNotFound(f"module {name!r} is not uploaded (PUT /modules/{name})")
        return str(row[0]), (bytes(row[1]) if row[1] is not None else None)

    return load


_default_sandbox: Sandbox | None = None


def default_sandbox() -> Sandbox:
    """One sandbox per process, created on first use (after any fork)."""
    global _default_sandbox
    if _default_sandbox is None:
        _default_sandbox = Sandbox()
    return _default_sandbox


def make_wasm_handler(load_module: ModuleLoader, sandbox: Sandbox | None = None
                      ) -> Callable[[JobContext], Awaitable[Any]]:
    held: ModuleBytes | None = None

    async def run_wasm(job: JobContext) -> Any:
        nonlocal held
        box = sandbox or default_sandbox()
        if held is None:
            held = ModuleBytes(box.limits.cached_modules, box.limits.cached_bytes)
        try:
            call = parse_payload(job.payload, box.limits)
        except JobValidationError as exc:
            raise BadPayload(str(exc)) from None
        cached = held.get(call.module)
        sha256, wasm = await load_module(call.module, cached[0] if cached else None)
        if wasm is not None:
            held.put(call.module, sha256, wasm)
        elif cached is not None and cached[0] == sha256:
            wasm = cached[1]
        else:
            raise RuntimeError(f"the module loader sent no bytes for {call.module!r} at "
                               f"{sha256}, which this worker does not hold")
        return await box.call(WasmCall(call.module, sha256, call.function, call.args, call.fuel,
                                       call.memory_mib), wasm)

    return run_wasm
