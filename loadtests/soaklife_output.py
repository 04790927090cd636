"""What a soak-life run writes as it goes: the interval CSV (one row per interval, flushed
at once, so a run cut short keeps what it measured), the progress line of each interval,
run.json, and the end-of-run accounting read from the database."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import IO, Any, TextIO

import psycopg

from boundq.loadtests.soaklife_machine import MACHINE_COLUMNS
from boundq.loadtests.soaklife_sample import SAMPLE_COLUMNS

FRONT_COLUMNS = ("interval", "phase", "retention", "t_start_s", "t_end_s", "offered",
                 "offered_per_s", "event")
COLUMNS = (*FRONT_COLUMNS, *SAMPLE_COLUMNS, *MACHINE_COLUMNS)
CSV_NAME = "intervals.csv"


class IntervalCsv:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[str] = open(path, "w", newline="", encoding="utf-8")  # noqa: SIM115
        self._writer = csv.DictWriter(self._handle, fieldnames=list(COLUMNS))
        self._writer.writeheader()
        self.rows: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        self._writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in COLUMNS})
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def read_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / CSV_NAME, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _mb(value: Any) -> str:
    return f"{(value or 0) / 2**20:,.0f}"


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _waits(row: dict[str, Any]) -> str:
    cpu, io = row.get("machine_cpu_wait_pct"), row.get("machine_io_wait_pct")
    stall = row.get("machine_io_stall_max_ms")
    if cpu is None or io is None:
        return ""
    worst = "" if stall is None else f", worst second's I/O stall {stall:.0f} ms"
    return f" (waiting for CPU {cpu:.0f}%, I/O {io:.0f}%{worst})"


def progress_line(row: dict[str, Any], total: int) -> str:
    p50, p99 = row.get("pickup_p50_ms"), row.get("pickup_p99_ms")
    pickup = (f"pickup p50 {p50:.1f} p99 {p99:.1f} ms" if p50 is not None and p99 is not None
              else "pickup -")
    of = f"/{total}" if row["phase"] != "drain" else ""
    line = (f"[{row['interval'] + 1:>3}{of}] {row['phase']:<13} t={row['t_end_s']:>6.0f}s  "
            f"done {row['completions_per_s'] or 0:>7,.0f}/s (offered "
            f"{row['offered_per_s'] or 0:,.0f}/s)  {pickup}  waiting {_count(row['waiting'])}  "
            f"jobs {_mb(row['jobs_total_bytes'])} MB (heap {_mb(row['jobs_heap_bytes'])}, "
            f"idx {_mb(row['jobs_index_bytes'])}, claim idx "
            f"{(row['jobs_claim_idx_bytes'] or 0) / 2**20:,.1f})  rows "
            f"{row['finished_rows'] or 0:,}  dead {row['jobs_dead_tup'] or 0:,}  autovac "
            f"{row['jobs_autovacuum_count'] or 0}  xmin age {row['xmin_age']:,}  load "
            f"{row.get('machine_load_1m') or 0:.1f}{_waits(row)}")
    return line + (f"  <- {row['event']}" if row.get("event") else "")


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")


ACCOUNTING = """
SELECT (SELECT count(*) FROM jobs),
       (SELECT count(*) FROM jobs WHERE status = 'success'),
       (SELECT count(*) FROM jobs WHERE status = 'failed'),
       (SELECT count(*) FROM jobs WHERE finished_at IS NULL),
       (SELECT coalesce(sum(succeeded), 0) FROM job_tallies),
       (SELECT coalesce(sum(dead), 0) FROM job_tallies),
       (SELECT count(*) FROM job_attempts)
"""


def accounting(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """The database's own totals at the end (the workers stopped): the rows left, the
    tallies' successes and dead letters, and what retention deleted (finished jobs no
    longer in the table)."""
    row = conn.execute(ACCOUNTING).fetchone()
    assert row is not None
    rows, success_rows, failed_rows, unfinished, succeeded, dead, attempts = (int(x) for x in row)
    return {"job_rows": rows, "success_rows": success_rows, "failed_rows": failed_rows,
            "unfinished_rows": unfinished, "tally_succeeded": succeeded, "tally_dead": dead,
            "deleted_by_retention": succeeded + dead - success_rows - failed_rows,
            "failed_deleted_by_retention": dead - failed_rows, "attempt_rows": attempts}


def say(out: TextIO, text: str) -> None:
    print(text, file=out, flush=True)
