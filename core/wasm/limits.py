"""The sandbox's limits, with validated defaults. A payload may ask for less fuel or memory
than the maximum, never more (refused at enqueue)."""

from __future__ import annotations

import os
from dataclasses import dataclass

MIB = 1024 * 1024
# One fuel unit is roughly one wasm instruction; a tight loop burns ~4e8 units/s on one
# core here, so the default is a fraction of a second and the maximum tens of seconds.
DEFAULT_FUEL = 100_000_000
MAX_FUEL = 10_000_000_000
DEFAULT_MEMORY_MIB = 64
MAX_MEMORY_MIB = 256


def _default_threads() -> int:
    # wasm calls are CPU-bound: more threads than cores only share the same cores.
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True, slots=True)
class WasmLimits:
    default_fuel: int = DEFAULT_FUEL
    max_fuel: int = MAX_FUEL
    default_memory_mib: int = DEFAULT_MEMORY_MIB
    max_memory_mib: int = MAX_MEMORY_MIB
    # The backstop when fuel alone would allow a long run (host calls, a huge `fuel`):
    # the epoch interrupts a call that ran this long. The job's own timeout cancels the
    # call earlier, through the same interruption.
    wall_seconds: float = 60.0
    threads: int = _default_threads()
    cached_modules: int = 32  # compiled modules kept per thread (LRU by content hash)
    cached_bytes: int = 64 * MIB  # module bytes the handler keeps (LRU by name)

    def __post_init__(self) -> None:
        checks = [
            (1 <= self.default_fuel <= self.max_fuel, "default_fuel must be 1..max_fuel"),
            (self.max_fuel <= 2**63 - 1, "max_fuel must fit in 63 bits"),
            (1 <= self.default_memory_mib <= self.max_memory_mib,
             "default_memory_mib must be 1..max_memory_mib"),
            (self.max_memory_mib <= 4096, "max_memory_mib must be at most 4096 (wasm32)"),
            (0 < self.wall_seconds <= 86_400, "wall_seconds must be in (0, 86400]"),
            (1 <= self.threads <= 256, "threads must be 1..256"),
            (1 <= self.cached_modules <= 10_000, "cached_modules must be 1..10000"),
            (self.cached_bytes >= 0, "cached_bytes must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"WasmLimits: {message}")
