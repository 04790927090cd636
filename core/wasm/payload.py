"""A `wasm` job's payload: `{"module", "function", "args"?, "fuel"?, "memory_mib"?}`,
checked at enqueue (the registry's validator) and again by the handler.

Nothing here loads wasmtime, so registering the kind costs a process nothing until a
`wasm` job runs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from boundq.core.errors import JobValidationError
from boundq.core.wasm.limits import DEFAULT_FUEL, DEFAULT_MEMORY_MIB, WasmLimits

NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,100}")
NAME_RULE = "must be 1..100 characters of A-Z, a-z, 0-9, '_', '.' and '-'"


def valid_name(name: str) -> bool:
    return NAME_RE.fullmatch(name) is not None


@dataclass(frozen=True, slots=True)
class WasmCall:
    """One call: which module (name for messages, sha256 for the cache), which function,
    with what, under which limits."""

    module: str
    sha256: str
    function: str
    args: tuple[Any, ...] = ()
    fuel: int = DEFAULT_FUEL
    memory_mib: int = DEFAULT_MEMORY_MIB


PAYLOAD_KEYS = ("module", "function", "args", "fuel", "memory_mib")
MAX_ARGS = 1000
MAX_FUNCTION_NAME = 256
_INT_LO, _INT_HI = -(2**63), 2**64 - 1  # i64 signed or unsigned; per type at run time

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
