"""A soak-life interval's readings: read slice by slice, its finished rows say what one
statement over the whole interval says (the same completions, and the same pickup p50,
p99 and max as PostgreSQL's percentile_cont, whatever the slices); the machine's waits
are shares of the time between two readings."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from boundq.loadtests.soaklife_machine import MachineReadings
from boundq.loadtests.soaklife_sample import FinishedTally, percentile_cont, read_waiting

# 2,000 finished rows over 8 s: pickups of 0-49.9 ms in a scattered order, every tenth a
# second attempt (counted, but not in the pickup), and unfinished rows between them.
SEED = """
INSERT INTO jobs (name, status, attempts, run_at, started_at, finished_at)
SELECT 'slice', 'success', CASE WHEN i %% 10 = 0 THEN 2 ELSE 1 END, r,
       r + ((i * 37) %% 500) * interval '100 microseconds',
       r + ((i * 37) %% 500) * interval '100 microseconds' + interval '2 ms'
FROM generate_series(0, 1999) AS i,
     LATERAL (SELECT %(t0)s::timestamptz + i * interval '4 ms' AS r) AS at
"""
WAITING = "INSERT INTO jobs (name) SELECT 'waiting' FROM generate_series(1, 50)"

# The reference: one statement over the whole range, as the interval was read before.
WHOLE = """
SELECT count(*), count(*) FILTER (WHERE attempts = 1),
       percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (
           ORDER BY extract(epoch FROM started_at - run_at)) FILTER (WHERE attempts = 1),
       max(extract(epoch FROM started_at - run_at)) FILTER (WHERE attempts = 1)
FROM jobs
WHERE finished_at IS NOT NULL AND finished_at >= %(a)s AND finished_at < %(b)s
"""

T0 = datetime.fromisoformat("2026-01-01T00:00:00+00:00")


def _whole(conn: psycopg.Connection[Any], a: datetime, b: datetime) -> dict[str, Any]:
    row = conn.execute(WHOLE, {"a": a, "b": b}).fetchone()
    assert row is not None
    n, pickup_n, (p50, p99), top = row
    return {"completions": n, "pickup_n": pickup_n, "pickup_p50_ms": float(p50) * 1000,
            "pickup_p99_ms": float(p99) * 1000, "pickup_max_ms": float(top) * 1000}


@pytest.mark.parametrize("cuts_s", [
    [8.5],  # one slice
    [1.0 * k for k in range(1, 9)] + [8.5],  # a second each
    [0.3, 0.301, 2.2, 2.2001, 5.0, 7.77, 8.5],  # uneven, some a millisecond wide
])
def test_slices_add_up_to_the_whole_interval(db_url: str, cuts_s: list[float]) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(SEED, {"t0": T0})
        conn.execute(WAITING)
        tally, start = FinishedTally(), 0.0
        for cut in cuts_s:
            tally.read(conn, T0 + timedelta(seconds=start), T0 + timedelta(seconds=cut))
            start = cut
        whole = _whole(conn, T0, T0 + timedelta(seconds=cuts_s[-1]))
    got = tally.values(cuts_s[-1])
    assert got["completions"] == whole["completions"] == 2000
    assert got["pickup_n"] == whole["pickup_n"] == 1800
    assert got["completions_per_s"] == pytest.approx(2000 / 8.5, abs=0.01)
    for key in ("pickup_p50_ms", "pickup_p99_ms", "pickup_max_ms"):
        assert got[key] == pytest.approx(whole[key], abs=0.001), key


def test_a_slice_with_no_rows_adds_nothing(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(SEED, {"t0": T0})
        conn.execute(WAITING)
        tally = FinishedTally()
        tally.read(conn, T0 - timedelta(seconds=5), T0)
    assert tally.values(5.0) == {
        "completions": 0, "completions_per_s": 0.0, "pickup_n": 0, "pickup_p50_ms": None,
        "pickup_p99_ms": None, "pickup_max_ms": None}


def test_percentile_cont_interpolates_between_ranks() -> None:
    assert percentile_cont([7.0], 0.99) == 7.0
    assert percentile_cont([1.0, 2.0], 0.5) == 1.5
    assert percentile_cont([0.0, 10.0, 20.0, 30.0, 40.0], 0.99) == pytest.approx(39.6)


def test_the_machine_readings_are_shares_of_the_time_between_them(tmp_path: Path) -> None:
    now = [100.0]

    def write(cpu_us: int, io_us: int, io_full_us: int) -> None:
        for name, some, full in (("cpu", cpu_us, 0), ("io", io_us, io_full_us)):
            (tmp_path / name).write_text(
                f"some avg10=0.00 avg60=0.00 avg300=0.00 total={some}\n"
                f"full avg10=0.00 avg60=0.00 avg300=0.00 total={full}\n")

    write(1_000_000, 50_000, 10_000)
    machine = MachineReadings(tmp_path, clock=lambda: now[0])
    now[0] = 101.0  # a second with 5 ms of every task waiting on I/O
    write(1_200_000, 60_000, 15_000)
    machine.tick()
    now[0] = 102.0  # then one with 180 ms: the interval's worst second
    write(1_500_000, 250_000, 195_000)
    first = machine.reading()  # 0.5 s of 2 s waiting for a CPU, 0.2 s for I/O
    assert (first["machine_cpu_wait_pct"], first["machine_io_wait_pct"]) == (25.0, 10.0)
    assert first["machine_io_stall_max_ms"] == 180.0
    assert first["machine_load_1m"] >= 0
    now[0] = 104.0  # the next reading starts where the last ended: nothing waited since
    second = machine.reading()
    assert (second["machine_cpu_wait_pct"], second["machine_io_stall_max_ms"]) == (0.0, 0.0)
    (tmp_path / "io").unlink()  # a kernel without pressure stall information for I/O
    now[0] = 105.0
    third = machine.reading()
    assert (third["machine_io_wait_pct"], third["machine_io_stall_max_ms"]) == (None, None)


def test_the_waiting_count_gives_up_at_its_deadline(db_url: str) -> None:
    """Past its deadline the count is left empty, and the session's own statement
    deadline is as it was (the one for the count was local to its transaction)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO jobs (name) SELECT 'waiting' FROM generate_series(1, 200000)")
        conn.execute("SET statement_timeout = '60s'")
        assert read_waiting(conn, deadline_s=0.001) is None
        assert read_waiting(conn, deadline_s=60) == 200_000
        row = conn.execute("SHOW statement_timeout").fetchone()
    assert row is not None and row[0] == "1min"
