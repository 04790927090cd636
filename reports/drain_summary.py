"""The drain benchmark's printed figures: CPU per job, ratios within each round (boundq
against PgQueuer's best of that round, the CLI against the in-process Worker), and the
best and median of every configuration over the rounds."""

from __future__ import annotations

import statistics
from typing import Any

Result = dict[str, Any]


def cpu_us_per_job(result: Result) -> tuple[float, float | None]:
    """(client, server) µs of CPU per job drained; server None unless the cluster is local."""
    per_job = 1e6 / max(result["jobs"], 1)
    server = result.get("server_cpu_s")
    return result["client_cpu_s"] * per_job, None if server is None else server * per_job


def cpu_per_job(result: Result) -> str:
    """"client + server µs" of CPU per job drained (server only for a local cluster)."""
    client_us, server_us = cpu_us_per_job(result)
    if server_us is None:
        return f"{client_us:,.0f} µs (client; server not local)"
    return f"{client_us:,.0f} + {server_us:,.0f} = {client_us + server_us:,.0f} µs"


def round_ratios(results: list[Result]) -> dict[str, float]:
    """Ratios of one round: "<boundq label> / PgQueuer best" for each boundq CLI
    configuration, "CLI / in-process MAX_CONCURRENT_JOBS=c" where both ran, and each flow
    variant against the same level with no flow settings."""
    rate = {r["label"]: r["jobs_per_s"] for r in results}
    ratios: dict[str, float] = {}
    peers = [r["jobs_per_s"] for r in results if r["mode"] == "pgqueuer"]
    for r in results:
        if r["mode"] != "boundq" or r.get("backlog", r["jobs"]) != r["jobs"]:
            continue
        if " flow=" in r["label"]:  # a flow variant: against the same level without settings
            plain = rate.get(r["label"].split(" flow=")[0])
            if plain:
                ratios[f"{r['label'].removeprefix('boundq ')} / none"] = r["jobs_per_s"] / plain
            continue
        if peers and max(peers) > 0:
            ratios[f"{r['label']} / PgQueuer best"] = r["jobs_per_s"] / max(peers)
        twin = rate.get(r["label"].replace("boundq ", "in-process ", 1))
        if twin:
            level = r["label"].removeprefix("boundq ")
            ratios[f"CLI / in-process {level}"] = r["jobs_per_s"] / twin
    return ratios


def print_round(results: list[Result]) -> None:
    for name, value in round_ratios(results).items():
        print(f"  ratio {name:<52} {value:6.2f}x", flush=True)


def summarize(results: list[Result]) -> None:
    """Best and median round of each configuration, and the median of each ratio over
    the rounds (each ratio taken within its round: same spell of the machine)."""
    by_label: dict[str, list[float]] = {}
    cpu_by_label: dict[str, list[float]] = {}
    for r in results:
        by_label.setdefault(r["label"], []).append(r["jobs_per_s"])
        client_us, server_us = cpu_us_per_job(r)
        cpu_by_label.setdefault(r["label"], []).append(client_us + (server_us or 0.0))
    cpu_scope = "" if all("server_cpu_s" in r for r in results) else ", client only"
    print(f"summary (jobs/s)                         best      median   CPU µs/job "
          f"(median{cpu_scope})   rounds")
    for label, rates in by_label.items():
        print(f"  {label:<40} {max(rates):>8,.0f}  {statistics.median(rates):>10,.0f}  "
              f"{statistics.median(cpu_by_label[label]):>10,.0f}   "
              f"{', '.join(f'{x:,.0f}' for x in rates)}")
    ratios: dict[str, list[float]] = {}
    for round_no in sorted({r["round"] for r in results}):
        for name, value in round_ratios([r for r in results if r["round"] == round_no]).items():
            ratios.setdefault(name, []).append(value)
    for name, values in ratios.items():
        print(f"  {name:<52} median {statistics.median(values):5.2f}x   rounds "
              f"{', '.join(f'{v:.2f}x' for v in values)}")
