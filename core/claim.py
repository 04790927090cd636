"""A claimed job: the ownership token handed to exactly one task.

The database fences stale copies (id, attempt, owner); in-process, finishing a Claim
consumes it, so reporting one attempt twice raises instead of writing twice.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from boundq.core.errors import ClaimAlreadyFinished


class Claim:
    __slots__ = ("_finished", "attempt", "claimed_at", "created_at", "id", "kind", "lost",
                 "owner", "payload", "queue", "run_at", "task", "timeout_s", "waited_s")

    def __init__(self, id: int, attempt: int, kind: str, payload: Any, timeout_s: float | None,
                 owner: str, waited_s: float = 0.0, queue: str = "default",
                 run_at: datetime | None = None, created_at: datetime | None = None,
                 claimed_at: datetime | None = None) -> None:
        self.id = id
        self.attempt = attempt
        self.kind = kind
        self.payload = payload
        self.timeout_s = timeout_s
        self.owner = owner
        self.waited_s = waited_s
        self.queue = queue
        self.run_at = run_at
        self.created_at = created_at
        self.claimed_at = claimed_at
        self.lost = False  # the heartbeat found the job no longer ours
        self.task: asyncio.Task[None] | None = None
        self._finished = False

    @property
    def key(self) -> tuple[int, int]:
        return (self.id, self.attempt)

    @property
    def finished(self) -> bool:
        return self._finished

    def finish(self) -> None:
        """Consume the claim; a second call raises ClaimAlreadyFinished."""
        if self._finished:
            raise ClaimAlreadyFinished(f"job {self.id} attempt {self.attempt} already finished")
        self._finished = True

    def __repr__(self) -> str:
        return f"Claim(id={self.id}, attempt={self.attempt}, kind={self.kind!r})"
