"""Which CPUs the API process of `boundq serve` may run on (API_CPUS).

Why the API is confined, not only niced (API_NICE): the pace of the workers is a chain of
wake-ups (a job's timer, the claim statement reaching its PostgreSQL session, the commit's
WAL flush, the answer reaching the worker). Measured on a 2-core machine: while both CPUs
were busy, even with tasks of the lowest priority (nice 19, or SCHED_IDLE), a statement
that takes 2.4 ms on an idle machine took 4.0 ms, and a flood cut the workers' pace to
0.8x whatever the priorities. Priority decides who gets the larger share, not how soon a
waking task gets a CPU. So under a flood the API must leave a CPU idle: confined to all
CPUs but the first ("auto"), it never takes the one the workers and PostgreSQL wake up on.

Values: "auto" (all CPUs this process may use but the lowest-numbered; nothing changes
with only one), "all" (no confinement, the default), or a list such as "1" or "2-3,6".
`make run` and `make flood` use "auto". It is not the default yet: on a machine as small
as two CPUs it halves the API's CPU, and every test that floods the API ran with "all".
"""

from __future__ import annotations

import os

AUTO = "auto"
ALL = "all"


def parse_cpu_list(text: str) -> str:
    """API_CPUS checked for its form: "auto", "all" or a CPU list ("1", "2-3,6"),
    returned in a normal form."""
    value = text.strip().lower()
    if value in (AUTO, ALL):
        return value
    return ",".join(str(cpu) for cpu in sorted(expand(value)))


def expand(text: str) -> frozenset[int]:
    cpus: set[int] = set()
    for part in text.split(","):
        low, sep, high = part.strip().partition("-")
        if not low.isdigit() or (sep and not high.isdigit()):
            raise ValueError('must be "auto", "all" or a CPU list such as 1 or 2-3,6')
        first, last = int(low), int(high) if sep else int(low)
        if first > last:
            raise ValueError(f"the range {first}-{last} runs backwards")
        cpus.update(range(first, last + 1))
    return frozenset(cpus)


def api_cpus(value: str, available: frozenset[int] | None = None) -> frozenset[int] | None:
    """The CPUs the API process is confined to, or None for no confinement. `available`:
    the CPUs this process may use (default: its own affinity)."""
    usable = frozenset(os.sched_getaffinity(0)) if available is None else available
    if value == ALL or (value == AUTO and len(usable) < 2):
        return None
    if value == AUTO:
        return usable - {min(usable)}
    wanted = expand(value)
    missing = wanted - usable
    if missing:
        raise ValueError(f"API_CPUS names CPU {', '.join(map(str, sorted(missing)))}, which "
                         f"this process may not use (it may use {describe(usable)})")
    return wanted


def describe(cpus: frozenset[int]) -> str:
    return ",".join(str(cpu) for cpu in sorted(cpus))


def named(cpus: frozenset[int] | None) -> str:
    """For a log line: "CPU 1", "CPUs 2,3", or "all CPUs" (None)."""
    if cpus is None:
        return "all CPUs"
    return f"CPU{'s' if len(cpus) > 1 else ''} {describe(cpus)}"


def confine(cpus: frozenset[int] | None) -> None:
    """In a child before exec: run only on these CPUs (None: leave as inherited)."""
    if cpus is not None:
        os.sched_setaffinity(0, cpus)
