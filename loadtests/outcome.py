"""The numbers of a finished flood, and the lines it prints at the end."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from boundq.core.config import Settings

if TYPE_CHECKING:
    from boundq.loadtests.flood import FloodOptions
    from boundq.loadtests.sampling import Sampler
    from boundq.loadtests.verify import Verdict


def read_locust_stats(run_dir: Path) -> list[dict[str, str]]:
    path = run_dir / "locust_stats.csv"
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _num(text: str | None) -> float:
    try:
        return float(text or 0)
    except ValueError:
        return 0.0


def summarize(run_dir: Path, o: FloodOptions, verdict: Verdict, statuses: dict[str, int],
              sampler: Sampler | None, settings: Settings, capacity: float | None,
              rate: float) -> dict[str, Any]:
    rows = read_locust_stats(run_dir)
    endpoints = {}
    offered = 0.0
    for row in rows:
        name = row["Name"]
        if name == "Aggregated" or row["Type"] == "DROP":
            continue
        count = _num(row["Request Count"])
        endpoints[name] = {"requests": int(count), "failures": int(_num(row["Failure Count"])),
                           "rps": round(_num(row["Requests/s"]), 1),
                           "p50_ms": _num(row["50%"]), "p95_ms": _num(row["95%"]),
                           "p99_ms": _num(row["99%"]), "max_ms": round(_num(row["100%"]), 1)}
        if name == "POST /jobs":
            offered += count
        elif name.startswith("POST /jobs/bulk"):
            offered += count * o.bulk_size
    not_sent = statuses.get("dropped", 0) + statuses.get("behind", 0)
    load = [s for s in (sampler.samples if sampler else []) if s.phase == "load"]
    load_s = (load[-1].t - load[0].t) if len(load) > 1 else 0.0
    processed = (load[-1].succeeded - load[0].succeeded) / load_s if load_s > 0 else 0.0
    aggregate = next((r for r in rows if r["Name"] == "Aggregated"), {})
    return {
        "load_seconds": round(load_s, 1),
        "requests": int(_num(aggregate.get("Request Count"))),
        "requests_per_s": round(_num(aggregate.get("Requests/s")), 1),
        "statuses": statuses,
        "jobs_offered": int(offered),
        "arrivals_not_sent": {k: statuses[k] for k in ("dropped", "behind") if k in statuses},
        "arrivals_scheduled_per_s": round((offered + not_sent) / load_s, 1) if rate and load_s
        else None,
        "jobs_offered_per_s": round(offered / load_s, 1) if load_s else 0.0,
        "jobs_accepted_per_s": round(verdict.acknowledged / load_s, 1) if load_s else 0.0,
        "jobs_processed_per_s_during_load": round(processed, 1),
        "capacity_bound_jobs_per_s": capacity,
        "arrival_rate_per_s": rate or None,
        "overload_vs_processed": round(offered / load_s / processed, 2)
        if load_s and processed else None,
        "endpoints": endpoints,
        "peak_rss_mb": round(sampler.peak_rss_mb, 1) if sampler else None,
        "peak_connections": sampler.peak_connections if sampler else None,
        "connection_budget": settings.db_connections,
        "job_ms": o.job_ms,
        "scenario": o.scenario,
        "users": o.users,
    }


def print_summary(s: dict[str, Any], verdict: Verdict, run_dir: Path, out: TextIO) -> None:
    def p(text: str = "") -> None:
        print(text, file=out)

    codes = s["statuses"]
    answers = "  ".join(f"{code} {n:,}" for code, n in codes.items() if code not in
                        ("dropped", "behind"))
    p()
    p(f"requests: {s['requests']:,} in {s['load_seconds']:.0f}s ({s['requests_per_s']:,.0f}/s)"
      f"; answers by status: {answers or 'none'}")
    for name, e in s["endpoints"].items():
        p(f"  {name:<24} {e['requests']:>9,} req {e['rps']:>8,.0f}/s   p50 {e['p50_ms']:>5.0f}"
          f" ms  p95 {e['p95_ms']:>5.0f} ms  p99 {e['p99_ms']:>6.0f} ms")
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
    p(f"acknowledged {verdict.acknowledged:,} jobs: {verdict.terminal:,} terminal "
      f"({verdict.succeeded:,} success, {verdict.failed:,} failed, {verdict.cancelled:,} "
      f"cancelled); created but never acknowledged: {verdict.unacknowledged}")
    if s["passed"]:
        p("PASSED: lost = 0; every answer was 2xx, 429 or 503; queue drained")
    else:
        p("FAILED:")
        for failure in s["failures"]:
            p(f"  - {failure}")
    p(f"run folder: {run_dir}/")
    out.flush()
