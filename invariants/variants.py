"""The queues the harness runs: boundq itself, and the broken variants of the self-test.

A variant says how to start its worker process, what to change in its own cloned
database, which libpq options its workers connect with, which reaper the harness's
"advance the reaper" rule runs, and (for a broken one) which invariants must catch it.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from boundq.core import queue
from invariants.broken_worker import reap_fetch_then_update
from invariants.checker import (
    BOUNDED_CONCURRENCY,
    DEPENDENCY_ORDER,
    EXACTLY_ONCE_CHAIN,
    EXACTLY_ONCE_EFFECT,
    NO_LOST_JOB,
    ONE_JOB_PER_TICK,
    ONE_TERMINAL,
    SINGLE_OWNER,
)
from invariants.flow_checks import QUEUE_CONCURRENCY_BOUND

# A broken variant's database drops the last guard so the bug reaches the history (the
# trigger refuses illegal moves of terminal rows; with it, several of these bugs would show
# up as worker errors rather than as wrong histories).
DROP_TRANSITION_GUARD = "DROP TRIGGER IF EXISTS jobs_legal_transition ON jobs"

# A plan PostgreSQL 15 picks for `IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)` under some
# cost and statistics conditions: a nested-loop semi join that re-runs the locking subquery
# for each outer row, so every re-run locks new rows and the UPDATE takes far more than n.
# With default costs on our small tables PostgreSQL hashes the subquery (runs it once),
# so the variant pins the bad plan; what is tested is that the harness notices over-claim
# whenever it happens.
RESCAN_PLAN = ("-c enable_hashjoin=off -c enable_hashagg=off -c enable_material=off "
               "-c enable_sort=off -c enable_mergejoin=off")

# The flow variants start with a limit of one running job on the queue most jobs use,
# recorded as a change the checker reads (as PUT /queues/default would save it): any two
# claims that both see room break it.
LIMIT_DEFAULT_QUEUE = (
    "INSERT INTO job_queues (name, concurrency) VALUES ('default', 1)",
    "INSERT INTO job_limit_changes (scope, name, concurrency, burst, paused, changed_at, "
    "effective_at) VALUES ('queue', 'default', 1, 1, false, now(), clock_timestamp())",
)

# The dependency trigger (migration 0008) releasing a parent's children whatever way the
# parent ended: the children of a failed or cancelled parent run.
UNBLOCK_ON_ANY_END = (
    """CREATE OR REPLACE FUNCTION boundq_settle_dependants() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE jobs AS c
        SET blocked_by = c.blocked_by - 1,
            status = CASE WHEN c.blocked_by > 1 THEN 'blocked'::job_status
                          ELSE 'new'::job_status END,
            updated_at = now()
        FROM job_dependencies AS d
        WHERE d.parent_id = NEW.id AND c.id = d.child_id AND c.status = 'blocked';
        RETURN NULL;
    END;
    $$""",
)

# A worker whose clock runs ten minutes fast (handed only to worker_clock_leases's lease
# math: see Variant.options).
SKEWED_CLOCK_S = 600.0

Reaper = Callable[[Any], Awaitable[dict[int, str]]]


async def _core_reap(conn: Any) -> dict[int, str]:
    return await queue.reap_expired(conn)


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    broken: bool = False
    expected: frozenset[str] = field(default_factory=frozenset)
    db_prepare: tuple[str, ...] = ()
    libpq_options: str = ""
    reaper: Reaper = _core_reap
    # Workers every example starts with, (MAX_CONCURRENT_JOBS, clock skew in seconds),
    # instead of drawn ones: a bug that needs claims side by side needs at least two
    # claimers from the start, and one that needs a wrong clock needs one that has it.
    start_workers: tuple[tuple[int, float], ...] = ()
    # A snapshot held from the first step, and at the drain a job backfilled below the
    # claim floors: a bug in how claims find such a job shows as a job never run.
    straggler_at_drain: bool = False
    # Every example opens with a stale owner: the first worker cut off while it runs slow
    # effect jobs, until the other has taken one of them again, then let through. A bug in
    # how a late write is fenced shows at once, instead of when the drawn faults happen to
    # cut off a worker at the right moment (a busy run needed 14 examples).
    stale_owner_at_start: bool = False

    def worker_argv(self) -> list[str]:
        if not self.broken:
            return [sys.executable, "-m", "boundq", "worker", "--handlers",
                    "invariants.handlers"]
        return [sys.executable, "-m", "invariants.broken_worker", self.name]

    def options(self, clock_skew_s: float) -> str:
        """libpq `options` for a worker's connections."""
        parts = [self.libpq_options] if self.libpq_options else []
        if self.name == "worker_clock_leases":
            parts.append(f"-c boundq.worker_clock_skew={clock_skew_s:g}s")
        return " ".join(parts)


