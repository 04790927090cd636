"""The `wasm` job handler: payload `{"module", "function", "args"?, "fuel"?, "memory_mib"?}`.

    validate_payload(payload)                  # at enqueue: JobValidationError naming the field
    run = make_wasm_handler()                  # modules through each job's connection()
    registry.register("wasm", run, validate_payload)

The handler reads the module through a loader (by default the job's connection accessor,
JobContext.connection), keeps the bytes of recently used modules by name, and asks the database only for
the current sha256 of a module it holds, so an unchanged module costs one small query and
no transfer; a replaced one (PUT again) is picked up by the next job. The function's
results are the handler's return value: null, a number, or a list of numbers.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from boundq.core.errors import JobValidationError
from boundq.core.handlers import Connect, JobContext
from boundq.core.queries import Q
from boundq.core.wasm.errors import BadPayload, ModuleNotFound
from boundq.core.wasm.payload import WasmCall, parse_payload, validate_payload

if TYPE_CHECKING:
    from boundq.core.wasm.sandbox import Sandbox

__all__ = ["ModuleBytes", "ModuleLoader", "connection_loader", "make_wasm_handler",
           "validate_payload"]

# (name, sha256 of the bytes the caller holds or None) -> (current sha256, the bytes, or
# None when the caller's are current). Raises ModuleNotFound.
ModuleLoader = Callable[[str, str | None], Awaitable[tuple[str, bytes | None]]]


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
        # Here, not at the top: wasmtime loads on the first wasm job, not with the kind.
        from boundq.core.wasm.sandbox import Sandbox

        _default_sandbox = Sandbox()
    return _default_sandbox


def make_wasm_handler(load_module: ModuleLoader | None = None, sandbox: Sandbox | None = None
                      ) -> Callable[[JobContext], Awaitable[Any]]:
    """The handler; without a loader, modules come through each job's own connections."""
    held: ModuleBytes | None = None

    async def run_wasm(job: JobContext) -> Any:
        nonlocal held
        box = sandbox or default_sandbox()
        load = load_module or connection_loader(job.connection)
        if held is None:
            held = ModuleBytes(box.limits.cached_modules, box.limits.cached_bytes)
        try:
            call = parse_payload(job.payload, box.limits)
        except JobValidationError as exc:
            raise BadPayload(str(exc)) from None
        cached = held.get(call.module)
        sha256, wasm = await load(call.module, cached[0] if cached else None)
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
