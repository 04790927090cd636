"""The sandbox with small WAT modules: results, each limit, each refusal, and that a long
call neither blocks the event loop nor another call."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from boundq.core.handlers import PermanentJobError
from boundq.core.wasm.errors import (
    BadArguments,
    ImportNotGranted,
    MemoryLimitExceeded,
    OutOfFuel,
    UnknownExport,
    WallClockExceeded,
    WasmTrap,
)
from boundq.core.wasm.limits import MAX_FUEL, WasmLimits
from boundq.core.wasm.payload import WasmCall
from boundq.core.wasm.sandbox import Sandbox
from tests.helpers import REPO_ROOT, wait_until
from tests.wasm.wat import ARITH, BIG_MEMORY, GREEDY, SPIN, WASI_WRITER, sha, wasm

MODULES = {name: wasm(text) for name, text in [
    ("arith", ARITH), ("spin", SPIN), ("greedy", GREEDY), ("wasi", WASI_WRITER),
    ("big", BIG_MEMORY)]}


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    box = Sandbox(WasmLimits(threads=2))
    yield box
    box.close()


async def run(box: Sandbox, module: str, function: str, *args: Any, fuel: int = 10_000_000,
              memory_mib: int = 64) -> Any:
    data = MODULES[module]
    return await box.call(WasmCall(module, sha(data), function, args, fuel, memory_mib), data)


@pytest.mark.parametrize(("function", "args", "expected"), [
    ("add", (2, 3), 5),
    ("add", (2**31 - 1, 1), -(2**31)),  # i32 wraps
    ("add", (2**32 - 1, 1), 0),  # unsigned input is taken as its bit pattern
    ("add64", (2**62, 2**62), -(2**63)),
    ("half", (3,), 1.5),
    ("divmod", (7, 2), [3, 1]),
    ("nothing", (), None),
    ("nan", (), "NaN"),
])
async def test_results_become_json(sandbox, function, args, expected) -> None:
    assert await run(sandbox, "arith", function, *args) == expected


async def test_a_loop_forever_runs_out_of_fuel(sandbox) -> None:
    with pytest.raises(OutOfFuel, match=r"^out of fuel after 1000000 units$") as caught:
        await run(sandbox, "spin", "spin", fuel=1_000_000)
    assert isinstance(caught.value, PermanentJobError)


async def test_growing_memory_forever_hits_the_memory_limit(sandbox) -> None:
    # The module ignores memory.grow's -1 and keeps going: it ends out of fuel, with its
    # memory at the limit, and is reported as the memory limit.
    with pytest.raises(MemoryLimitExceeded, match=r"^memory limit of 2 MiB exceeded") as caught:
        await run(sandbox, "greedy", "grow", memory_mib=2)
    assert "out of fuel" in str(caught.value)
    assert isinstance(caught.value, PermanentJobError)
    # An allocator that gives up with a trap when memory.grow fails, at the default limit.
    with pytest.raises(MemoryLimitExceeded, match=r"memory limit of 64 MiB exceeded.*unreachable"):
        await run(sandbox, "greedy", "abort")


async def test_a_module_asking_for_too_much_memory_at_start_is_refused(sandbox) -> None:
    with pytest.raises(MemoryLimitExceeded, match="memory limit of 64 MiB exceeded"):
        await run(sandbox, "big", "f")
    assert await run(sandbox, "big", "f", memory_mib=128) is None


async def test_an_import_not_granted_fails_naming_it(sandbox) -> None:
    with pytest.raises(ImportNotGranted, match=r"imports wasi_snapshot_preview1\.fd_write, "
                                               r"which this job was not granted"):
        await run(sandbox, "wasi", "hello")


async def test_an_unknown_export_lists_the_functions(sandbox) -> None:
    with pytest.raises(UnknownExport, match=r"module 'arith' has no export 'sub' \(exports: "
                                            r"add, add64, crash, divide, divmod, half, nan, "
                                            r"nothing, ref\)"):
        await run(sandbox, "arith", "sub", 1, 2)
    with pytest.raises(UnknownExport, match="'memory' of module 'arith' is a memory, not a "
                                            "function"):
        await run(sandbox, "arith", "memory")
    with pytest.raises(UnknownExport, match=r"function 'ref' has a parameter of type \w*ref: a job passes "):
        await run(sandbox, "arith", "ref", 1)


@pytest.mark.parametrize(("args", "message"), [
    ((1,), r"function 'add' takes 2 argument\(s\) \(i32, i32\); got 1"),
    ((1, 2, 3), r"takes 2 argument\(s\) \(i32, i32\); got 3"),
    ((1.5, 2), r"args\[0\] must be an integer for the i32 parameter; got 1\.5"),
    ((1, True), r"args\[1\] must be an integer"),
    ((2**32, 0), r"args\[0\] = 4294967296 is out of the i32 range"),
    ((-(2**31) - 1, 0), r"out of the i32 range"),
])
async def test_wrong_arguments_are_refused(sandbox, args, message) -> None:
    with pytest.raises(BadArguments, match=message):
        await run(sandbox, "arith", "add", *args)


async def test_float_arguments_are_checked_too(sandbox) -> None:
    with pytest.raises(BadArguments, match=r"args\[0\] must be a number for the f64"):
        await run(sandbox, "arith", "half", "3")
    assert await run(sandbox, "arith", "half", 1) == 0.5  # an integer is a fine f64


async def test_a_trap_names_its_cause(sandbox) -> None:
    with pytest.raises(WasmTrap, match=r"^trap: unreachable"):
        await run(sandbox, "arith", "crash")
    with pytest.raises(WasmTrap, match=r"^trap: integer division by zero"):
        await run(sandbox, "arith", "divide", 1, 0)
    assert await run(sandbox, "arith", "divide", 7, 2) == 3  # the store died, not the module


async def test_the_event_loop_keeps_running_during_a_long_call(sandbox) -> None:
    """A tick task cancels a call that, unstopped, would run for tens of seconds: it can
    only do so while the call runs if the loop is not blocked by it. The cancel also stops
    the wasm itself (the thread is free again long before the fuel would run out)."""
    ticks = 0
    call = asyncio.create_task(run(sandbox, "spin", "spin", fuel=MAX_FUEL))

    async def tick() -> None:
        nonlocal ticks
        while ticks < 5:
            await asyncio.sleep(0.01)
            ticks += 1
        call.cancel()

    ticker = asyncio.create_task(tick())
    with pytest.raises(asyncio.CancelledError):
        await call
    await ticker
    assert ticks == 5
    await wait_until(lambda: _true(sandbox.interrupted == 1), 10, what="the wasm interrupted")


async def _true(value: bool) -> bool:
    return value


async def test_cancelling_one_call_leaves_the_other_running(sandbox) -> None:
    """Each thread has its own engine: interrupting one call must not stop the other."""
    victim = asyncio.create_task(run(sandbox, "spin", "spin", fuel=MAX_FUEL))
    bystander = asyncio.create_task(run(sandbox, "spin", "spin", fuel=200_000_000))
    await asyncio.sleep(0.05)
    victim.cancel()
    with pytest.raises(OutOfFuel):  # not interrupted: it ran to the end of its own fuel
        await bystander
    with pytest.raises(asyncio.CancelledError):
        await victim
    # A short call during a long one completes: a slow module does not hold the others.
    long = asyncio.create_task(run(sandbox, "spin", "spin", fuel=MAX_FUEL))
    assert await run(sandbox, "arith", "add", 1, 1) == 2
    long.cancel()
    with pytest.raises(asyncio.CancelledError):
        await long


async def test_the_wall_clock_backstop_stops_a_call_with_huge_fuel() -> None:
    box = Sandbox(WasmLimits(threads=1, wall_seconds=0.2))
    try:
        with pytest.raises(WallClockExceeded, match=r"wall-clock limit of 0\.2 s exceeded"
                                                    r" after \d+ fuel units") as caught:
            await run(box, "spin", "spin", fuel=MAX_FUEL)
        assert not isinstance(caught.value, PermanentJobError)  # retried like a timeout
        assert await run(box, "arith", "add", 2, 2) == 4  # the next call is not hit
    finally:
        box.close()


async def test_modules_compile_once_per_content_per_thread() -> None:
    box = Sandbox(WasmLimits(threads=1, cached_modules=1))
    try:
        for _ in range(3):
            await run(box, "arith", "add", 1, 2)
        assert box.compiles == 1
        with pytest.raises(OutOfFuel):
            await run(box, "spin", "spin", fuel=10)
        assert box.compiles == 2
        await run(box, "arith", "add", 1, 2)  # evicted by spin (an LRU of one)
        assert box.compiles == 3
    finally:
        box.close()


def test_a_trap_cannot_kill_the_process_whatever_the_signal_handlers() -> None:
    """faulthandler.enable() after the first engine exists replaces wasmtime's signal
    handlers; with signal-based traps the next `unreachable` would end the process with
    SIGILL. In a child process, so that such a crash fails this test and not the run."""
    script = textwrap.dedent("""
        import asyncio, faulthandler
        from boundq.core.wasm.errors import WasmTrap
        from boundq.core.wasm.payload import WasmCall
        from boundq.core.wasm.sandbox import Sandbox
        from tests.wasm.wat import ARITH, sha, wasm

        box = Sandbox()
        data = wasm(ARITH)

        async def main():
            assert await box.call(WasmCall("m", sha(data), "add", (1, 2)), data) == 3
            faulthandler.enable()  # after the sandbox thread made its engine
            for function, args in (("crash", ()), ("divide", (1, 0))):
                try:
                    await box.call(WasmCall("m", sha(data), function, args), data)
                except WasmTrap as exc:
                    print(exc)

        asyncio.run(main())
        box.close()
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, cwd=REPO_ROOT)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    lines = done.stdout.splitlines()
    assert [line.split(" (")[0] for line in lines] == ["trap: unreachable",
                                                        "trap: integer division by zero"]
