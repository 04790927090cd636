"""JSON numbers in, JSON numbers out: a job's `args` checked against the export's signature
and its results turned into the job's return value."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

from boundq.core.wasm.errors import BadArguments

# Integers are accepted signed or unsigned (wasm integers carry no sign; the function's
# instructions decide): an i32 takes -2**31 .. 2**32-1 and 2**31.. wraps to negative.
_INT_BITS = {"i32": 32, "i64": 64}


def _int_value(value: Any, bits: int, where: str, wasm_type: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadArguments(f"{where} must be an integer for the {wasm_type} parameter; got "
                           f"{value!r}")
    lo, hi = -(2 ** (bits - 1)), 2**bits - 1
    if not lo <= value <= hi:
        raise BadArguments(f"{where} = {value} is out of the {wasm_type} range {lo} .. {hi}")
    return value - 2**bits if value >= 2 ** (bits - 1) else value


def _float_value(value: Any, where: str, wasm_type: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadArguments(f"{where} must be a number for the {wasm_type} parameter; got "
                           f"{value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise BadArguments(f"{where} must be a finite number")
    if wasm_type == "f32":
        try:
            struct.pack("<f", number)
        except OverflowError:
            raise BadArguments(f"{where} = {value} is out of the f32 range") from None
    return number


def wasm_args(label: str, params: tuple[str, ...], args: Sequence[Any]) -> list[int | float]:
    """The args as the Python values wasmtime converts by the parameter types (ints
    already wrapped to their signed form, numbers for floats made floats). `label` names
    the function in messages ("module 'm' function 'f'")."""
    if len(args) != len(params):
        wanted = ", ".join(params) or "none"
        raise BadArguments(f"{label} takes {len(params)} argument(s) ({wanted}); got "
                           f"{len(args)}")
    values: list[int | float] = []
    for i, (wasm_type, value) in enumerate(zip(params, args, strict=True)):
        where = f"args[{i}]"
        bits = _INT_BITS.get(wasm_type)
        if bits is not None:
            values.append(_int_value(value, bits, where, wasm_type))
        else:
            values.append(_float_value(value, where, wasm_type))
    return values


def _json_number(value: Any) -> Any:
    # JSON has no NaN or infinities: name them rather than fail to store the result.
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def json_result(value: Any, results: tuple[str, ...]) -> Any:
    """None for no results, the number for one, a list for several."""
    if not results:
        return None
    if len(results) == 1:
        return _json_number(value)
    return [_json_number(v) for v in value]
