"""After a flood: did every job the API acknowledged reach a terminal state?

The Locust processes wrote each acknowledged id (acked-<pid>.txt) and a tally of every
answer (tally-<pid>.json, see tally.py). The ids go into a temporary table with COPY
and one query compares them with the jobs table (Jepsen's total-queue accounting):

  acknowledged   distinct ids the API answered 2xx for
  terminal       of those, jobs now success / failed / cancelled
  missing        acknowledged but not in the jobs table at all
  pending        acknowledged, in the table, not terminal (only after an aborted drain)
  lost           missing + pending once the queue drained; missing alone when the drain
                 was aborted (a waiting job is not lost, just not proven) (must be 0)
  unacknowledged jobs in the (fresh) database no client saw a 2xx for: a response lost
                 to a client timeout, say; reported, not an error. The runner's own
                 calibration backlog is not counted here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg

from boundq.loadtests.tally import NOT_SENT, read_tallies

TERMINAL = ("success", "failed", "cancelled")
ALLOWED = ("429", "503")  # besides 2xx: backpressure answers


def read_acked(out_dir: Path) -> list[int]:
    ids: list[int] = []
    for path in sorted(out_dir.glob("acked-*.txt")):
        ids.extend(int(line) for line in path.read_text("ascii").split())
    return ids


def read_statuses(out_dir: Path) -> dict[str, int]:
    """Answers by status code (and arrivals not sent) over every Locust process."""
    return read_tallies(out_dir).statuses()


def unexpected_statuses(statuses: dict[str, int]) -> dict[str, int]:
    """Answers that are neither 2xx nor backpressure (429, 503), and transport errors.
    Open-loop arrivals the client never sent (NOT_SENT) are not answers."""
    return {code: n for code, n in statuses.items() if n and code not in NOT_SENT
            and not code.startswith("2") and code not in ALLOWED}


@dataclass
class Verdict:
    acknowledged: int
    duplicates: int
    terminal: int
    succeeded: int
    failed: int
    cancelled: int
    lost: int
    unacknowledged: int | None
    lost_examples: list[int]
    missing: int = 0
    pending: int = 0
    drained: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def verify(db_url: str, acked: list[int], fresh_db: bool, drained: bool = True,
           exclude_name: str | None = None) -> Verdict:
    unique = sorted(set(acked))
    with psycopg.connect(db_url, autocommit=True,
                         application_name="boundq-flood-verify") as conn, conn.cursor() as cur:
        cur.execute("CREATE TEMP TABLE flood_acked (id bigint PRIMARY KEY)")
        with cur.copy("COPY flood_acked (id) FROM STDIN") as copy:
            for job_id in unique:
                copy.write_row((job_id,))
        cur.execute(
            "SELECT count(*) FILTER (WHERE j.status::text = ANY(%(t)s)), "
            "count(*) FILTER (WHERE j.status = 'success'), "
            "count(*) FILTER (WHERE j.status = 'failed'), "
            "count(*) FILTER (WHERE j.status = 'cancelled'), "
            "count(*) FILTER (WHERE j.id IS NULL) "
            "FROM flood_acked a LEFT JOIN jobs j USING (id)", {"t": list(TERMINAL)})
        row = cur.fetchone()
        assert row is not None
        terminal, succeeded, failed, cancelled, missing = (int(v) for v in row)
        cur.execute(
            "SELECT a.id FROM flood_acked a LEFT JOIN jobs j USING (id) "
            "WHERE j.id IS NULL OR (%(drained)s AND NOT (j.status::text = ANY(%(t)s))) "
            "ORDER BY a.id LIMIT 10", {"t": list(TERMINAL), "drained": drained})
        examples = [int(r[0]) for r in cur.fetchall()]
        unacknowledged = None
        if fresh_db:
            cur.execute("SELECT count(*) FROM jobs j WHERE NOT EXISTS "
                        "(SELECT 1 FROM flood_acked a WHERE a.id = j.id) "
                        "AND (%(x)s::text IS NULL OR j.name <> %(x)s)", {"x": exclude_name})
            found = cur.fetchone()
            unacknowledged = int(found[0]) if found else 0
    pending = len(unique) - terminal - missing
    return Verdict(acknowledged=len(unique), duplicates=len(acked) - len(unique),
                   terminal=terminal, succeeded=succeeded, failed=failed, cancelled=cancelled,
                   lost=missing + (pending if drained else 0), unacknowledged=unacknowledged,
                   lost_examples=examples, missing=missing, pending=pending, drained=drained)


def unfinished(db_url: str) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        # Not finished: waiting (scheduled, blocked, new) or running.
        row = conn.execute("SELECT count(*) FROM jobs WHERE finished_at IS NULL").fetchone()
    return int(row[0]) if row else 0
