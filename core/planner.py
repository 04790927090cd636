"""Which queues a claim takes from, how many from each, and by which path.

A worker serves every queue that has runnable jobs (or only those named in QUEUES). The
scout (core/housekeeping.py) refreshes that set every poll interval with a skip scan of
the claim index, together with the flow settings (core/flow.py): weights, pauses, and
which queues and kinds have limits. A claim of n jobs is split across the queues by
weight with carried credit (largest remainder), so over many claims each queue's share
of claims, and of completions once the pipeline is full, follows its weight share; no
queue starves, because every queue in the set earns credit on every claim.

Queues without limits are claimed by the cycle's one statement (job_complete_and_claim);
queues with a limit, and every queue while some kind has one, by boundq_claim_limited,
one call per queue, after it. Either way the database decides: the planner's view of the
settings may be a poll interval old, and a stale view only costs a claim that comes back
short.

Aging: a tenth of each queue's claims (carried credit again) take the queue's
longest-waiting runnable jobs whatever their priority; the rest follow priority. So a job
is claimed at the latest once the queue has made AGING_EVERY times as many claims as
there were runnable jobs ahead of it in arrival (run_at) order: a stream of high
priorities delays a low one by at most that factor, never forever.

A queue that returns fewer jobs than it was asked for is marked dry and left out of the
next plans, so its share goes to queues that have work; dry marks are cleared when the
scout refreshes the set, a LISTEN notification says new jobs arrived, or (for a limited
queue) this worker finished one of its jobs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from boundq.core.validation import DEFAULT_QUEUE

# One claim in this many takes the oldest job of its queue, whatever its priority.
AGING_EVERY = 10

ClaimPlan = list[tuple[str, int]]


@dataclass(frozen=True, slots=True)
class FlowView:
    """What the planner knows of the flow settings (core/flow.py planner_news)."""

    weights: Mapping[str, int] = field(default_factory=dict)
    paused: frozenset[str] = frozenset()
    limited: frozenset[str] = frozenset()
    kinds_limited: bool = False


@dataclass(frozen=True, slots=True)
class Split:
    """A plan cut by path: `fast` goes in the cycle's statement, `limited` after it."""

    fast: ClaimPlan
    limited: ClaimPlan
    oldest: dict[str, int]

    @property
    def total(self) -> int:
        return sum(n for _, n in self.fast) + sum(n for _, n in self.limited)

    def queues(self) -> ClaimPlan:
        return self.fast + self.limited


class QueuePlanner:
    def __init__(self, only: Sequence[str] = ()) -> None:
        self.only = frozenset(only)  # QUEUES: serve these and no other (empty = all)
        self.weights: dict[str, int] = {q: 1 for q in (only or [DEFAULT_QUEUE])}
        self.flow = FlowView()
        self.dry: set[str] = set()
        self._credit: dict[str, float] = {}
        self._planned: dict[str, int] = {}  # claims planned per queue (the aging lane)

    def serves(self, queue: str) -> bool:
        return not self.only or queue in self.only

    def refresh(self, waiting: Iterable[str], flow: FlowView | None = None) -> None:
        """The scout's news: queues with runnable jobs and the flow settings. Queues seen
        before stay known (a claim tells when they run dry)."""
        if flow is not None:
            self.flow = flow
        known = dict(self.weights)
        for name in waiting:
            if self.serves(name):
                known.setdefault(name, 1)
        for name in known:
            known[name] = max(1, int(self.flow.weights.get(name, 1)))
        self.weights = known
        self.dry.clear()

    def wake(self, queues: Iterable[str] | None = None) -> None:
        """New jobs arrived (or, for limited queues, a job of theirs finished here): those
        queues, or every known queue, may have work again."""
        if queues is None:
            self.dry.clear()
        else:
            self.dry.difference_update(queues)

    def active(self) -> list[str]:
        names = [q for q in self.weights if q not in self.flow.paused]
        ready = [q for q in names if q not in self.dry]
        return ready or names

    def plan(self, n: int) -> ClaimPlan:
        """Split n claims across the active queues by weight."""
        names = self.active()
        if n <= 0 or not names:
            return []
        if len(names) == 1:
            return [(names[0], n)]
        total = sum(self.weights[q] for q in names)
        shares: dict[str, int] = {}
        for q in names:
            credit = self._credit.get(q, 0.0) + n * self.weights[q] / total
            shares[q] = int(credit)
            self._credit[q] = credit
        left = n - sum(shares.values())
        for q in sorted(names, key=lambda q: self._credit[q] - shares[q], reverse=True)[:left]:
            shares[q] += 1
        for q in names:
            self._credit[q] -= shares[q]
        return [(q, k) for q, k in shares.items() if k > 0]

    def split(self, n: int) -> Split:
        """plan(n), cut by path, with each queue's aging-lane share."""
        fast: ClaimPlan = []
        limited: ClaimPlan = []
        oldest: dict[str, int] = {}
        for q, k in self.plan(n):
            before = self._planned.get(q, 0)  # every AGING_EVERY-th claim of the queue
            self._planned[q] = before + k
            aged = (before + k) // AGING_EVERY - before // AGING_EVERY
            if aged:
                oldest[q] = aged
            if self.flow.kinds_limited or q in self.flow.limited:
                limited.append((q, k))
            else:
                fast.append((q, k))
        return Split(fast, limited, oldest)

    def claimed(self, plan: ClaimPlan, got: Mapping[str, int]) -> bool:
        """Record a claim's result; True when some queue gave all it was asked for (it
        may have more)."""
        full = False
        for q, asked in plan:
            if got.get(q, 0) < asked:
                self.dry.add(q)
            else:
                full = True
        return full

    def limited(self, queue: str) -> bool:
        return self.flow.kinds_limited or queue in self.flow.limited
