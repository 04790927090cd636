"""Run one exported function of a WebAssembly module under limits, off the event loop.

Each call gets a fresh wasmtime Store (nothing survives between calls) with:
- fuel: the CPU limit; running out is a trap (OutOfFuel);
- a memory limit: memory.grow beyond it returns -1 and instantiating a module that asks for
  more at start fails (MemoryLimitExceeded);
- no imports at all: nothing is linked, so a module importing anything (WASI's fd_write,
  a clock, a socket) fails before it runs, naming the import (ImportNotGranted);
- an epoch deadline: the wall-clock backstop and the way a cancelled call is stopped.

Calls run in a bounded pool of threads; wasmtime runs wasm without holding the GIL, so
the event loop (heartbeats, other jobs) keeps running during a long call. Each thread
owns its Engine and its compiled-module cache: an epoch belongs to an engine, so with one
call per engine at a time, bumping that engine's epoch interrupts exactly that call (a
job's timeout or cancellation) and no other. The price is one compile per thread per
module, kept in an LRU keyed by the content hash.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import wasmtime

from boundq.core.wasm import modules, values
from boundq.core.wasm.errors import (
    ImportNotGranted,
    MemoryLimitExceeded,
    ModuleInvalid,
    OutOfFuel,
    SandboxClosed,
    UnknownExport,
    WallClockExceeded,
    WasmTrap,
)
from boundq.core.wasm.limits import MIB, WasmLimits
from boundq.core.wasm.payload import WasmCall


@dataclass(frozen=True, slots=True)
class _Compiled:
    module: wasmtime.Module
    functions: dict[str, tuple[tuple[str, ...], tuple[str, ...]]]
    other_exports: dict[str, str]  # name -> kind, for "is a memory, not a function"
    imports: list[str]


class _Cancelled(Exception):
    """Ends a call whose task was cancelled; its awaiting side already raised."""


class _ThreadSlot:
    """What one sandbox thread owns: its engine and the modules compiled for it."""

    def __init__(self, capacity: int) -> None:
        self.engine = modules.new_engine()
        self.capacity = capacity
        self.compiled: OrderedDict[str, _Compiled] = OrderedDict()


class _Interruption:
    """Stops one running call from another thread by bumping its engine's epoch.

    The lock orders the bump against the call's start and end: a bump lands only while the
    call runs (its store's deadline is one tick after the epoch it started at), so a late
    timer or a cancel after the end cannot hit the thread's next call."""

    __slots__ = ("done", "engine", "lock", "reason", "running", "timer")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.engine: wasmtime.Engine | None = None
        self.running = False
        self.reason: str | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.done = False  # event-loop side only

    def interrupt(self, reason: str) -> None:
        with self.lock:
            if self.reason is None:
                self.reason = reason
            if self.running and self.engine is not None:
                self.engine.increment_epoch()

    def enter(self, engine: wasmtime.Engine, store: wasmtime.Store) -> bool:
        with self.lock:
            if self.reason is not None:
                return False
            self.engine = engine
            store.set_epoch_deadline(1)
            self.running = True
            return True

    def leave(self) -> None:
        with self.lock:
            self.running = False

    def arm(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        """On the event loop: the wall-clock timer, from the moment the call starts."""
        if not self.done:
            self.timer = loop.call_later(seconds, self.interrupt, "wall")

    def finish(self) -> None:
        self.done = True
        if self.timer is not None:
            self.timer.cancel()


class Sandbox:
    """A pool of sandbox threads. `await sandbox.call(call, wasm)` returns the function's
    results as JSON (None, a number, or a list) or raises an error from
    boundq.core.wasm.errors; cancelling the awaiting task stops the wasm at once."""

    def __init__(self, limits: WasmLimits | None = None) -> None:
        self.limits = limits or WasmLimits()
        self._executor = ThreadPoolExecutor(self.limits.threads, thread_name_prefix="boundq-wasm")
        self._local = threading.local()
        self._compiles = itertools.count()
        self._interrupts = itertools.count()
        self.compiles = 0  # modules compiled so far, all threads (tests and the benchmark)
        self.interrupted = 0  # running calls stopped because their task was cancelled
        self._closed = False

    def close(self) -> None:
        """Queued calls are dropped; running ones end with their fuel or wall limit."""
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def call(self, call: WasmCall, wasm: bytes) -> Any:
        if self._closed:
            raise SandboxClosed("the wasm sandbox is closed")
        loop = asyncio.get_running_loop()
        handle = _Interruption()
        try:
            future = loop.run_in_executor(self._executor, self._run, call, wasm, handle, loop)
        except RuntimeError as exc:  # the executor shut down between the check and here
            raise SandboxClosed("the wasm sandbox is closed") from exc
        try:
            return await future
        except asyncio.CancelledError:
            # A job timeout, a lost lease or shutdown: stop the wasm rather than let it
            # burn its thread until the fuel runs out. A call still queued never starts.
            handle.interrupt("cancelled")
            raise
        finally:
            handle.finish()

    # --- on a sandbox thread ----------------------------------------------------------------
    def _slot(self) -> _ThreadSlot:
        slot: _ThreadSlot | None = getattr(self._local, "slot", None)
        if slot is None:
            slot = self._local.slot = _ThreadSlot(self.limits.cached_modules)
        return slot

    def _compiled(self, slot: _ThreadSlot, call: WasmCall, wasm: bytes) -> _Compiled:
        found = slot.compiled.get(call.sha256)
        if found is not None:
            slot.compiled.move_to_end(call.sha256)
            return found
        try:
            module = modules.compile_module(slot.engine, wasm)
        except modules.ModuleRejected as exc:
            raise ModuleInvalid(f"module {call.module!r} does not compile: {exc}") from None
        functions, others = {}, {}
        for export in module.exports:
            signature = modules.callable_signature(export.type)
            if signature is None:
                others[export.name] = modules.describe_export(export)["kind"]
            else:
                functions[export.name] = signature
        compiled = _Compiled(module, functions, others, modules.import_names(module))
        slot.compiled[call.sha256] = compiled
        if len(slot.compiled) > slot.capacity:
            slot.compiled.popitem(last=False)
        self.compiles = next(self._compiles) + 1
        return compiled

    def _run(self, call: WasmCall, wasm: bytes, handle: _Interruption,
             loop: asyncio.AbstractEventLoop) -> Any:
        slot = self._slot()
        compiled = self._compiled(slot, call, wasm)
        params, results = self._signature(compiled, call)
        label = f"module {call.module!r} function {call.function!r}"
        args = values.wasm_args(label, params, call.args)
        store = wasmtime.Store(slot.engine)
        store.set_fuel(call.fuel)
        memory_limit = call.memory_mib * MIB
        store.set_limits(memory_size=memory_limit)
        if not handle.enter(slot.engine, store):
            raise _Cancelled  # cancelled before it began; nobody awaits this
        instance: wasmtime.Instance | None = None
        try:
            loop.call_soon_threadsafe(handle.arm, loop, self.limits.wall_seconds)
            instance = wasmtime.Instance(store, compiled.module, [])
            function = instance.exports(store)[call.function]
            assert isinstance(function, wasmtime.Func)
            result = function(store, *args)
        except wasmtime.Trap as exc:
            raise self._explain_trap(exc, call, store, instance, handle.reason) from None
        except wasmtime.WasmtimeError as exc:  # instantiation refused (memory at start, ...)
            raise self._explain_refusal(exc, call) from None
        finally:
            handle.leave()
        return values.json_result(result, results)

    def _signature(self, compiled: _Compiled, call: WasmCall
                   ) -> tuple[tuple[str, ...], tuple[str, ...]]:
        if compiled.imports:
            first, more = compiled.imports[0], len(compiled.imports) - 1
            also = f" (and {more} more import(s))" if more else ""
            raise ImportNotGranted(
                f"module {call.module!r} imports {first}{also}, which this job was not "
                "granted: wasm jobs get no imports (no WASI, filesystem, network or clock)")
        signature = compiled.functions.get(call.function)
        if signature is None:
            kind = compiled.other_exports.get(call.function)
            if kind is not None:
                raise UnknownExport(f"export {call.function!r} of module {call.module!r} is a "
                                    f"{kind}, not a function")
            names = ", ".join(sorted(compiled.functions)) or "none"
            raise UnknownExport(f"module {call.module!r} has no export {call.function!r} "
                                f"(exports: {names})")
        params, results = signature
        for types, what in ((params, "parameter"), (results, "result")):
            unsupported = [t for t in types if not modules.supported((t,))]
            if unsupported:
                raise UnknownExport(
                    f"module {call.module!r} function {call.function!r} has a {what} of type "
                    f"{unsupported[0]}: a job passes and returns only i32, i64, f32, f64")
        return signature

    def _explain_trap(self, exc: wasmtime.Trap, call: WasmCall, store: wasmtime.Store,
                      instance: wasmtime.Instance | None, reason: str | None) -> Exception:
        code = exc.trap_code
        detail = modules.wasmtime_reason(exc).removeprefix("error while executing at")
        detail = detail.removeprefix(": ").removeprefix("wasm trap: ")
        if code is wasmtime.TrapCode.INTERRUPT:
            if reason == "wall":
                return WallClockExceeded(
                    f"wall-clock limit of {self.limits.wall_seconds:g} s exceeded after "
                    f"{call.fuel - store.get_fuel()} fuel units")
            self.interrupted = next(self._interrupts) + 1
            return _Cancelled()  # nobody awaits it: the task was cancelled
        if code is wasmtime.TrapCode.OUT_OF_FUEL:
            failure = f"out of fuel after {call.fuel} units"
        else:
            name = code.name.lower().replace("_", " ") if code is not None else "error"
            failure = f"trap: {name}" + (f" ({detail})" if detail else "")
        near = self._memory_at_limit(store, instance, call.memory_mib * MIB)
        if near is not None:
            # memory.grow failing does not trap: modules notice the -1 and abort, or spin.
            # A failure with memory at the limit is reported as what it most likely is.
            return MemoryLimitExceeded(
                f"memory limit of {call.memory_mib} MiB exceeded: the module's memory stood "
                f"at {near / MIB:.1f} MiB when it failed ({failure})")
        if code is wasmtime.TrapCode.OUT_OF_FUEL:
            return OutOfFuel(failure)
        return WasmTrap(failure)

    @staticmethod
    def _memory_at_limit(store: wasmtime.Store, instance: wasmtime.Instance | None,
                         limit: int) -> int | None:
        """The size of an exported memory within 1/16 of the limit, if any: the last grow
        of an allocator is usually large, so "no page left" is too strict a test."""
        if instance is None:
            return None
        exports = instance.exports(store)
        for name in exports:
            memory = exports[name]
            if isinstance(memory, wasmtime.Memory):
                size = memory.data_len(store)
                if size > limit - limit // 16:
                    return size
        return None

    @staticmethod
    def _explain_refusal(exc: wasmtime.WasmtimeError, call: WasmCall) -> Exception:
        reason = modules.wasmtime_reason(exc)
        if "exceeds memory limits" in reason:
            return MemoryLimitExceeded(f"memory limit of {call.memory_mib} MiB exceeded: "
                                       f"module {call.module!r} needs more at start ({reason})")
        return ModuleInvalid(f"module {call.module!r} could not be instantiated: {reason}")
