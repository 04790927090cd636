"""Instrumented crash points for the fault tests (invariants/): off unless asked for.

BOUNDQ_CRASH_AT (read once, at import) names comma-separated points; when the worker
reaches a named point with `when` true, the process SIGKILLs itself there, so a test can
crash a worker exactly after a claim, after a handler's effect, or after a commit.

    after_claim   the claim statement returned rows (leases held, no handler started)
    after_effect  a handler returned success, its completion not yet submitted
    after_commit  a completion batch committed, the worker not yet told its waiters
"""

from __future__ import annotations

import os
import signal

POINTS = ("after_claim", "after_effect", "after_commit")

_ARMED = frozenset(p.strip() for p in os.environ.get("BOUNDQ_CRASH_AT", "").split(",") if p.strip())


def crash_point(name: str, when: bool = True) -> None:
    """SIGKILL this process when `name` is armed and `when` holds; otherwise nothing."""
    if _ARMED and when and name in _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
