"""The history checker: judges a run from what the database and the clients recorded.

Input (a `History`): the rows of `jobs`, `job_attempts` and `job_effects`, where the
attempts are the ended ones (`job_attempts` rows) plus an open one for each processing
job, read from its jobs row (invariants/history.py); optionally the
test-only audit of every UPDATE of a jobs row (invariants/audit.py), the client-side log
of create requests (acknowledged `ok`, definitely failed `fail`, or indeterminate `info`),
the worker processes the harness started (their limits and the connection high-water the
fault proxy measured), and what workers logged about leases they lost or writes that were
fenced, every change of flow limits (job_limit_changes), and the cron schedules with
their tick rows (invariants/cron_check.py). Output: a `Report` listing each violation
under the name of the invariant it breaks (docs/design.md), with the offending job ids.

`final=False` checks a running system (every check that holds at any instant); `final=True`
also asks for liveness: after faults healed and workers drained, every job is terminal.
Everything is O(n log n) set and interval logic; no linearizability search is needed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from typing import TypeVar

from boundq.core.states import TERMINAL as _TERMINAL
from boundq.core.states import TRANSITIONS as _TRANSITIONS
from invariants.cron_check import Schedule, Tick, check_ticks, scheduled_job
from invariants.flow_checks import (
    QUEUE_CONCURRENCY_BOUND,
    RATE_LIMIT_RESPECTED,
    LimitChange,
    Start,
    check_flow,
)

NO_LOST_JOB = "no_lost_job"
SINGLE_OWNER = "single_owner"
ONE_TERMINAL = "one_terminal"
ATTEMPTS_BOUNDED = "attempts_bounded"
BOUNDED_CONCURRENCY = "bounded_concurrency"
EXACTLY_ONCE_EFFECT = "exactly_once_effect"
ONE_JOB_PER_TICK = "one_job_per_tick"
DEPENDENCY_ORDER = "dependency_order"
EXACTLY_ONCE_CHAIN = "exactly_once_chain"
EVENT_LOG_PATH = "event_log_path"
INVARIANTS = (NO_LOST_JOB, SINGLE_OWNER, ONE_TERMINAL, ATTEMPTS_BOUNDED, BOUNDED_CONCURRENCY,
              EXACTLY_ONCE_EFFECT, QUEUE_CONCURRENCY_BOUND, RATE_LIMIT_RESPECTED,
              ONE_JOB_PER_TICK, DEPENDENCY_ORDER, EXACTLY_ONCE_CHAIN, EVENT_LOG_PATH)
# Auxiliary: a job in the database that no create asked for (Jepsen's "unexpected").
NO_PHANTOM_JOB = "no_phantom_job"

TERMINAL = frozenset(s.value for s in _TERMINAL)
CREATED = frozenset({"new", "scheduled", "blocked"})  # the statuses a job is created in
TRANSITIONS = frozenset((a.value, b.value) for a, b in _TRANSITIONS)
# job_release_batch (core/sql/queries.sql): the owner handing a lease back at shutdown.
# Every other `lost` closing is a revocation by a reaper, which needs an expired lease.
RELEASE_ERROR = "released at worker shutdown"
OWNER_OUTCOMES = frozenset({"success", "error", "timeout"})  # written only by the owner

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    kind: str
    status: str
    attempts: int
    max_attempts: int
    name: str = ""
    lease_owner: str | None = None
    finished_at: datetime | None = None
    queue: str = "default"
    # An `echo` job's follow-up (payload.then.name): the job its success must create once.
    then_name: str | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    job_id: int
    attempt: int
    owner: str
    claimed_at: datetime
    finished_at: datetime | None = None
    outcome: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class JobEvent:
    """A row of the change log (job_events), read in delivery order (txid, seq)."""

    job_id: int
    status: str
    attempt: int


@dataclass(frozen=True, slots=True)
class Effect:
    job_id: int
    attempt: int


@dataclass(frozen=True, slots=True)
class Transition:
    """One UPDATE of a jobs row, as the audit trigger saw it (`at` = the writer's now())."""

    seq: int
    job_id: int
    at: datetime
    old_status: str
    new_status: str
    old_attempts: int
    new_attempts: int
    max_attempts: int
    old_owner: str | None = None
    new_owner: str | None = None
    old_lease_expires_at: datetime | None = None
    new_lease_expires_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Dependency:
    """A row of job_dependencies: child_id waits for parent_id to reach success."""

    child_id: int
    parent_id: int


@dataclass(frozen=True, slots=True)
class Create:
    """One create request from the client log. `ids` are known only when acknowledged."""

    result: str  # ok | fail | info
    names: tuple[str, ...]
    ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class WorkerReport:
    """A worker said attempt (job_id, attempt) is no longer its own: lease_lost | write_fenced."""

    job_id: int
    attempt: int
    what: str


@dataclass(frozen=True, slots=True)
class Process:
    pid: int
    max_concurrent_jobs: int
    max_db_connections: int
    connections_high_water: int = 0


@dataclass
class History:
    jobs: list[Job]
    attempts: list[Attempt]
    effects: list[Effect] = field(default_factory=list)
    transitions: list[Transition] | None = None  # None: no audit table in this database
    creates: list[Create] | None = None  # None: no client log
    processes: list[Process] = field(default_factory=list)
    reports: list[WorkerReport] = field(default_factory=list)
    default_concurrency: int | None = None  # limit for owners of unknown processes
    limit_changes: list[LimitChange] = field(default_factory=list)
    schedules: list[Schedule] = field(default_factory=list)  # cron (invariants/cron_check.py)
    ticks: list[Tick] = field(default_factory=list)
    healed_at: datetime | None = None  # final: when faults healed (schedulers must catch up)
    dependencies: list[Dependency] = field(default_factory=list)
    events: list[JobEvent] | None = None  # the change log in delivery order; None: none read
    events_trimmed: bool = False  # retention deleted some of the log (its horizon moved)


@dataclass(frozen=True, slots=True)
class Violation:
    invariant: str
    job_ids: tuple[int, ...]
    detail: str

    def __str__(self) -> str:
        ids = ",".join(map(str, self.job_ids[:10])) + ("..." if len(self.job_ids) > 10 else "")
        return f"{self.invariant} [jobs {ids or '-'}]: {self.detail}"


@dataclass
class Report:
    violations: list[Violation]
    jobs_checked: int
    final: bool

    @property
    def ok(self) -> bool:
        return not self.violations

    def names(self) -> set[str]:
        return {v.invariant for v in self.violations}

    def by_invariant(self) -> dict[str, list[Violation]]:
        out: dict[str, list[Violation]] = {name: [] for name in (*INVARIANTS, NO_PHANTOM_JOB)}
        for v in self.violations:
            out.setdefault(v.invariant, []).append(v)
        return out

    def explain(self, limit: int = 25) -> str:
        lines = [f"{len(self.violations)} violation(s) over {self.jobs_checked} jobs "
                 f"({'final' if self.final else 'mid-run'} check)"]
        for name, found in self.by_invariant().items():
            ids = sorted({i for v in found for i in v.job_ids})
            state = f"{len(found)} violation(s), jobs {ids[:20]}" if found else "ok"
            lines.append(f"  {name}: {state}")
        lines += [f"    - {v}" for v in self.violations[:limit]]
        return "\n".join(lines)


class InvariantViolation(AssertionError):
    def __init__(self, report: Report, artifact: str | None = None) -> None:
        where = f"\nhistory kept at {artifact}" if artifact else ""
        super().__init__(report.explain() + where)
        self.report = report
        self.artifact = artifact


def owner_pid(owner: str) -> int | None:
    """core.worker.new_owner_id is host-pid-random; the pid maps an owner to its process."""
    parts = owner.rsplit("-", 2)
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def _group(items: Iterable[_T], key: str) -> dict[int, list[_T]]:
    out: dict[int, list[_T]] = defaultdict(list)
    for item in items:
        out[getattr(item, key)].append(item)
    return out


class _Checker:
    def __init__(self, h: History, final: bool) -> None:
        self.h = h
        self.final = final
        self.out: list[Violation] = []
        self.jobs = {j.id: j for j in h.jobs}
        self.atts = {k: sorted(v, key=lambda a: a.attempt)
                     for k, v in _group(h.attempts, "job_id").items()}
        self.effects = _group(h.effects, "job_id")
        self.trans = ({k: sorted(v, key=lambda t: t.seq)
                       for k, v in _group(h.transitions, "job_id").items()}
                      if h.transitions is not None else None)

    def bad(self, invariant: str, ids: Sequence[int], detail: str) -> None:
        self.out.append(Violation(invariant, tuple(ids), detail))

    def attempt(self, job_id: int, n: int) -> Attempt | None:
        for a in self.atts.get(job_id, []):
            if a.attempt == n:
                return a
        return None

    # --- no_lost_job (and the auxiliary no_phantom_job) ------------------------------------
    def no_lost_job(self) -> None:
        creates = self.h.creates
        if creates is None:
            acked: set[int] = set()
        else:
            acked = {i for c in creates if c.result == "ok" for i in c.ids}
            missing = sorted(acked - self.jobs.keys())
            if missing:
                self.bad(NO_LOST_JOB, missing, "create was acknowledged but the job is not in "
                                               "the database")
            asked = {n for c in creates if c.result in ("ok", "info") for n in c.names}
            refused = {n for c in creates if c.result == "fail" for n in c.names}
            # A schedule's jobs come from no create: one_job_per_tick accounts for them; a
            # job's follow-ups neither: exactly_once_chain does.
            chained = {j.then_name for j in self.jobs.values() if j.then_name}
            phantom = sorted(j.id for j in self.jobs.values() if j.name not in asked
                             and j.name not in chained
                             and not scheduled_job(j.name, self.h.schedules))
            if phantom:
                made = [i for i in phantom if self.jobs[i].name in refused]
                self.bad(NO_PHANTOM_JOB, phantom, f"jobs no acknowledged or pending create made "
                                                  f"({len(made)} from creates that failed)")
        if self.final:
            # Every job must settle: acknowledged ones, and recovered indeterminate ones.
            stuck = sorted(j.id for j in self.jobs.values() if j.status not in TERMINAL)
            if stuck:
                detail = ", ".join(f"{i}:{self.jobs[i].status}" for i in stuck[:10])
                self.bad(NO_LOST_JOB, stuck, f"not terminal after faults healed and workers "
                                             f"drained ({detail})")

    # --- single_owner ----------------------------------------------------------------------
    def single_owner(self) -> None:
        for job_id, atts in self.atts.items():
            job = self.jobs.get(job_id)
            open_ = [a for a in atts if a.finished_at is None]
            if len(open_) > 1 or (open_ and open_[-1] is not atts[-1]):
                self.bad(SINGLE_OWNER, [job_id], f"attempts {[a.attempt for a in open_]} are "
                                                 f"open at once")
            for a, b in pairwise(atts):
                if a.finished_at is None or b.claimed_at < a.finished_at:
                    self.bad(SINGLE_OWNER, [job_id],
                             f"attempt {b.attempt} ({b.owner}) claimed at {b.claimed_at} while "
                             f"attempt {a.attempt} ({a.owner}) held it until "
                             f"{a.finished_at or 'now'}")
            if job is not None:
                processing = job.status == "processing"
                holder = atts[-1] if atts and atts[-1].finished_at is None else None
                if processing and (holder is None or holder.owner != job.lease_owner):
                    self.bad(SINGLE_OWNER, [job_id], f"job is leased to {job.lease_owner} but "
                                                     f"its open attempt is {holder}")
                elif not processing and holder is not None:
                    self.bad(SINGLE_OWNER, [job_id], f"job is {job.status} but attempt "
                                                     f"{holder.attempt} is still open")
        for r in self.h.reports:
            told = self.attempt(r.job_id, r.attempt)
            if told is not None and told.outcome in OWNER_OUTCOMES:
                self.bad(SINGLE_OWNER, [r.job_id],
                         f"the owner of attempt {r.attempt} reported {r.what}, yet the database "
                         f"credits that attempt with {told.outcome}: someone else's write "
                         f"committed")
        for job_id, trans in (self.trans or {}).items():
            for t in trans:
                if t.old_status == "processing" == t.new_status and (
                        t.old_attempts != t.new_attempts or t.old_owner != t.new_owner):
                    self.bad(SINGLE_OWNER, [job_id],
                             f"lease moved from {t.old_owner} (attempt {t.old_attempts}) to "
                             f"{t.new_owner} (attempt {t.new_attempts}) at {t.at} without release")
                if t.old_status == "processing" != t.new_status:
                    # The statement that ends an attempt writes its row and names the owner
                    # itself: it must name the one whose lease it ended.
                    closed = self.attempt(job_id, t.old_attempts)
                    if closed is not None and closed.owner != t.old_owner:
                        self.bad(SINGLE_OWNER, [job_id],
                                 f"attempt {t.old_attempts} was ended at {t.at} while "
                                 f"{t.old_owner} held it, but its row credits {closed.owner}")
                if t.old_status == "processing" and t.new_status in ("new", "failed"):
                    ended = self.attempt(job_id, t.old_attempts)
                    revoked = (ended is not None and ended.outcome == "lost"
                               and ended.error != RELEASE_ERROR)
                    if (revoked and t.old_lease_expires_at is not None
                            and t.old_lease_expires_at >= t.at):
                        self.bad(SINGLE_OWNER, [job_id],
                                 f"attempt {t.old_attempts} ({t.old_owner}) was reaped at {t.at} "
                                 f"while its lease ran until {t.old_lease_expires_at}")

    # --- one_terminal ----------------------------------------------------------------------
    def one_terminal(self) -> None:
        for job_id, job in self.jobs.items():
            atts = self.atts.get(job_id, [])
            won = [a for a in atts if a.outcome == "success"]
            if job.status == "success":
                if len(won) != 1:
                    self.bad(ONE_TERMINAL, [job_id], f"success with {len(won)} successful "
                                                     f"attempts")
                elif won[0] is not atts[-1]:
                    self.bad(ONE_TERMINAL, [job_id], f"attempt {won[0].attempt} succeeded but "
                                                     f"attempts went on to {atts[-1].attempt}")
            elif won:
                self.bad(ONE_TERMINAL, [job_id], f"job is {job.status} but attempt "
                                                 f"{won[0].attempt} succeeded")
            if (job.status in TERMINAL) != (job.finished_at is not None):
                self.bad(ONE_TERMINAL, [job_id], f"{job.status} with finished_at={job.finished_at}")
        for job_id, trans in (self.trans or {}).items():
            entries = retries = 0
            for t in trans:
                move = (t.old_status, t.new_status)
                if t.old_status in TERMINAL:
                    if move == ("failed", "new"):
                        retries += 1
                    else:
                        self.bad(ONE_TERMINAL, [job_id], f"terminal row changed at {t.at}: "
                                                         f"{t.old_status} -> {t.new_status}")
                    continue
                if t.new_status in TERMINAL:
                    entries += 1
                    if move not in TRANSITIONS:
                        self.bad(ONE_TERMINAL, [job_id], f"illegal transition {t.old_status} -> "
                                                         f"{t.new_status} at {t.at}")
                elif t.old_status != t.new_status and move not in TRANSITIONS:
                    self.bad(SINGLE_OWNER, [job_id], f"illegal transition {t.old_status} -> "
                                                     f"{t.new_status} at {t.at}")
            now = self.jobs.get(job_id)
            if self.final and now is not None and now.status in TERMINAL and entries != retries + 1:
                self.bad(ONE_TERMINAL, [job_id], f"entered a terminal state {entries} times "
                                                 f"({retries} explicit retries)")

    # --- attempts_bounded ------------------------------------------------------------------
    def attempts_bounded(self) -> None:
        for job_id, job in self.jobs.items():
            nums = [a.attempt for a in self.atts.get(job_id, [])]
            if nums != list(range(1, len(nums) + 1)):
                self.bad(ATTEMPTS_BOUNDED, [job_id], f"attempt numbers {nums[:10]} are not 1..n")
            if job.attempts != len(nums):
                self.bad(ATTEMPTS_BOUNDED, [job_id], f"jobs.attempts={job.attempts} but "
                                                     f"{len(nums)} attempt rows")
            if job.attempts > job.max_attempts:
                self.bad(ATTEMPTS_BOUNDED, [job_id], f"attempts {job.attempts} > max_attempts "
                                                     f"{job.max_attempts}")
        for job_id, trans in (self.trans or {}).items():
            for t in trans:
                claim = t.old_status == "new" and t.new_status == "processing"
                if claim and t.new_attempts != t.old_attempts + 1:
                    self.bad(ATTEMPTS_BOUNDED, [job_id], f"a claim moved attempts "
                                                         f"{t.old_attempts} -> {t.new_attempts}")
                elif not claim and t.new_attempts != t.old_attempts:
                    self.bad(ATTEMPTS_BOUNDED, [job_id], f"attempts {t.old_attempts} -> "
                                                         f"{t.new_attempts} outside a claim "
                                                         f"({t.old_status} -> {t.new_status})")
                if t.new_attempts > t.max_attempts:
                    self.bad(ATTEMPTS_BOUNDED, [job_id], f"attempt {t.new_attempts} passed "
                                                         f"max_attempts {t.max_attempts}")

    # --- bounded_concurrency ---------------------------------------------------------------
    def bounded_concurrency(self) -> None:
        limits = {p.pid: p.max_concurrent_jobs for p in self.h.processes}
        by_owner: dict[str, list[Attempt]] = defaultdict(list)
        for a in self.h.attempts:
            by_owner[a.owner].append(a)
        for owner, atts in by_owner.items():
            pid = owner_pid(owner)
            limit = limits.get(pid, self.h.default_concurrency) if pid is not None else None
            if limit is None:
                continue
            peak, at, held = _peak(atts)
            if peak > limit:
                self.bad(BOUNDED_CONCURRENCY, sorted(held),
                         f"{owner} held {peak} jobs at {at}; MAX_CONCURRENT_JOBS={limit}")
        for p in self.h.processes:
            if p.connections_high_water > p.max_db_connections:
                self.bad(BOUNDED_CONCURRENCY, [],
                         f"worker pid {p.pid} had {p.connections_high_water} connections open; "
                         f"MAX_DB_CONNECTIONS={p.max_db_connections}")

    # --- exactly_once_effect ---------------------------------------------------------------
    def exactly_once_effect(self) -> None:
        for job_id, effs in self.effects.items():
            if job_id not in self.jobs:
                self.bad(EXACTLY_ONCE_EFFECT, [job_id], f"{len(effs)} effects of an unknown job")
        for job_id, job in self.jobs.items():
            effs = self.effects.get(job_id, [])
            if job.kind == "effect" and job.status == "success":
                won = [a.attempt for a in self.atts.get(job_id, []) if a.outcome == "success"]
                if len(effs) != 1:
                    self.bad(EXACTLY_ONCE_EFFECT, [job_id], f"successful effect job wrote "
                                                            f"{len(effs)} effect rows")
                elif won and effs[0].attempt != won[-1]:
                    self.bad(EXACTLY_ONCE_EFFECT, [job_id], f"effect written by attempt "
                                                            f"{effs[0].attempt}, success was "
                                                            f"attempt {won[-1]}")
            elif effs:
                self.bad(EXACTLY_ONCE_EFFECT, [job_id], f"{job.kind} job in state {job.status} "
                                                        f"has {len(effs)} effect rows")


    # --- exactly_once_chain ----------------------------------------------------------------
    def exactly_once_chain(self) -> None:
        """A job's follow-ups are written by the statement that writes its success: a
        successful job's follow-up exists exactly once (at every instant: they commit
        together), and a job that has not succeeded (its attempts fenced, failed, lost or
        cancelled) has none. Follow-ups are told by name (unique per run)."""
        named: dict[str, list[int]] = defaultdict(list)
        for j in self.jobs.values():
            named[j.name].append(j.id)
        for job_id, job in self.jobs.items():
            if not job.then_name:
                continue
            made = named.get(job.then_name, [])
            if job.status == "success" and len(made) != 1:
                self.bad(EXACTLY_ONCE_CHAIN, [job_id, *made],
                         f"successful job's follow-up {job.then_name!r} exists {len(made)} "
                         f"times")
            elif job.status != "success" and made:
                self.bad(EXACTLY_ONCE_CHAIN, [job_id, *made],
                         f"{job.status} job (attempt {job.attempts}) has {len(made)} "
                         f"follow-up(s) {job.then_name!r}: written outside a committed "
                         f"success")

    # --- queue_concurrency_bound, rate_limit_respected (invariants/flow_checks.py) ------------
    def flow_limits(self) -> None:
        if not self.h.limit_changes:
            return
        starts = [Start(a.job_id, a.attempt, job.queue, job.kind, a.claimed_at, a.finished_at)
                  for a in self.h.attempts if (job := self.jobs.get(a.job_id)) is not None]
        check_flow(self.h.limit_changes, starts, self.bad)
    # --- one_job_per_tick -----------------------------------------------------------------
    def one_job_per_tick(self) -> None:
        names = {j.id: j.name for j in self.jobs.values()}
        healed = self.h.healed_at if self.final else None
        for ids, detail in check_ticks(self.h.schedules, self.h.ticks, names, healed):
            self.bad(ONE_JOB_PER_TICK, ids, detail)


    # --- dependency_order ------------------------------------------------------------------
    def dependency_order(self) -> None:
        """No attempt of a job starts before every job it depends on reached success (the
        unblocking commits with the parent's success); a child of a parent that never
        succeeded never starts.

        "Before" is read from the change log when it holds both changes: its (txid, seq)
        order puts a claim after the success it saw, since the claim takes its xid at its
        UPDATE, after its snapshot, so after that success's commit. The rows' timestamps
        cannot say it: both are now(), their transaction's start, which comes before its
        snapshot, and a claim whose backend was descheduled in between (a busy machine:
        0.9 ms was seen) carries a start before the success although it saw it
        committed. Without the log, the timestamps are compared."""
        order = self._event_order()
        for d in self.h.dependencies:
            parent = self.jobs.get(d.parent_id)
            if parent is None:  # deleted by retention: its links went with it
                continue
            won = [a for a in self.atts.get(d.parent_id, []) if a.outcome == "success"]
            done_at = won[-1].finished_at if won else None
            success = order.get((d.parent_id, "success", won[-1].attempt)) if won else None
            for a in self.atts.get(d.child_id, []):
                start = order.get((d.child_id, "processing", a.attempt))
                early = (done_at is None
                         or (start < success if start is not None and success is not None
                             else a.claimed_at < done_at))
                if early:
                    when = (f"before its success at {done_at}" if done_at is not None
                            else f"though it never succeeded (it is {parent.status})")
                    self.bad(DEPENDENCY_ORDER, [d.child_id, d.parent_id],
                             f"attempt {a.attempt} of job {d.child_id} started at "
                             f"{a.claimed_at}, while it waits for job {d.parent_id}, {when}")
                    break

    def _event_order(self) -> dict[tuple[int, str, int], int]:
        """(job, status, attempt) -> the position of its first change in the log."""
        order: dict[tuple[int, str, int], int] = {}
        for index, e in enumerate(self.h.events or ()):
            order.setdefault((e.job_id, e.status, e.attempt), index)
        return order

    # --- event_log_path --------------------------------------------------------------------
    def event_log_path(self) -> None:
        """The change log (GET /events) of every job, in delivery order, is a legal path of
        the state machine: it starts where a create puts a job (at attempt 0; unless
        retention trimmed the log), each step is an allowed transition or a new attempt,
        attempts never go back, and it ends in the job's current status and attempt."""
        if self.h.events is None:
            return
        paths = _group(self.h.events, "job_id")
        for job in self.h.jobs:
            path = paths.get(job.id, [])
            if not path:
                self.bad(EVENT_LOG_PATH, [job.id], f"job {job.id} ({job.status}) has no change "
                         "in the log")
                continue
            first = path[0]
            if not self.h.events_trimmed and (first.status not in CREATED or first.attempt):
                self.bad(EVENT_LOG_PATH, [job.id], f"job {job.id}'s log starts at "
                         f"{first.status} attempt {first.attempt}, not at a create")
            for a, b in pairwise(path):
                legal = ((a.status, b.status) in TRANSITIONS
                         or (a.status == b.status and b.attempt != a.attempt))
                if not legal or b.attempt < a.attempt:
                    self.bad(EVENT_LOG_PATH, [job.id], f"job {job.id}'s log goes from "
                             f"{a.status}/{a.attempt} to {b.status}/{b.attempt}")
                    break
            last = path[-1]
            if (last.status, last.attempt) != (job.status, job.attempts):
                self.bad(EVENT_LOG_PATH, [job.id], f"job {job.id}'s log ends at "
                         f"{last.status}/{last.attempt}, the job is "
                         f"{job.status}/{job.attempts}")


def _peak(atts: Sequence[Attempt]) -> tuple[int, datetime | None, set[int]]:
    """Most attempts open at one DB instant (an end at t comes before a start at t)."""
    events = sorted([(a.claimed_at, 1, (a.job_id, a.attempt)) for a in atts]
                    + [(a.finished_at, -1, (a.job_id, a.attempt))
                       for a in atts if a.finished_at is not None])
    live: set[tuple[int, int]] = set()
    peak, at, held = 0, None, set()
    for when, step, key in events:
        if step > 0:
            live.add(key)
        else:
            live.discard(key)
        if len(live) > peak:
            peak, at, held = len(live), when, {job_id for job_id, _ in live}
    return peak, at, held


def check(history: History, *, final: bool) -> Report:
    c = _Checker(history, final)
    c.no_lost_job()
    c.single_owner()
    c.one_terminal()
    c.attempts_bounded()
    c.bounded_concurrency()
    c.exactly_once_effect()
    c.exactly_once_chain()
    c.flow_limits()
    c.one_job_per_tick()
    c.dependency_order()
    c.event_log_path()
    return Report(c.out, len(history.jobs), final)
