"""Instrumented fault points for the fault tests (invariants/): off unless asked for.

BOUNDQ_CRASH_AT (read once, at import) names comma-separated crash points; when the worker
reaches a named point with `when` true, the process SIGKILLs itself there, so a test can
crash a worker exactly after a claim, after a handler's effect, or after a commit.

    after_claim   the claim statement returned rows (leases held, no handler started)
    after_effect  a handler returned success, its completion not yet submitted
    after_commit  a completion batch committed, the worker not yet told its waiters

BOUNDQ_LOSE_ANSWER (also read once) names one answer to lose, once per process:

    claim         a claiming statement committed and claimed rows, and its answer is lost
                  (the connection breaks before it arrives), after BOUNDQ_LOSE_ANSWER_HOLD_S
                  seconds of silence (a partition that outlasts the lease)
"""

from __future__ import annotations

import asyncio
import os
import signal

import psycopg

POINTS = ("after_claim", "after_effect", "after_commit")

_ARMED = frozenset(p.strip() for p in os.environ.get("BOUNDQ_CRASH_AT", "").split(",") if p.strip())
_LOSE = {p.strip() for p in os.environ.get("BOUNDQ_LOSE_ANSWER", "").split(",") if p.strip()}
_HOLD_S = float(os.environ.get("BOUNDQ_LOSE_ANSWER_HOLD_S", "0") or 0)


def crash_point(name: str, when: bool = True) -> None:
    """SIGKILL this process when `name` is armed and `when` holds; otherwise nothing."""
    if _ARMED and when and name in _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)


async def lose_answer(name: str, when: bool = True) -> None:
    """Raise a connection error as if the statement's answer were lost (once)."""
    if _LOSE and when and name in _LOSE:
        _LOSE.discard(name)
        if _HOLD_S:
            await asyncio.sleep(_HOLD_S)
        raise psycopg.OperationalError(f"injected fault: the answer of a {name} was lost")
