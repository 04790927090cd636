"""The heartbeater: extends every lease this process holds in one statement, on a
connection of its own, and cancels the tasks of leases it finds lost (self-fencing).

It marks a lease lost only for a job still running: a job whose outcome waits in the
outbox may have completed between the heartbeat's look at the ledger and its UPDATE, and
for those the completion's own result decides (written, or fenced and reported so).

A heartbeat has a deadline of one heartbeat period: a statement stuck on a dead socket is
abandoned and the next one goes out on a fresh connection, and after a failure the loop
retries within a fraction of a second (its backoff is capped well below the period), so
once PostgreSQL accepts connections again the leases are extended at once. With the
reaper judging leases by the database's clock, an outage of D seconds costs no lease when
D + (the time to reconnect) < LEASE_SECONDS - HEARTBEAT_SECONDS.
"""

from __future__ import annotations

import logging

from boundq.core import queue
from boundq.core.claim import Claim
from boundq.core.lanes import Lane
from boundq.core.ledger import Ledger
from boundq.core.loops import BackgroundLoop, LoopSettings
from boundq.core.metrics import Metrics

log = logging.getLogger("boundq.worker")


def heartbeat_deadline(heartbeat_s: float, lease_s: float) -> float:
    """How long one heartbeat statement may take before its connection is given up: a
    period, but at least a second (a busy machine is not a dead socket) unless that would
    eat more than a third of the lease."""
    return max(heartbeat_s, min(1.0, lease_s / 3))


def heartbeat_loop_settings(heartbeat_s: float) -> LoopSettings:
    """A beat every period; after a failure, retries quickly (at most a quarter period,
    at most 0.5 s) so a recovered database hears from this process at once."""
    return LoopSettings(heartbeat_s, jitter=0.1, backoff_base_s=min(0.05, heartbeat_s / 8),
                        backoff_max_s=min(0.5, heartbeat_s / 4))


class Heartbeater(BackgroundLoop):
    name = "heartbeat"

    def __init__(self, settings: LoopSettings, lane: Lane, ledger: Ledger, metrics: Metrics,
                 owner: str, lease_s: float, deadline_s: float) -> None:
        super().__init__(settings, metrics)
        self.metrics: Metrics = metrics
        self.lane = lane
        self.ledger = ledger
        self.owner = owner
        self.lease_s = lease_s
        self.deadline_s = deadline_s

    async def run_once(self) -> int:
        async with self.ledger.write_lock:
            held = [c for c in self.ledger.claims.values() if not c.lost]
            if not held:
                return 0
            async with self.lane.connection(self.deadline_s) as conn:
                alive = await queue.heartbeat(conn, self.owner, [c.key for c in held],
                                              self.lease_s)
            for claim in held:
                # A finished claim may have completed meanwhile: its write decides.
                if claim.id not in alive and not claim.finished:
                    self._lose(claim)
        return len(held)

    def _lose(self, claim: Claim) -> None:
        claim.lost = True
        self.metrics.lost_leases += 1
        log.warning("lease lost: job %d attempt %d (reaped, cancelled or re-claimed)", claim.id,
                    claim.attempt, extra={"job_id": claim.id, "attempt": claim.attempt})
        if claim.task is not None:
            claim.task.cancel()  # self-fence: stop work whose result would be dropped
