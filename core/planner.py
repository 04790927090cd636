"""Which queues a claim takes from, and how many from each.

A worker serves every queue that has runnable jobs (or only those named in QUEUES). The
scout (core/maintenance.py) refreshes that set every poll interval with a skip scan of
the claim index. A claim of n jobs is split across the queues by weight with carried
credit (largest remainder), so over many claims each queue's share of claims, and of
completions once the pipeline is full, follows its weight share; no queue starves,
because every queue in the set earns credit on every claim.

A queue that returns fewer jobs than it was asked for is marked dry and left out of the
next plans, so its share goes to queues that have work; dry marks are cleared when the
scout refreshes the set or a LISTEN notification says new jobs arrived.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from boundq.core.validation import DEFAULT_QUEUE

ClaimPlan = list[tuple[str, int]]


class QueuePlanner:
    def __init__(self, only: Sequence[str] = ()) -> None:
        self.only = frozenset(only)  # QUEUES: serve these and no other (empty = all)
        self.weights: dict[str, int] = {q: 1 for q in (only or [DEFAULT_QUEUE])}
        self.paused: frozenset[str] = frozenset()
        self.dry: set[str] = set()
        self._credit: dict[str, float] = {}

    def serves(self, queue: str) -> bool:
        return not self.only or queue in self.only

    def refresh(self, waiting: Iterable[str], weights: Mapping[str, int] | None = None,
                paused: Iterable[str] = ()) -> None:
        """The scout's news: queues with runnable jobs, their weights, the paused ones.
        Queues seen before stay known (a claim tells when they run dry)."""
        known = dict(self.weights)
        for name in waiting:
            if self.serves(name):
                known.setdefault(name, 1)
        for name, weight in (weights or {}).items():
            if name in known:
                known[name] = max(1, int(weight))
        self.weights = known
        self.paused = frozenset(paused)
        self.dry.clear()

    def wake(self) -> None:
        """New jobs arrived somewhere: every known queue may have work again."""
        self.dry.clear()

    def active(self) -> list[str]:
        names = [q for q in self.weights if q not in self.paused]
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
