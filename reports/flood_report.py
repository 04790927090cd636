"""summary.md and figures of a flood's run folder (called by `boundq flood` at the end)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from boundq.reports import flood_figures as figures
from boundq.reports.writer import history_frame, load_run, markdown_table, samples_frame, save


def flood_figures(run_dir: Path) -> dict[str, Path]:
    run = load_run(run_dir)
    samples = samples_frame(run_dir)
    history = history_frame(run_dir)
    budget = run.get("result", {}).get("connection_budget")
    written: dict[str, Path] = {}
    if not samples.empty:
        written["answers and queue"] = save(figures.flood_requests(samples),
                                            run_dir / "flood-requests.png")
        written["server memory and connections"] = save(
            figures.flood_server(samples, budget), run_dir / "flood-server.png")
    completions = run_dir / "queue_completions.csv"
    if completions.is_file():
        frame = pd.read_csv(completions)
        if not frame.empty:
            phases = run.get("result", {}).get("flow", {}).get("phases")
            written["completions per queue"] = save(figures.queue_completions(frame, phases),
                                                    run_dir / "flood-queues.png")
    graphs = run_dir / "workflow_graphs.csv"
    if graphs.is_file():
        frame = pd.read_csv(graphs)
        phases = run.get("result", {}).get("flow", {}).get("phases")
        written["workflow latency"] = save(figures.workflow_latency(frame, phases),
                                           run_dir / "flood-workflow.png")
    if not history.empty:
        written["response times"] = save(figures.flood_latency(history),
                                         run_dir / "flood-latency.png")
    return written


def _endpoints_table(result: dict[str, Any]) -> str:
    rows = [{"endpoint": name, "requests": e["requests"], "non-2xx": e["failures"],
             "req/s": e["rps"], "p50 ms": e["p50_ms"], "p95 ms": e["p95_ms"],
             "p99 ms": e["p99_ms"]} for name, e in result.get("endpoints", {}).items()]
    return markdown_table(pd.DataFrame(rows), "{:,.0f}") if rows else "(no requests)"


def _flow_lines(flow: dict[str, Any]) -> list[str]:
    out = []
    for label in ("alone", "flooded"):
        p = flow.get(label)
        if p:
            out.append(f"queue {p['queue']} {label}: {p['jobs']:,} jobs, pickup p50 "
                       f"{p['p50_ms']} ms, p99 {p['p99_ms']} ms, max {p['max_ms']} ms; "
                       f"{p.get('finished_per_s', 0):g} finished/s")
    if flow.get("ratio") is not None:
        out.append(f"pickup p99 flooded / alone = {flow['ratio']:.2f}x (threshold "
                   f"{flow['threshold']:.2f}); completions/s kept {flow.get('kept')}x "
                   f"(threshold {flow.get('flow_threshold')})")
    rate = flow.get("rate")
    if rate:
        out.append(f"kind {rate['kind']} at {rate['rate_per_s']:g}/s burst {rate['burst']}: "
                   f"{rate['starts']:,} starts before the lift, worst window "
                   f"{rate['worst_excess']:.2f} beyond rate x length: "
                   + ("held" if rate["held"] else "BROKEN"))
    return out


def _workflow_lines(flow: dict[str, Any]) -> list[str]:
    """The workflow scenario's table: graph latency alone and while flooded."""
    rows = [{"graphs": label, "measured": g["graphs"], "completed": g["completed"],
             "p50 ms": g["p50_ms"], "p99 ms": g["p99_ms"], "max ms": g["max_ms"]}
            for label, g in (("alone", flow.get("alone")), ("beside the flood",
                                                          flow.get("flooded"))) if g]
    out = [markdown_table(pd.DataFrame(rows), "{:,.1f}") if rows else "(not measured)", ""]
    if flow.get("ratio") is not None:
        judged = (f"threshold {flow['threshold']:.2f}" if flow.get("threshold")
                  else "not judged: --workflow-threshold 0")
        out.append(f"- latency p99 beside the flood / alone = {flow['ratio']:.2f}x ({judged}); "
                   f"alone: p50 {flow['alone']['p50_ms']} ms, p99 {flow['alone']['p99_ms']} "
                   f"ms; beside the flood: p50 {flow['flooded']['p50_ms']} ms, p99 "
                   f"{flow['flooded']['p99_ms']} ms")
    return out