BOUNDQ = Variant("boundq", "the queue as built (core/)")

BROKEN: tuple[Variant, ...] = (
    Variant("unfenced_completion",
            "completion matches the job by id alone: no attempt/owner/status fence",
            broken=True, expected=frozenset({ONE_TERMINAL, SINGLE_OWNER, EXACTLY_ONCE_EFFECT}),
            db_prepare=(DROP_TRANSITION_GUARD,), start_workers=((2, 0.0), (2, 0.0)),
            stale_owner_at_start=True),
    Variant("in_subquery_claim",
            "claim written as UPDATE ... WHERE id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)",
            broken=True, expected=frozenset({BOUNDED_CONCURRENCY}),
            db_prepare=(DROP_TRANSITION_GUARD,), libpq_options=RESCAN_PLAN),
    Variant("fetch_then_update_reaper",
            "reaper selects expired ids, then updates them by id in a second statement",
            broken=True, expected=frozenset({ONE_TERMINAL, SINGLE_OWNER, EXACTLY_ONCE_EFFECT}),
            db_prepare=(DROP_TRANSITION_GUARD,), reaper=reap_fetch_then_update),
    Variant("process_local_limit",
            "a queue's concurrency limit enforced by each process on its own jobs",
            broken=True, expected=frozenset({QUEUE_CONCURRENCY_BOUND}),
            db_prepare=LIMIT_DEFAULT_QUEUE, start_workers=((3, 0.0), (3, 0.0))),
    Variant("limit_outside_claim",
            "a queue's concurrency limit counted in one statement, the claim made in another",
            broken=True, expected=frozenset({QUEUE_CONCURRENCY_BOUND}),
            db_prepare=LIMIT_DEFAULT_QUEUE, start_workers=((3, 0.0), (3, 0.0))),
    Variant("worker_clock_leases",
            "leases written and judged on the worker's clock instead of the database's",
            broken=True, expected=frozenset({SINGLE_OWNER, NO_LOST_JOB}),
            db_prepare=(DROP_TRANSITION_GUARD,),
            # drawn, a fast clock came in one example of three: a CI run needed 13
            start_workers=((3, SKEWED_CLOCK_S), (3, 0.0))),
    Variant("followups_outside_completion",
            "a job's follow-ups inserted by a statement of their own before its completion",
            broken=True, expected=frozenset({EXACTLY_ONCE_CHAIN})),
    Variant("split_tick_scheduler",
            "cron scheduler checks the tick is due, creates its job, then records the tick in "
            "a second statement",
            broken=True, expected=frozenset({ONE_JOB_PER_TICK})),
    Variant("unblock_on_any_end",
            "a parent's children are released when it ends, whether it succeeded, failed or "
            "was cancelled",
            broken=True, expected=frozenset({DEPENDENCY_ORDER}), db_prepare=UNBLOCK_ON_ANY_END),
    Variant("floors_without_rescan",
            "while a snapshot holds the horizon, claims start at their floors and never walk "
            "from the head again",
            broken=True, expected=frozenset({NO_LOST_JOB}), straggler_at_drain=True),
)

BY_NAME = {v.name: v for v in (BOUNDQ, *BROKEN)}
