"""What every benchmark, flood and report run states about itself: machine, versions,
PostgreSQL durability settings.

No host names and no paths: a run folder may be shared or committed as an example.
"""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import psycopg

PACKAGES = ("boundq", "psycopg", "psycopg-pool", "uvicorn", "starlette", "msgspec", "uvloop",
            "locust", "pgqueuer", "asyncpg", "procrastinate", "matplotlib", "pandas")

# Settings that decide what a commit costs and how much memory PostgreSQL may use.
DURABILITY = ("fsync", "synchronous_commit", "full_page_writes", "wal_level",
              "shared_buffers", "max_connections", "server_version")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return round(pages / 2**30, 1)
    except (OSError, ValueError):
        return None


def machine() -> dict[str, Any]:
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {"cores": os.cpu_count(), "cpu": _cpu_model(), "memory_gib": _memory_gib(),
            "system": f"{platform.system()} {platform.release()}", "arch": platform.machine(),
            "load_average_at_start": [round(x, 2) for x in load]}


def postgres(url: str) -> dict[str, str]:
    """The server's version and the settings that decide what a commit costs."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)", (list(DURABILITY),)
        ).fetchall()
    return {name: setting for name, setting in rows}


def run_metadata(url: str) -> dict[str, Any]:
    return {"started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine(), "versions": versions(), "postgres": postgres(url)}


def timestamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
