"""Flow control through real workers: a queue's concurrency held across two worker
processes' worth of owners (measured from the attempts' own timestamps), and weighted
shares of completions when queues compete (counted in windows of completions, not of
seconds)."""

from __future__ import annotations

from boundq.core import flow
from boundq.core.worker import Worker
from tests.conftest import fast_settings
from tests.helpers import add_jobs, max_overlap, rows, scalar, wait_until


async def _drained(conn, n: int) -> bool:
    return await scalar(conn, "SELECT count(*) FROM jobs WHERE status = 'success'") == n


async def test_queue_and_kind_concurrency_hold_across_workers(db_url, conn) -> None:
    await add_jobs(conn, 30, queue="mail", kind="sleep", payload={"ms": 40})
    await add_jobs(conn, 30, queue="bulk", kind="noop")
    await flow.put_queue(conn, "mail", flow.parse_settings({"concurrency": 3}, weighted=True))
    await flow.put_kind(conn, "noop", flow.parse_settings({"concurrency": 2}, weighted=False))
    workers = [Worker(fast_settings(max_concurrent_jobs=6, num_workers=2), db_url)
               for _ in range(2)]
    for w in workers:
        await w.start()
    try:
        await wait_until(lambda: _drained(conn, 60), 60, what="both queues drained")
    finally:
        for w in workers:
            await w.stop()
    spans = await rows(conn, "SELECT j.queue, j.kind, a.owner, a.claimed_at, a.finished_at "
                             "FROM job_attempts a JOIN jobs j ON j.id = a.job_id")
    mail = [(r["claimed_at"], r["finished_at"]) for r in spans if r["queue"] == "mail"]
    noop = [(r["claimed_at"], r["finished_at"]) for r in spans if r["kind"] == "noop"]
    assert max_overlap(mail) <= 3
    assert max_overlap(noop) <= 2
    assert max_overlap(mail) >= 2, "no parallel work on the limited queue: proves nothing"
    assert {r["owner"] for r in spans if r["queue"] == "mail"} == {w.owner for w in workers}


async def test_busy_queues_share_completions_by_weight(db_url, conn) -> None:
    """Three busy queues, weights 1:2:5, sleep jobs of one length: in every window of 600
    completions (until the first queue runs out) each queue's share is within 10% of its
    weight share, give or take the jobs in flight at the window's edges (the permits)."""
    weights = {"low": 1, "mid": 2, "high": 5}
    permits = 8
    for name, weight in weights.items():
        await add_jobs(conn, 300 * weight, queue=name, kind="sleep", payload={"ms": 5})
        await flow.put_queue(conn, name, flow.parse_settings({"weight": weight}, weighted=True))
    worker = Worker(fast_settings(max_concurrent_jobs=permits, num_workers=2), db_url)
    await worker.start()
    try:
        await wait_until(lambda: _any_queue_done(conn, 1500), 180, what="a queue drained")
    finally:
        await worker.stop()
    done = await rows(conn, "SELECT queue FROM jobs WHERE status = 'success' "
                            "ORDER BY finished_at, id")
    total = sum(weights.values())
    window = 600
    # the window ends before any queue ran dry (its share would go to the others)
    runs_dry = min(max(i for i, r in enumerate(done) if r["queue"] == q) for q in weights)
    windows = range(0, runs_dry - window + 1, window // 2)
    assert len(windows) >= 3, f"only {runs_dry} completions before a queue ran dry"
    for start in windows:
        chunk = [r["queue"] for r in done[start:start + window]]
        for name, weight in weights.items():
            share, expected = chunk.count(name) / window, weight / total
            assert abs(share - expected) <= 0.1 * expected + permits / window, (
                start, name, share, expected)


async def _any_queue_done(conn, n: int) -> bool:
    return bool(await scalar(conn, "SELECT count(*) FROM (SELECT queue FROM jobs WHERE status "
                                   "= 'success' GROUP BY queue HAVING count(*) >= %s) AS d",
                             (n,)))
