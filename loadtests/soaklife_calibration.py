"""The calibration of a soak-life run, and the environment of its workers.

The capacity the load is a share of: a backlog of the run's job in a database of its own,
drained by `boundq worker` with the run's settings (reports/drain_run.py), timed by the
database from its first claim to its last finish.
"""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

from boundq.core import dbadmin
from boundq.core.migrate import migrate
from boundq.loadtests import processes as procs
from boundq.loadtests.soaklife_load import job_of
from boundq.loadtests.soaklife_plan import SoakOptions
from boundq.loadtests.soaklife_sample import connect
from boundq.reports.dbwatch import REPORT_APP

CALIBRATION_DB = "boundq_soaklife_calibration"


def worker_env(o: SoakOptions, db_url: str, retention_s: float | None) -> dict[str, str]:
    """The environment of every `boundq worker` of the run. Retention off is an empty
    value, which wins over a .env that sets it."""
    keep = "" if retention_s is None else f"{retention_s:g}"
    return procs.child_env({
        "DATABASE_URL": db_url, "NUM_WORKERS": str(o.num_workers),
        "MAX_CONCURRENT_JOBS": str(o.max_concurrent_jobs), "WORKER_PROCESSES": "1",
        "LOG_LEVEL": "warning", "RETENTION_SECONDS": keep, "FAILED_RETENTION_SECONDS": keep,
        **o.worker_env})


def fill(url: str, jobs: int, job_ms: int) -> None:
    kind, payload = job_of(job_ms)
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur, cur.copy(
            "COPY jobs (name, kind, payload) FROM STDIN") as copy:
        for _ in range(jobs):
            copy.write_row(("soak-life-calibration", kind, payload))


def calibrate(base: str, o: SoakOptions) -> dict[str, Any]:
    """Drain a backlog with the run's workers in a database of its own: jobs per second
    from its first claim to its last finish, on the database's clock."""
    from boundq.reports.drain_run import drain_cli

    url = dbadmin.fresh_database(base, CALIBRATION_DB)
    try:
        asyncio.run(migrate(url))
        fill(url, o.calibration_jobs, o.job_ms)
        with connect(url, REPORT_APP) as conn:
            conn.execute("VACUUM ANALYZE jobs")
        env = worker_env(o, url, None) | {"WORKER_PROCESSES": str(o.processes)}
        result = drain_cli(url, env, show_progress=False, timeout_s=600)
    finally:
        dbadmin.drop_database(base, CALIBRATION_DB)
    return {"jobs": result["finished"], "seconds": result["elapsed_s"],
            "jobs_per_s": result["jobs_per_s"]}
