"""The verdict of a soak-life run, from its interval rows alone.

  warm-up      the first interval: not judged
  baseline     the next intervals (five minutes of the default hour): the mean of their
               completions/s and of their pickup p99
  throughput   every later interval's completions/s within ±tolerance of the baseline,
               the pressure phase included (a shortfall is work left waiting; an excess
               is a backlog being caught up, so both count)
  p99          every later interval's pickup p99 at most (1 + tolerance) x the baseline's;
               the pressure phase is reported apart and not judged
  flat         with retention on, jobs' total size (heap + indexes) at the phase's last
               interval at most flat_ratio x its size once the retention window had filled
               and been swept (Plan.flat_reference_index)
  accounting   completions counted interval by interval = jobs the producer inserted
               (when the run drained): a job missing there was lost or miscounted
  machine      not judged: how much of each interval tasks waited for a CPU or for I/O,
               over the run and in the intervals over the p99 limit

The drain after the load is counted but never judged.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from boundq.loadtests.soaklife_plan import (
    DRAIN,
    PRESSURE,
    RECOVERY,
    RETENTION_ON,
    WARMUP_INTERVALS,
    Plan,
)


@dataclass
class Verdict:
    passed: bool
    failures: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "failures": self.failures, **self.facts}


def _num(value: Any) -> float | None:
    if value is None or value == "":
        return None
    return float(value)


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.fmean(known) if known else None


def _pct(value: float, base: float) -> str:
    return f"{(value / base - 1) * 100:+.1f}%"


def _mb(value: Any) -> str:
    return f"{(_num(value) or 0) / 2**20:,.1f} MB"


def judge(rows: list[dict[str, Any]], plan: Plan, tolerance: float, flat_ratio: float,
          produced: int, drained: bool, interrupted: bool) -> Verdict:
    load = [r for r in rows if r["phase"] != DRAIN]
    v = Verdict(passed=False)
    first, after = WARMUP_INTERVALS, WARMUP_INTERVALS + plan.baseline_intervals
    base_rows = load[first:after]
    base_tp = _mean([_num(r["completions_per_s"]) for r in base_rows])
    base_p99 = _mean([_num(r["pickup_p99_ms"]) for r in base_rows])
    v.facts["baseline"] = {"intervals": len(base_rows), "completions_per_s": base_tp,
                           "pickup_p99_ms": base_p99}
    if base_tp is None or base_p99 is None or len(base_rows) < plan.baseline_intervals:
        v.failures.append("no baseline: the run ended before its first intervals were read")
        return _finish(v)
    v.lines.append(f"baseline (intervals {first}-{after - 1}, after {first} of warm-up): "
                   f"{base_tp:,.0f} jobs/s, pickup p99 {base_p99:.1f} ms")
    later = load[after:]
    last_rows = load[-plan.baseline_intervals:]
    last_tp = _mean([_num(r["completions_per_s"]) for r in last_rows])
    last_p99 = _mean([_num(r["pickup_p99_ms"]) for r in last_rows])
    v.facts["last"] = {"intervals": len(last_rows), "completions_per_s": last_tp,
                       "pickup_p99_ms": last_p99}
    if last_tp is not None and last_p99 is not None:
        v.lines.append(f"last {len(last_rows)} intervals: {last_tp:,.0f} jobs/s "
                       f"({_pct(last_tp, base_tp)}), pickup p99 {last_p99:.1f} ms "
                       f"({_pct(last_p99, base_p99)})")
    _judge_throughput(v, later, base_tp, tolerance)
    _judge_p99(v, later, base_p99, tolerance)
    _describe_machine(v, load[first:])
    _judge_flat(v, load, plan, flat_ratio)
    _describe_pressure(v, load, base_tp, base_p99, tolerance)
    counted = sum(int(r["completions"]) for r in rows)
    v.facts["accounting"] = {"produced": produced, "counted": counted, "drained": drained}
    if drained and counted != produced:
        v.failures.append(f"completions counted interval by interval ({counted:,}) differ "
                          f"from jobs inserted ({produced:,})")
    elif not drained:
        v.failures.append("the queue did not drain after the load"
                          + (" (interrupted)" if interrupted else ""))
    v.lines.append(f"accounting: {produced:,} jobs inserted, {counted:,} completions counted"
                   + ("" if drained else " (not drained)"))
    if interrupted:
        v.failures.append("interrupted before the planned end")
    return _finish(v)


def _finish(v: Verdict) -> Verdict:
    v.passed = not v.failures
    return v


def _judge_throughput(v: Verdict, later: list[dict[str, Any]], base: float, tol: float
                      ) -> None:
    off = [(r, tp) for r in later if (tp := _num(r["completions_per_s"])) is not None
           and abs(tp / base - 1) > tol]
    worst = max(later, key=lambda r: abs((_num(r["completions_per_s"]) or 0) / base - 1),
                default=None)
    v.facts["throughput"] = {"judged": len(later), "outside": len(off),
                             "outside_intervals": [int(r["interval"]) for r, _ in off]}
    text = f"throughput: {len(later) - len(off)}/{len(later)} intervals within ±{tol:.0%}"
    if worst is not None:
        tp = _num(worst["completions_per_s"]) or 0.0
        text += (f"; furthest {tp:,.0f}/s ({_pct(tp, base)}) at interval "
                 f"{worst['interval']} ({worst['phase']})")
    v.lines.append(text)
    if off:
        phases = sorted({str(r["phase"]) for r, _ in off})
        v.failures.append(f"throughput outside ±{tol:.0%} of the baseline in {len(off)} "
                          f"intervals ({', '.join(phases)})")


def _judge_p99(v: Verdict, later: list[dict[str, Any]], base: float, tol: float) -> None:
    judged = [r for r in later if r["phase"] != PRESSURE]
    over = [r for r in judged if (p := _num(r["pickup_p99_ms"])) is not None
            and p > base * (1 + tol)]
    worst = max(judged, key=lambda r: _num(r["pickup_p99_ms"]) or 0.0, default=None)
    v.facts["p99"] = {"judged": len(judged), "over": len(over),
                      "over_intervals": [int(r["interval"]) for r in over]}
    text = (f"pickup p99 (pressure not judged): {len(judged) - len(over)}/{len(judged)} "
            f"intervals within +{tol:.0%}")
    if worst is not None and _num(worst["pickup_p99_ms"]) is not None:
        p = _num(worst["pickup_p99_ms"]) or 0.0
        text += (f"; worst {p:.1f} ms ({_pct(p, base)}) at interval {worst['interval']} "
                 f"({worst['phase']})")
    v.lines.append(text)
    if over:
        phases = sorted({str(r["phase"]) for r in over})
        v.failures.append(f"pickup p99 above +{tol:.0%} of the baseline in {len(over)} "
                          f"intervals ({', '.join(phases)})")


def _describe_machine(v: Verdict, rows: list[dict[str, Any]]) -> None:
    """The machine's waits beside the p99: a miss in an interval where every task waited
    on the disk is the machine's before it is boundq's."""
    waits = {int(r["interval"]): (cpu, io, _num(r.get("machine_io_stall_max_ms")))
             for r in rows
             if (cpu := _num(r.get("machine_cpu_wait_pct"))) is not None
             and (io := _num(r.get("machine_io_wait_pct"))) is not None}
    if not waits:
        return
    cpus = sorted(w[0] for w in waits.values())
    ios = sorted(w[1] for w in waits.values())
    stalls = sorted(w[2] for w in waits.values() if w[2] is not None)
    over = [i for i in v.facts.get("p99", {}).get("over_intervals", []) if i in waits]
    v.facts["machine"] = {
        "cpu_wait_pct_median": statistics.median(cpus),
        "io_wait_pct_median": statistics.median(ios),
        "io_stall_max_ms_median": statistics.median(stalls) if stalls else None,
        "over_p99": [{"interval": i, "cpu_wait_pct": waits[i][0], "io_wait_pct": waits[i][1],
                      "io_stall_max_ms": waits[i][2]} for i in over]}
    line = (f"machine (not judged): tasks waited for a CPU {cpus[0]:.0f}-{cpus[-1]:.0f}% "
            f"of an interval (median {statistics.median(cpus):.0f}%), for I/O "
            f"{ios[0]:.0f}-{ios[-1]:.0f}% (median {statistics.median(ios):.0f}%)")
    if stalls:
        line += (f"; an interval's worst second had every task waiting on I/O for "
                 f"{stalls[0]:.0f}-{stalls[-1]:.0f} ms (median {statistics.median(stalls):.0f})")
    if over:
        line += "; in the intervals over the p99 limit: " + ", ".join(
            f"{i} (CPU {waits[i][0]:.0f}%, I/O {waits[i][1]:.0f}%"
            + ("" if waits[i][2] is None else f", worst second {waits[i][2]:.0f} ms") + ")"
            for i in over)
    v.lines.append(line)


def _judge_flat(v: Verdict, load: list[dict[str, Any]], plan: Plan, ratio: float) -> None:
    on = [r for r in load if r["phase"] == RETENTION_ON]
    ref_index = plan.flat_reference_index()
    if len(on) < plan.phases[0].intervals or ref_index >= len(on) - 1:
        v.failures.append("table size not judged: the retention-on phase did not complete")
        return
    ref, last = on[ref_index], on[-1]
    ref_b, last_b = _num(ref["jobs_total_bytes"]) or 0.0, _num(last["jobs_total_bytes"]) or 0.0
    peak = max(on[ref_index:], key=lambda r: _num(r["jobs_total_bytes"]) or 0.0)
    rows_ref, rows_last = _num(ref["finished_rows"]) or 0.0, _num(last["finished_rows"]) or 0.0
    growth = last_b / ref_b if ref_b else float("inf")
    v.facts["flat"] = {"reference_interval": int(ref["interval"]), "reference_bytes": ref_b,
                       "last_bytes": last_b, "ratio": growth, "limit": ratio,
                       "peak_bytes": _num(peak["jobs_total_bytes"]),
                       "finished_rows_reference": rows_ref, "finished_rows_last": rows_last}
    v.lines.append(f"jobs with retention on: {_mb(ref_b)} at interval {ref['interval']} -> "
                   f"{_mb(last_b)} at interval {last['interval']} ({growth:.2f}x, limit "
                   f"{ratio:g}x); finished rows {rows_ref:,.0f} -> {rows_last:,.0f}")
    if growth > ratio:
        v.failures.append(f"jobs grew {growth:.2f}x with retention on (limit {ratio:g}x)")


def _describe_pressure(v: Verdict, load: list[dict[str, Any]], base_tp: float,
                       base_p99: float, tol: float) -> None:
    """What the pinned horizon did, and how long the recovery took (reported, the
    throughput judged above, the p99 not)."""
    held = [r for r in load if r["phase"] == PRESSURE]
    after = [r for r in load if r["phase"] == RECOVERY]
    if not held:
        return
    before = load[load.index(held[0]) - 1] if load.index(held[0]) > 0 else held[0]
    tps = [t for r in held if (t := _num(r["completions_per_s"])) is not None]
    p99s = [p for r in held if (p := _num(r["pickup_p99_ms"])) is not None]
    facts: dict[str, Any] = {
        "intervals": len(held),
        "xmin_age_max": max(int(_num(r["xmin_age"]) or 0) for r in held),
        "oldest_xact_s_max": max(_num(r["oldest_xact_s"]) or 0.0 for r in held),
        "completions_per_s_min": min(tps, default=None),
        "completions_per_s_mean": _mean(list(tps)) if tps else None,
        "pickup_p99_ms_max": max(p99s, default=None),
        "waiting_max": max((int(w) for r in held if (w := _num(r["waiting"])) is not None),
                           default=None),
        "jobs_dead_tup_before": _num(before["jobs_dead_tup"]),
        "jobs_dead_tup_end": _num(held[-1]["jobs_dead_tup"]),
        "jobs_total_bytes_before": _num(before["jobs_total_bytes"]),
        "jobs_total_bytes_end": _num(held[-1]["jobs_total_bytes"]),
        "claim_idx_bytes_before": _num(before["jobs_claim_idx_bytes"]),
        "claim_idx_bytes_end": _num(held[-1]["jobs_claim_idx_bytes"]),
        "autovacuums": int((_num(held[-1]["jobs_autovacuum_count"]) or 0)
                           - (_num(before["jobs_autovacuum_count"]) or 0)),
    }
    recovered = next((r for r in after if (p := _num(r["pickup_p99_ms"])) is not None
                      and p <= base_p99 * (1 + tol)
                      and abs((_num(r["completions_per_s"]) or 0) / base_tp - 1) <= tol), None)
    facts["recovered_at_interval"] = int(recovered["interval"]) if recovered else None
    v.facts["pressure"] = facts
    line = (f"pressure ({len(held)} intervals, xmin age up to {facts['xmin_age_max']:,}, "
            f"oldest transaction {facts['oldest_xact_s_max']:.0f} s): ")
    if tps:
        line += (f"throughput min {min(tps):,.0f}/s ({_pct(min(tps), base_tp)}), ")
    if p99s:
        line += f"pickup p99 up to {max(p99s):.1f} ms ({_pct(max(p99s), base_p99)}), "
    line += (f"jobs dead tuples {facts['jobs_dead_tup_before'] or 0:,.0f} -> "
             f"{facts['jobs_dead_tup_end'] or 0:,.0f}, jobs {_mb(facts['jobs_total_bytes_before'])}"
             f" -> {_mb(facts['jobs_total_bytes_end'])}, claim index "
             f"{_mb(facts['claim_idx_bytes_before'])} -> {_mb(facts['claim_idx_bytes_end'])}, "
             f"{facts['autovacuums']} autovacuums of jobs meanwhile")
    v.lines.append(line)
    if after:
        v.lines.append("recovery: " + (
            f"throughput and p99 back within ±{tol:.0%} at interval {recovered['interval']}"
            if recovered else f"not back within ±{tol:.0%} by the end of the run"))