def write_flood_report(run_dir: Path) -> Path:
    run = load_run(run_dir)
    result = run.get("result", {})
    verdict = run.get("verdict", {})
    settings = run.get("settings", {})
    pg = run.get("postgres", {})
    machine = run.get("machine", {})
    written = flood_figures(run_dir)
    statuses = ", ".join(f"{c}: {n:,}" for c, n in result.get("statuses", {}).items())
    cap = result.get("capacity_bound_jobs_per_s")
    job = f"`sleep` {result.get('job_ms')} ms" if result.get("job_ms") else "`noop`"
    lines = [
        f"# boundq flood {run_dir.name}: {'PASSED' if result.get('passed') else 'FAILED'}",
        "",
        f"- scenario **{result.get('scenario')}**, {result.get('users')} Locust users, "
        f"{result.get('load_seconds')} s of load; jobs: {job}; bulk size "
        f"{run.get('options', {}).get('bulk_size')}",
        f"- **lost = {verdict.get('lost')}** of {verdict.get('acknowledged', 0):,} "
        f"acknowledged jobs ({verdict.get('succeeded', 0):,} success, "
        f"{verdict.get('failed', 0):,} failed); created but never acknowledged: "
        f"{verdict.get('unacknowledged')}",
        f"- answers by status: {statuses}",
        f"- jobs offered {result.get('jobs_offered_per_s', 0):,.0f}/s, accepted "
        f"{result.get('jobs_accepted_per_s', 0):,.0f}/s, processed "
        f"{result.get('jobs_processed_per_s_during_load', 0):,.0f}/s"
        + (f"; capacity bound {cap:,.0f}/s (MAX_CONCURRENT_JOBS x 1000 / job ms)" if cap
           else ""),
        f"- server peak RSS {result.get('peak_rss_mb')} MiB, peak DB connections "
        f"{result.get('peak_connections')} (budget {result.get('connection_budget')})",
        f"- settings: NUM_WORKERS={settings.get('num_workers')} MAX_CONCURRENT_JOBS="
        f"{settings.get('max_concurrent_jobs')} MAX_QUEUE_DEPTH="
        f"{settings.get('max_queue_depth')} connections={settings.get('db_connections')} "
        f"(API_POOL_BUFFER={settings.get('api_pool_buffer')}), CLAIM_BATCH_MAX="
        f"{settings.get('claim_batch_max') or 'share of the permits'}",
        f"- PostgreSQL {pg.get('server_version')}: fsync={pg.get('fsync')} "
        f"synchronous_commit={pg.get('synchronous_commit')} full_page_writes="
        f"{pg.get('full_page_writes')} shared_buffers={pg.get('shared_buffers')} x 8kB",
        f"- machine: {machine.get('cores')} cores ({machine.get('cpu')}), "
        f"{machine.get('memory_gib')} GiB, load average at start "
        f"{machine.get('load_average_at_start')}; Locust, the server and PostgreSQL share it",
    ]
    flow = result.get("flow")
    if flow and flow.get("scenario") == "workflow":
        lines += ["", "## Workflow", "", f"- {run.get('flow', {}).get('plan', '')}; latency "
                  "= root created -> sink finished, from the database", "",
                  *_workflow_lines(flow)]
    elif flow:
        lines += ["", "## Flow control", "", f"- {run.get('flow', {}).get('plan', '')}",
                  *[f"- {line}" for line in _flow_lines(flow)]]
    if result.get("failures"):
        lines += ["", "## Failures", "", *[f"- {f}" for f in result["failures"]]]
    lines += ["", "## Endpoints (Locust, client side)", "", _endpoints_table(result), ""]
    for title, path in written.items():
        lines += [f"## {title.capitalize()}", "", f"![{title}]({path.name})", ""]
    lines += ["Files: locust_*.csv (Locust), server_samples.csv (one row a second: RSS, "
              "connections, queue, answers), server_metrics.prom (the last /metrics), "
              "server.log, locust.log, run.json.", ""]
    out = run_dir / "summary.md"
    out.write_text("\n".join(lines))
    return out
