"""Enqueue-time validation of a wasm payload: each bad field named, limits enforced."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from boundq.core.errors import JobValidationError
from boundq.core.handlers import JobContext, PermanentJobError, Registry, register_builtins
from boundq.core.wasm.kind import run_wasm
from boundq.core.wasm.limits import DEFAULT_FUEL, DEFAULT_MEMORY_MIB, MAX_FUEL, MAX_MEMORY_MIB
from boundq.core.wasm.payload import validate_payload


def test_a_minimal_payload_takes_the_defaults() -> None:
    call = validate_payload({"module": "math.v1", "function": "add", "args": [1, 2.5]})
    assert (call.module, call.function, call.args) == ("math.v1", "add", (1, 2.5))
    assert (call.fuel, call.memory_mib) == (DEFAULT_FUEL, DEFAULT_MEMORY_MIB)
    full = validate_payload({"module": "m", "function": "f", "fuel": MAX_FUEL,
                             "memory_mib": MAX_MEMORY_MIB})
    assert (full.args, full.fuel, full.memory_mib) == ((), MAX_FUEL, MAX_MEMORY_MIB)


@pytest.mark.parametrize(("payload", "field"), [
    ([], "payload"),
    ("add", "payload"),
    ({"function": "f"}, "payload.module"),
    ({"module": "", "function": "f"}, "payload.module"),
    ({"module": "a/b", "function": "f"}, "payload.module"),
    ({"module": "x" * 101, "function": "f"}, "payload.module"),
    ({"module": 7, "function": "f"}, "payload.module"),
    ({"module": "m"}, "payload.function"),
    ({"module": "m", "function": ""}, "payload.function"),
    ({"module": "m", "function": "f" * 257}, "payload.function"),
    ({"module": "m", "function": "f", "args": 1}, "payload.args"),
    ({"module": "m", "function": "f", "args": [1] * 1001}, "payload.args"),
    ({"module": "m", "function": "f", "args": [1, "2"]}, "payload.args[1]"),
    ({"module": "m", "function": "f", "args": [True]}, "payload.args[0]"),
    ({"module": "m", "function": "f", "args": [None]}, "payload.args[0]"),
    ({"module": "m", "function": "f", "args": [2**64]}, "payload.args[0]"),
    ({"module": "m", "function": "f", "args": [float("inf")]}, "payload.args[0]"),
    ({"module": "m", "function": "f", "fuel": 0}, "payload.fuel"),
    ({"module": "m", "function": "f", "fuel": MAX_FUEL + 1}, "payload.fuel"),
    ({"module": "m", "function": "f", "fuel": 1.5}, "payload.fuel"),
    ({"module": "m", "function": "f", "memory_mib": 0}, "payload.memory_mib"),
    ({"module": "m", "function": "f", "memory_mib": MAX_MEMORY_MIB + 1}, "payload.memory_mib"),
    ({"module": "m", "function": "f", "wasi": True}, "payload.wasi"),
])
def test_a_bad_payload_names_its_field(payload: Any, field: str) -> None:
    with pytest.raises(JobValidationError) as caught:
        validate_payload(payload)
    assert caught.value.field == field, caught.value


def test_an_unknown_key_says_no_grant_exists() -> None:
    with pytest.raises(JobValidationError, match="no imports can be granted"):
        validate_payload({"module": "m", "function": "f", "grants": ["wasi"]})


def test_the_registry_refuses_a_bad_wasm_payload_at_enqueue() -> None:
    registry = Registry()
    register_builtins(registry)
    registry.register("wasm", run_wasm, validate_payload)  # as register_builtins will
    registry.check_payload("wasm", {"module": "m", "function": "f"})
    with pytest.raises(JobValidationError) as caught:
        registry.check_payload("wasm", {"module": "m", "function": "f", "fuel": MAX_FUEL * 2})
    assert caught.value.field == "payload.fuel"


def test_registering_the_kind_does_not_load_wasmtime() -> None:
    """Every boundq process registers the built-in kinds; wasmtime (a large native
    library) must load only where a wasm job runs or a module is uploaded."""
    script = ("import sys\n"
              "from boundq.core.handlers import default_registry\n"
              "from boundq.core.wasm.kind import validate_payload\n"
              "validate_payload({'module': 'm', 'function': 'f'})\n"
              "print('wasmtime' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.strip() == "False"


async def test_a_job_without_connections_fails_its_wasm_job_retryably() -> None:
    job = JobContext(1, 1, "wasm", {"module": "m", "function": "f"}, "o")  # no `connect`
    with pytest.raises(RuntimeError, match="gives its handlers no database connections"
                       ) as caught:
        await run_wasm(job)
    assert not isinstance(caught.value, PermanentJobError)
