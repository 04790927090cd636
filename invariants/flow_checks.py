"""The flow-control invariants, judged from the attempts' own timestamps and the record of
every limit change (job_limit_changes):

- queue_concurrency_bound: at the instant any attempt of a queue (or a kind) with a
  concurrency limit was claimed, no more than that many attempts of it were running; a
  paused queue or kind starts nothing.
- rate_limit_respected: in any window of length w, no more than burst + rate_per_s x w
  attempts of a rate-limited queue (or kind) started.

A change is saved at `changed_at` (its transaction's start) and stamped `effective_at` once
it committed: a claim that began after effective_at obeys it, one that began before
changed_at obeyed the earlier settings, and one in between may have obeyed either, so
claims in that bracket are judged by neither era. Jobs that started while no limit held
(or in a bracket) were claimed without the limit's lock; a limited claim may not have seen
them yet, so they are left out of the count. Every other running attempt counts:
the limited claims take turns under the row lock, each sees all before it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

QUEUE_CONCURRENCY_BOUND = "queue_concurrency_bound"
RATE_LIMIT_RESPECTED = "rate_limit_respected"
FLOW_INVARIANTS = (QUEUE_CONCURRENCY_BOUND, RATE_LIMIT_RESPECTED)

# Timestamps are microseconds; the bucket's arithmetic is floating point.
_EPSILON = 1e-6


@dataclass(frozen=True, slots=True)
class LimitChange:
    """One row of job_limit_changes."""

    id: int
    scope: str  # queue | kind
    name: str
    concurrency: int | None
    rate_per_s: float | None
    burst: int
    paused: bool
    changed_at: datetime
    effective_at: datetime | None


@dataclass(frozen=True, slots=True)
class Start:
    """An attempt as these checks need it: what it belongs to and when it ran."""

    job_id: int
    attempt: int
    queue: str
    kind: str
    claimed_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, slots=True)
class Era:
    """Settings that governed claims beginning in (start, end); start None: never."""

    change: LimitChange
    start: datetime | None
    end: datetime | None

    def governs(self, at: datetime) -> bool:
        return (self.start is not None and at > self.start
                and (self.end is None or at < self.end))

    @property
    def limited(self) -> bool:
        c = self.change
        return c.paused or c.concurrency is not None or c.rate_per_s is not None


Report = Callable[[str, Sequence[int], str], None]


def eras(changes: Sequence[LimitChange]) -> dict[tuple[str, str], list[Era]]:
    """Per (scope, name), its changes in order as eras: each from its effective_at to the
    next one's changed_at (a change never stamped governs nothing)."""
    by_target: dict[tuple[str, str], list[LimitChange]] = defaultdict(list)
    for c in sorted(changes, key=lambda c: c.id):
        by_target[(c.scope, c.name)].append(c)
    out: dict[tuple[str, str], list[Era]] = {}
    for target, items in by_target.items():
        out[target] = [Era(c, c.effective_at, nxt.changed_at if nxt else None)
                       for c, nxt in zip(items, [*items[1:], None], strict=True)]
    return out


def check_flow(changes: Sequence[LimitChange], starts: Sequence[Start], bad: Report) -> None:
    for (scope, name), target_eras in eras(changes).items():
        mine = [s for s in starts if (s.queue if scope == "queue" else s.kind) == name]
        if not mine:
            continue
        governed = [s for s in mine if _era_of(target_eras, s.claimed_at, limited=True)]
        _concurrency(scope, name, target_eras, governed, bad)
        _rate(scope, name, target_eras, governed, bad)


def _era_of(target_eras: Sequence[Era], at: datetime, *, limited: bool) -> Era | None:
    for era in target_eras:
        if era.governs(at) and (era.limited or not limited):
            return era
    return None


def _concurrency(scope: str, name: str, target_eras: Sequence[Era], governed: Sequence[Start],
                 bad: Report) -> None:
    """A sweep over the governed attempts' starts and ends (ends at an instant come before
    starts at it; the starts of one instant, one claim's, count together)."""
    events: dict[datetime, tuple[list[Start], list[Start]]] = defaultdict(lambda: ([], []))
    for s in governed:
        events[s.claimed_at][1].append(s)
        if s.finished_at is not None:
            events[s.finished_at][0].append(s)
    live: set[tuple[int, int]] = set()
    for at in sorted(events):
        ends, begins = events[at]
        live.difference_update((e.job_id, e.attempt) for e in ends)
        live.update((b.job_id, b.attempt) for b in begins)
        era = _era_of(target_eras, at, limited=True) if begins else None
        if era is None:
            continue
        c = era.change
        if c.paused:
            bad(QUEUE_CONCURRENCY_BOUND, [b.job_id for b in begins],
                f"{len(begins)} attempts of {scope} {name!r} started at {at} while it was "
                f"paused (change {c.id}, effective {c.effective_at})")
        elif c.concurrency is not None and len(live) > c.concurrency:
            bad(QUEUE_CONCURRENCY_BOUND, sorted({job_id for job_id, _ in live}),
                f"{len(live)} attempts of {scope} {name!r} running at {at}; "
                f"concurrency={c.concurrency} (change {c.id})")


def _rate(scope: str, name: str, target_eras: Sequence[Era], governed: Sequence[Start],
          bad: Report) -> None:
    by_era: dict[int, list[Start]] = defaultdict(list)
    settings: dict[int, LimitChange] = {}
    for s in governed:
        era = _era_of(target_eras, s.claimed_at, limited=True)
        assert era is not None
        if era.change.rate_per_s is not None:
            by_era[era.change.id].append(s)
            settings[era.change.id] = era.change
    for change_id, items in by_era.items():
        c = settings[change_id]
        assert c.rate_per_s is not None
        items.sort(key=lambda s: s.claimed_at)
        times = [s.claimed_at.timestamp() for s in items]
        # The densest window ending at the b-th start: max over a <= b of
        # (b - a + 1) - rate x (t_b - t_a); keep the best a as b moves (O(n)).
        best_a, best_val = 0, float("-inf")
        for b, t_b in enumerate(times):
            val = c.rate_per_s * times[b] - b
            if val > best_val:
                best_a, best_val = b, val
            count = b - best_a + 1
            allowed = c.burst + c.rate_per_s * (t_b - times[best_a]) + _EPSILON
            if count > allowed:
                window = items[best_a:b + 1]
                bad(RATE_LIMIT_RESPECTED, sorted({s.job_id for s in window}),
                    f"{count} attempts of {scope} {name!r} started in "
                    f"{t_b - times[best_a]:.6f} s from {items[best_a].claimed_at}; "
                    f"burst={c.burst} rate_per_s={c.rate_per_s:g} allow {allowed:.3f} "
                    f"(change {c.id})")
                return
