"""The numbers of a finished flood, and the lines it prints at the end.

Every client-side total comes from the Locust users' own tally (tally.py): the request
count, the answers by status, the endpoints and their percentiles, the load's duration.
Processing rates come from the database (pace.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TextIO

from boundq.loadtests.tally import NOT_SENT, Tally

if TYPE_CHECKING:
    from pathlib import Path

    from boundq.loadtests.flood import FloodOptions
    from boundq.loadtests.pace import Pace
    from boundq.loadtests.sampling import Sampler
    from boundq.loadtests.verify import Verdict

# endpoints whose answers are also shown by status (accepted vs refused latency)
SPLIT_BY_STATUS = ("POST /jobs",)


def _single_create(name: str) -> bool:
    """POST /jobs, or a flow scenario's POST /jobs (queue)."""
    return name == "POST /jobs" or name.startswith("POST /jobs (")


def _endpoints(tally: Tally) -> dict[str, dict[str, Any]]:
    out = {}
    for name in sorted(tally.answers):
        entry = tally.endpoint(name)
        entry["failures"] = sum(tally.count(name, c) for c in tally.answers[name]
                                if not c.startswith("2"))
        entry["by_status"] = {code: tally.endpoint(name, code)
                              for code in sorted(tally.answers[name])}
        out[name] = entry
    return out


def summarize(o: FloodOptions, verdict: Verdict, tally: Tally, sampler: Sampler | None,
              capacity: float | None, rate: float, pace: Pace, connection_budget: int
              ) -> dict[str, Any]:
    endpoints = _endpoints(tally)
    offered = 0
    for name, e in endpoints.items():
        if _single_create(name):
            offered += e["requests"]
        elif name.startswith("POST /jobs/bulk"):
            offered += e["requests"] * o.bulk_size
    statuses = tally.statuses()
    not_sent = sum(statuses.get(k, 0) for k in NOT_SENT)
    load_s = tally.seconds
    requests = tally.requests()
    flood_rate = pace.flood.jobs_per_s if pace.flood else 0.0
    return {
        "load_seconds": round(load_s, 1),
        "requests": requests,
        "requests_per_s": round(requests / load_s, 1) if load_s else 0.0,
        "statuses": statuses,
        "totals_source": "locust users' tally (tally-<pid>.json), "
                         f"{tally.processes} load-generator process(es)",
        "jobs_offered": offered,
        "arrivals_not_sent": {k: statuses[k] for k in NOT_SENT if k in statuses},
        "arrivals_scheduled_per_s": round((offered + not_sent) / load_s, 1) if rate and load_s
        else None,
        "jobs_offered_per_s": round(offered / load_s, 1) if load_s else 0.0,
        "jobs_accepted_per_s": round(verdict.acknowledged / load_s, 1) if load_s else 0.0,
        # from the database (finished_at in the trimmed load window), no longer /metrics
        "jobs_processed_per_s_during_load": flood_rate,
        "jobs_processed_per_s_idle": pace.idle.jobs_per_s if pace.idle else None,
        "pace_under_flood_vs_idle": pace.ratio,
        "pace": pace.as_dict(),
        "capacity_bound_jobs_per_s": capacity,
        "arrival_rate_per_s": rate or None,
        "overload_vs_processed": round(offered / load_s / flood_rate, 2)
        if load_s and flood_rate else None,
        "endpoints": endpoints,
        "peak_rss_mb": round(sampler.peak_rss_mb, 1) if sampler else None,
        "peak_connections": sampler.peak_connections if sampler else None,
        "connection_budget": connection_budget,
        "job_ms": o.job_ms,
        "scenario": o.scenario,
        "users": o.users,
        "locust_processes": o.locust_processes,
        "locust_nice": o.locust_nice,
    }


def _latency(e: dict[str, Any]) -> str:
    return (f"p50 {e['p50_ms']:>5.0f} ms  p95 {e['p95_ms']:>5.0f} ms  "
            f"p99 {e['p99_ms']:>6.0f} ms")


def print_summary(s: dict[str, Any], verdict: Verdict, pace: Pace, run_dir: Path, out: TextIO,
                  extra_lines: list[str] | None = None) -> None:
    def p(text: str = "") -> None:
        print(text, file=out)

    codes = s["statuses"]
    answers = "  ".join(f"{code} {n:,}" for code, n in codes.items() if code not in NOT_SENT)
    p()
    p(f"requests: {s['requests']:,} in {s['load_seconds']:.0f}s ({s['requests_per_s']:,.0f}/s)"
      f"; answers by status: {answers or 'none'}")
    for name, e in s["endpoints"].items():
        p(f"  {name:<24} {e['requests']:>9,} req {e['rps']:>8,.0f}/s   {_latency(e)}")
        if (name in SPLIT_BY_STATUS or _single_create(name)) and len(e["by_status"]) > 1:
            for code, sub in e["by_status"].items():
                p(f"    {code:<22} {sub['requests']:>9,} req {sub['rps']:>8,.0f}/s   "
                  f"{_latency(sub)}")
    cap = s["capacity_bound_jobs_per_s"]
    over = s["overload_vs_processed"]
    p(f"jobs/s: offered {s['jobs_offered_per_s']:,.0f}, accepted {s['jobs_accepted_per_s']:,.0f}"
      f", processed {s['jobs_processed_per_s_during_load']:,.0f}"
      + (f" (offered = {over:.1f}x what was processed)" if over else "")
      + (f"; capacity bound {cap:,.0f}/s (permits x 1000 / job ms)" if cap else ""))
    if s["arrival_rate_per_s"]:
        p(f"arrivals: {s['arrival_rate_per_s']:,.0f}/s scheduled, "
          f"{s['arrivals_scheduled_per_s']:,.0f}/s due during the run; not sent: "
          f"{s['arrivals_not_sent'] or 'none'} (dropped = in-flight cap, behind = the load "
          "generator fell behind its schedule)")
    p(f"server: peak RSS {s['peak_rss_mb']} MiB, peak DB connections {s['peak_connections']} "
      f"(budget {s['connection_budget']})")
    for line in extra_lines or []:
        p(line)
    pending = (f"; {verdict.pending:,} still waiting (the drain was aborted: not lost, not "
               "proven)" if not verdict.drained and verdict.pending else "")
    p(f"acknowledged {verdict.acknowledged:,} jobs: {verdict.terminal:,} terminal "
      f"({verdict.succeeded:,} success, {verdict.failed:,} failed, {verdict.cancelled:,} "
      f"cancelled){pending}; created but never acknowledged: {verdict.unacknowledged}")
    capacity_line = pace.capacity_line()
    if capacity_line:
        p(capacity_line)
    p(pace.line())
    if s["passed"]:
        judged = (f"; pace {pace.ratio:.2f} x idle >= {pace.threshold:.2f}" if pace.judged
                  and pace.ratio is not None else "; pace not judged")
        p(f"PASSED: lost = 0; every answer was 2xx, 429 or 503; queue drained{judged}")
    else:
        p("FAILED:")
        for failure in s["failures"]:
            p(f"  - {failure}")
    p(f"run folder: {run_dir}/")
    out.flush()
