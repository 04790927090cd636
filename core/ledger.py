"""What a worker process holds: its claims, the outbox of outcomes not yet written, and
the statements whose answer was lost.

- `claims`: every attempt this process owns, by (id, attempt), from its claim until its
  outcome is written (or its lease is found lost); the heartbeat extends their leases.
- the outbox: a job task puts its outcome and its permit here and ends; a claim loop
  takes everything waiting in one step (no await between look and take, so two loops
  never share an outcome), writes it, and passes the permits on.
- `ambiguous`: cycles whose statement may or may not have committed (the connection
  broke before the answer came). Their outcomes and permits stay here, counted, until a
  reconciliation reads what the database says this owner holds (core/cycler.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from boundq.core.claim import Claim
from boundq.core.permits import Grant, Permit
from boundq.core.queue import Outcome
from boundq.core.states import AttemptOutcome

# One submitted outcome: the claim, its outcome and the job's permit.
Pending = tuple[Claim, Outcome, Permit]


@dataclass
class Ambiguity:
    """A cycle whose statement's answer was lost: the successes it was writing and every
    permit it held (theirs and those it took for claims)."""

    successes: list[Pending]
    grant: Grant


@dataclass
class Ledger:
    claims: dict[tuple[int, int], Claim] = field(default_factory=dict)
    pending: list[Pending] = field(default_factory=list)
    writing: int = 0  # outcomes taken by a claim loop and not yet settled or put back
    ambiguous: list[Ambiguity] = field(default_factory=list)
    # Wakes one idle claim loop when an outcome arrives (set by the worker).
    on_put: Callable[[], None] | None = None
    # Orders heartbeats with shutdown releases (both read and write the held set).
    write_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Set whenever a write settles outcomes: a shutdown waits on it for the outbox to empty.
    settled_event: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self, claim: Claim) -> None:
        self.claims[claim.key] = claim

    def discard(self, claim: Claim) -> None:
        self.claims.pop(claim.key, None)

    def put(self, item: Pending) -> None:
        item[0].finish()  # consumes the claim: reporting an attempt twice raises
        self.pending.append(item)
        if self.on_put is not None:
            self.on_put()

    def take(self, n: int) -> tuple[list[Pending], list[Pending]]:
        """Up to n waiting outcomes, split into (successes, failures)."""
        batch = self.pending[:n]
        del self.pending[:n]
        self.writing += len(batch)
        successes = [p for p in batch if p[1].outcome is AttemptOutcome.SUCCESS]
        failures = [p for p in batch if p[1].outcome is not AttemptOutcome.SUCCESS]
        return successes, failures

    def put_back(self, items: list[Pending]) -> None:
        """A write failed before it could have committed anything: first in line again."""
        self.writing -= len(items)
        self.requeue(items)

    def requeue(self, items: list[Pending]) -> None:
        self.pending[0:0] = items

    def settled(self, items: list[Pending]) -> None:
        """A write took these and ended (committed or fenced): they are not ours any more."""
        self.writing -= len(items)
        self.forget(items)

    def forget(self, items: list[Pending]) -> None:
        for claim, _, _ in items:
            self.claims.pop(claim.key, None)
        self.settled_event.set()

    async def wait_written(self, timeout_s: float) -> bool:
        """Until every outcome is written (True) or the time is up (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.unwritten:
            self.settled_event.clear()
            left = deadline - loop.time()
            if left <= 0:
                return False
            try:
                async with asyncio.timeout(left):
                    await self.settled_event.wait()
            except TimeoutError:
                return not self.unwritten
        return True

    def hold_ambiguous(self, successes: list[Pending], grant: Grant) -> None:
        self.writing -= len(successes)
        self.ambiguous.append(Ambiguity(successes, grant))

    def drop_pending(self) -> list[Pending]:
        """Everything waiting (not what a write has already taken)."""
        items, self.pending = self.pending, []
        return items

    @property
    def unwritten(self) -> int:
        """Outcomes not yet written: waiting, being written, or awaiting reconciliation."""
        return len(self.pending) + self.writing + sum(len(a.successes) for a in self.ambiguous)

    def __len__(self) -> int:
        return len(self.claims)
