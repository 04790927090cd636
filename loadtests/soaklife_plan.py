"""What a soak-life run will do, decided before it starts: its options, its phases laid on
a grid of measured intervals, and the settings of the worker processes in each phase.

The default run is an hour of one-minute intervals:

  retention-on   20 min  RETENTION_SECONDS = FAILED_RETENTION_SECONDS = 2 intervals
  retention-off  20 min  the workers restarted without retention: history grows
  pressure       10 min  an idle-in-transaction session pins the xmin horizon
  recovery       10 min  the session released

Other lengths scale these shares (1/3, 1/3, 1/6, 1/6 of the intervals). `--quick` is a
fixed plan of 24 one-second intervals at a fixed rate, without calibration, for the test
(quick).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RETENTION_ON = "retention-on"
RETENTION_OFF = "retention-off"
PRESSURE = "pressure"
RECOVERY = "recovery"
DRAIN = "drain"
PHASES = (RETENTION_ON, RETENTION_OFF, PRESSURE, RECOVERY)

# The retention sweeper of every worker process runs every 5 s (jitter 30 %) while its
# batches come back short: rows may outlive RETENTION_SECONDS by this much.
SWEEP_PERIOD_MAX_S = 6.5
# The first five minutes of the default run are its baseline, after its first interval:
# the workers' first claims, cold caches and the producer's first ticks are not judged.
BASELINE_SHARE = 5 / 60
WARMUP_INTERVALS = 1


class PlanError(ValueError):
    """Options that make no run (the message names the option)."""


@dataclass
class SoakOptions:
    minutes: float = 60.0
    interval_s: float = 60.0
    quick: bool = False
    rate: float | None = None  # jobs/s offered; None = load_share x the calibrated capacity
    load_share: float = 0.5
    job_ms: int = 0  # 0: noop jobs; else `sleep` jobs of this many ms
    fail_share: float = 0.01  # of the jobs, `fail` ones (dead letters at once)
    calibration_jobs: int = 30_000
    retention_s: float | None = None  # None: two intervals
    num_workers: int = 3
    max_concurrent_jobs: int = 200
    processes: int = 1  # `boundq worker` processes (each its own process group)
    tolerance: float = 0.10  # throughput and p99 within this share of the baseline
    flat_ratio: float = 1.2  # table size with retention on: last <= this x the reference
    drain_timeout_s: float = 300.0
    waiting_deadline_s: float = 0.25  # the count of `new` rows per interval (soaklife_sample)
    out_root: Path = Path("reports/runs")
    database_url: str | None = None
    figures: bool = True
    worker_env: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["out_root"] = str(self.out_root)
        out.pop("database_url", None)
        return out


# The quick form's load when no --rate is given: well under what one worker process
# drains on a busy 2-core machine, so its phases are about history, not a backlog.
QUICK_RATE = 200.0
# Its phases: retention-on long enough for the retention window (5 s) to fill and be swept
# (6.5 s) and then be checked over a few intervals; the others as short as their readings.
QUICK_COUNTS = (15, 3, 3, 3)


def quick(o: SoakOptions) -> SoakOptions:
    """The test's form: 24 one-second intervals, retention 5 s, QUICK_RATE jobs/s unless
    a rate is given (no calibration: on a shared machine it would measure the neighbours,
    and its backlog would cost more time than the run)."""
    o.quick, o.interval_s, o.minutes = True, 1.0, sum(QUICK_COUNTS) / 60
    if o.rate is None:
        o.rate = QUICK_RATE
    if o.retention_s is None:
        o.retention_s = 5.0
    # Its tables are small and its intervals a second long: the count of waiting rows
    # slows nothing there, and the test wants every interval's.
    o.waiting_deadline_s = 5.0
    return o


@dataclass(frozen=True)
class Phase:
    name: str
    first: int  # index of its first interval
    intervals: int
    retention: bool  # the workers run with RETENTION_SECONDS set

    @property
    def end(self) -> int:
        return self.first + self.intervals


@dataclass(frozen=True)
class Plan:
    interval_s: float
    phases: tuple[Phase, ...]
    retention_s: float
    baseline_intervals: int
    settle_s: float  # an interval is read this long after it ends (commits in flight land)

    @property
    def intervals(self) -> int:
        return self.phases[-1].end

    @property
    def seconds(self) -> float:
        return self.intervals * self.interval_s

    def phase_of(self, index: int) -> Phase:
        for phase in self.phases:
            if phase.first <= index < phase.end:
                return phase
        raise IndexError(index)

    def starts(self, index: int) -> Phase | None:
        """The phase whose first interval is `index`, if one is."""
        return next((p for p in self.phases if p.first == index), None)

    def flat_reference_index(self) -> int:
        """The retention-on interval whose end first comes after the retention window
        filled and was swept once: its size is what the rest of the phase is held to."""
        wanted = self.retention_s + SWEEP_PERIOD_MAX_S
        index = max(0, math.ceil(wanted / self.interval_s) - 1)
        return min(index, self.phases[0].end - 1)

    def as_dict(self) -> dict[str, Any]:
        return {"interval_s": self.interval_s, "retention_s": self.retention_s,
                "baseline_intervals": self.baseline_intervals, "settle_s": self.settle_s,
                "phases": [asdict(p) for p in self.phases]}


def _lay(counts: list[int]) -> tuple[Phase, ...]:
    phases, first = [], 0
    for name, n in zip(PHASES, counts, strict=True):
        phases.append(Phase(name, first, n, retention=name == RETENTION_ON))
        first += n
    return tuple(phases)


def make_plan(o: SoakOptions) -> Plan:
    if o.interval_s <= 0:
        raise PlanError("--interval must be positive")
    if not 0 < o.load_share <= 1:
        raise PlanError("--load-share must be in (0, 1]")
    if o.rate is not None and o.rate <= 0:
        raise PlanError("--rate must be positive")
    if not 0 <= o.fail_share < 1:
        raise PlanError("--fail-share must be in [0, 1)")
    settle = min(5.0, o.interval_s / 4)
    if o.quick:
        counts = list(QUICK_COUNTS)
    else:
        n = round(o.minutes * 60 / o.interval_s)
        if n < 12:
            raise PlanError(f"--minutes {o.minutes:g} at --interval {o.interval_s:g}s gives "
                            f"{n} intervals; at least 12 are needed")
        side = max(2, round(n / 6))
        on = (n - 2 * side + 1) // 2
        counts = [on, n - 2 * side - on, side, side]
    retention = o.retention_s if o.retention_s is not None else 2 * o.interval_s
    # Completions are counted from finished rows: none may be deleted before its interval
    # is read (an interval, the settle time, and room for a late reading).
    if retention < o.interval_s + settle + 2.0:
        raise PlanError(f"--retention {retention:g}s: must be at least an interval plus "
                        f"{settle + 2.0:g}s, or rows are deleted before they are counted")
    total = sum(counts)
    baseline = max(2, round(total * BASELINE_SHARE))
    return Plan(o.interval_s, _lay(counts), retention,
                min(baseline, counts[0] - WARMUP_INTERVALS), settle)
