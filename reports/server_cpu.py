"""CPU time a local PostgreSQL server spends, read from /proc.

A drain's jobs/s says how fast; CPU per job says at what cost, and it is what decides
who wins once the cores are shared with something else. PostgreSQL's work happens in its
backends, which come and go with connections: the total is the postmaster's own time,
the time of its children already reaped (cutime/cstime), and the time of those still
alive. Read before and after a run, the difference is the run's server CPU, autovacuum
and checkpoints included, whichever queue it was.

Only a server on this machine can be read: for any other, `postmaster_pid` is None and
the drain prints no server figure.
"""

from __future__ import annotations

import os
from pathlib import Path

import psycopg

PROC = Path("/proc")


def stat_tail(text: str) -> list[str]:
    """Fields of a /proc/<pid>/stat line after the command name (which may hold spaces
    and parentheses): [0] is the state, [1] the parent pid, [11..14] utime, stime,
    cutime, cstime in clock ticks."""
    return text[text.rindex(")") + 2:].split()


def _stat_fields(pid: int) -> list[str] | None:
    try:
        return stat_tail((PROC / str(pid) / "stat").read_text())
    except OSError:
        return None


def parse_stat_times(stat_tail: list[str]) -> tuple[int, int, int]:
    """(parent pid, own ticks, reaped children's ticks) from `stat_tail`."""
    own = int(stat_tail[11]) + int(stat_tail[12])
    reaped = int(stat_tail[13]) + int(stat_tail[14])
    return int(stat_tail[1]), own, reaped


def _command(pid: int) -> str:
    try:
        return (PROC / str(pid) / "comm").read_text().strip()
    except OSError:
        return ""


def postmaster_pid(url: str) -> int | None:
    """The server's postmaster, if it runs on this machine: the parent of our backend,
    both of them `postgres` processes (a remote server's pid means nothing here)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        # Read while the connection is open: its backend exits when it closes.
        if row is None or _command(row[0]) != "postgres":
            return None
        fields = _stat_fields(row[0])
    if fields is None:
        return None
    parent = int(fields[1])
    return parent if _command(parent) == "postgres" else None


def server_cpu_seconds(postmaster: int, attempts: int = 20) -> float:
    """CPU seconds of the postmaster and all its children, living or reaped.

    A backend reaped while the children are being listed would be counted nowhere (not
    yet in the postmaster's reaped total when read, gone from /proc by the time the list
    reaches it): read the reaped total before and after the listing, and list again
    until it did not change."""
    ticks = 0
    for _ in range(attempts):
        before = _stat_fields(postmaster)
        if before is None:
            raise RuntimeError(f"PostgreSQL (pid {postmaster}) is gone")
        _, own, reaped = parse_stat_times(before)
        ticks = own + reaped + _living_children_ticks(postmaster)
        after = _stat_fields(postmaster)
        if after is not None and parse_stat_times(after)[2] == reaped:
            break
    return ticks / os.sysconf("SC_CLK_TCK")


def _living_children_ticks(postmaster: int) -> int:
    ticks = 0
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        child = _stat_fields(int(entry.name))
        if child is not None:
            parent, child_own, _ = parse_stat_times(child)
            if parent == postmaster:
                ticks += child_own
    return ticks
