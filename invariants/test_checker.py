"""The checker against hand-made histories: a clean one passes, each bad one is caught
under the right invariant name with the right job ids. A checker that cannot fail proves
nothing, so every rule it has is exercised here by a history that breaks it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from invariants.checker import (
    ATTEMPTS_BOUNDED,
    BOUNDED_CONCURRENCY,
    DEPENDENCY_ORDER,
    EVENT_LOG_PATH,
    EXACTLY_ONCE_CHAIN,
    EXACTLY_ONCE_EFFECT,
    NO_LOST_JOB,
    NO_PHANTOM_JOB,
    ONE_TERMINAL,
    SINGLE_OWNER,
    Attempt,
    Create,
    Dependency,
    Effect,
    History,
    Job,
    JobEvent,
    Process,
    Transition,
    WorkerReport,
    check,
    owner_pid,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
A = "host-101-aaaa"  # owner ids as core.worker.new_owner_id makes them: host-pid-random
B = "host-202-bbbb"


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def good() -> History:
    """Job 1: effect, lost by A (reaped after its lease), then done by B. Job 2: failed
    after its only attempt. Job 3: cancelled while new. All acknowledged."""
    jobs = [
        Job(1, "effect", "success", 2, 3, "j1", finished_at=t(5)),
        Job(2, "fail", "failed", 1, 1, "j2", finished_at=t(2)),
        Job(3, "noop", "cancelled", 0, 3, "j3", finished_at=t(1)),
    ]
    attempts = [
        Attempt(1, 1, A, t(0), t(3), "lost", "lease expired"),
        Attempt(1, 2, B, t(3.5), t(5), "success"),
        Attempt(2, 1, B, t(1), t(2), "error", "boom"),
    ]
    transitions = [
        Transition(1, 1, t(0), "new", "processing", 0, 1, 3, None, A, None, t(1)),
        Transition(2, 1, t(0.5), "processing", "processing", 1, 1, 3, A, A, t(1), t(1.5)),
        Transition(3, 1, t(3), "processing", "new", 1, 1, 3, A, None, t(1.5), None),
        Transition(4, 2, t(1), "new", "processing", 0, 1, 1, None, B, None, t(2)),
        Transition(5, 3, t(1), "new", "cancelled", 0, 0, 3),
        Transition(6, 1, t(3.5), "new", "processing", 1, 2, 3, None, B, None, t(4.5)),
        Transition(7, 2, t(2), "processing", "failed", 1, 1, 1, B, None, t(2), None),
        Transition(8, 1, t(5), "processing", "success", 2, 2, 3, B, None, t(4.5), None),
    ]
    return History(
        jobs=jobs, attempts=attempts, effects=[Effect(1, 2)], transitions=transitions,
        creates=[Create("ok", ("j1", "j2"), (1, 2)), Create("ok", ("j3",), (3,)),
                 Create("fail", ("never",))],
        processes=[Process(101, 2, 5, 4), Process(202, 1, 5, 5)],
        reports=[WorkerReport(1, 1, "lease_lost")],
    )


def names(h: History, final: bool = True) -> set[str]:
    return check(h, final=final).names()


def ids(h: History, invariant: str) -> set[int]:
    return {i for v in check(h, final=True).violations if v.invariant == invariant
            for i in v.job_ids}


def test_clean_history_passes_mid_run_and_final() -> None:
    for final in (False, True):
        report = check(good(), final=final)
        assert report.ok, report.explain()
        assert report.jobs_checked == 3


def test_owner_pid() -> None:
    assert owner_pid("my-host-name-4242-deadbeef") == 4242
    assert owner_pid("nonsense") is None


# --- no_lost_job ------------------------------------------------------------------------
def test_acknowledged_job_missing() -> None:
    h = good()
    h.creates = [*(h.creates or []), Create("ok", ("j9",), (9,))]
    assert ids(h, NO_LOST_JOB) == {9}


def test_job_not_terminal_after_heal_is_lost_but_fine_mid_run() -> None:
    h = good()
    h.jobs[2] = Job(3, "noop", "new", 0, 3, "j3")
    h.transitions = [x for x in h.transitions or [] if x.job_id != 3]
    assert NO_LOST_JOB not in names(h, final=False)
    assert ids(h, NO_LOST_JOB) == {3}


def test_phantom_job_and_job_from_failed_create() -> None:
    h = good()
    h.jobs.append(Job(4, "noop", "cancelled", 0, 3, "never", finished_at=t(1)))
    h.jobs.append(Job(5, "noop", "cancelled", 0, 3, "who", finished_at=t(1)))
    assert ids(h, NO_PHANTOM_JOB) == {4, 5}


def test_indeterminate_create_may_be_absent_or_present() -> None:
    h = good()
    h.creates = [*(h.creates or []), Create("info", ("maybe",))]
    assert check(h, final=True).ok
    h.jobs.append(Job(6, "noop", "new", 0, 3, "maybe"))
    assert ids(h, NO_LOST_JOB) == {6}  # recovered, so it must settle like any other


# --- single_owner -----------------------------------------------------------------------
def test_overlapping_attempts() -> None:
    h = good()
    h.attempts[1] = replace(h.attempts[1], claimed_at=t(2.5))  # B claimed before A's closed
    assert ids(h, SINGLE_OWNER) == {1}


def test_two_open_attempts() -> None:
    h = good()
    h.jobs[0] = Job(1, "effect", "processing", 2, 3, "j1", lease_owner=B)
    h.attempts[0] = replace(h.attempts[0], finished_at=None, outcome=None)
    h.attempts[1] = replace(h.attempts[1], finished_at=None, outcome=None)
    h.effects = []
    assert SINGLE_OWNER in names(h, final=False)


def test_open_attempt_on_settled_job() -> None:
    h = good()
    h.attempts[2] = replace(h.attempts[2], finished_at=None, outcome=None)
    assert ids(h, SINGLE_OWNER) == {2}


def test_reaper_revoked_an_unexpired_lease() -> None:
    h = good()
    assert h.transitions is not None
    h.transitions[2] = replace(h.transitions[2], old_lease_expires_at=t(3.2))  # ran past t(3)
    found = check(h, final=True)
    assert found.names() == {SINGLE_OWNER}
    assert "reaped" in str(found.violations[0])


def test_graceful_release_is_not_a_revocation() -> None:
    h = good()
    assert h.transitions is not None
    h.transitions[2] = replace(h.transitions[2], old_lease_expires_at=t(3.2))
    h.attempts[0] = replace(h.attempts[0], error="released at worker shutdown")
    assert check(h, final=True).ok


def test_stale_owner_write_committed() -> None:
    h = good()
    h.reports.append(WorkerReport(1, 2, "lease_lost"))  # B lost attempt 2, yet it "succeeded"
    assert ids(h, SINGLE_OWNER) == {1}


def test_ended_attempt_credited_to_someone_else() -> None:
    h = good()
    h.attempts[0] = replace(h.attempts[0], owner=B)  # A's lease was reaped; the row says B
    found = [v for v in check(h, final=True).violations if v.invariant == SINGLE_OWNER]
    assert [(v.job_ids, "credits" in v.detail) for v in found] == [((1,), True)]


def test_lease_moved_without_release() -> None:
    h = good()
    assert h.transitions is not None
    h.transitions.append(Transition(9, 1, t(4), "processing", "processing", 2, 2, 3, B, A,
                                    t(4.5), t(5)))
    assert ids(h, SINGLE_OWNER) == {1}


# --- one_terminal -----------------------------------------------------------------------
def test_terminal_row_changed() -> None:
    h = good()
    assert h.transitions is not None
    h.transitions.append(Transition(9, 1, t(6), "success", "success", 2, 2, 3))
    assert ids(h, ONE_TERMINAL) == {1}


def test_success_then_reaped_back_to_new() -> None:
    h = good()
    assert h.transitions is not None
    h.transitions.append(Transition(9, 2, t(3), "failed", "new", 1, 1, 2))  # explicit retry: fine
    h.transitions.append(Transition(10, 1, t(6), "success", "new", 2, 2, 3))
    assert ids(h, ONE_TERMINAL) == {1, 2}  # 1 changed; 2 was retried but never settled again


def test_illegal_new_to_success() -> None:
    h = good()
    assert h.transitions is not None
    h.transitions[7] = replace(h.transitions[7], old_status="new")
    assert ids(h, ONE_TERMINAL) == {1}


def test_success_on_earlier_attempt() -> None:
    h = good()
    h.attempts[0] = replace(h.attempts[0], outcome="success")
    assert ids(h, ONE_TERMINAL) == {1}


def test_failed_job_with_successful_attempt() -> None:
    h = good()
    h.attempts[2] = replace(h.attempts[2], outcome="success")
    assert ids(h, ONE_TERMINAL) == {2}


# --- attempts_bounded -------------------------------------------------------------------
def test_attempts_past_max() -> None:
    h = good()
    h.jobs[0] = replace(h.jobs[0], max_attempts=1)
    assert ids(h, ATTEMPTS_BOUNDED) == {1}


def test_attempt_numbers_skip() -> None:
    h = good()
    h.attempts[1] = replace(h.attempts[1], attempt=3)
    h.effects = [Effect(1, 3)]
    assert ATTEMPTS_BOUNDED in names(h)


def test_claim_that_does_not_count() -> None:
    h = good()
    assert h.transitions is not None
    h.transitions[5] = replace(h.transitions[5], new_attempts=1)
    assert ids(h, ATTEMPTS_BOUNDED) == {1}


# --- bounded_concurrency ----------------------------------------------------------------
def test_more_jobs_than_permits() -> None:
    h = good()
    h.processes[1] = Process(202, 1, 5, 5)
    h.attempts[2] = replace(h.attempts[2], claimed_at=t(3.6), finished_at=t(4))  # B: 2 at once
    h.transitions = None
    assert ids(h, BOUNDED_CONCURRENCY) == {1, 2}


def test_back_to_back_attempts_do_not_overlap() -> None:
    h = good()
    h.attempts[2] = replace(h.attempts[2], claimed_at=t(5), finished_at=t(6))  # starts as 1 ends
    h.transitions = None
    assert BOUNDED_CONCURRENCY not in names(h)


def test_too_many_connections() -> None:
    h = good()
    h.processes[0] = Process(101, 2, 5, 6)
    assert BOUNDED_CONCURRENCY in names(h)


# --- exactly_once_effect ----------------------------------------------------------------
@pytest.mark.parametrize("effects", [[], [Effect(1, 2), Effect(1, 2)], [Effect(1, 1)]])
def test_effect_count_or_attempt_wrong(effects: list[Effect]) -> None:
    h = good()
    h.effects = effects
    assert ids(h, EXACTLY_ONCE_EFFECT) == {1}


def test_effect_of_unsuccessful_job() -> None:
    h = good()
    h.effects.append(Effect(2, 1))
    assert ids(h, EXACTLY_ONCE_EFFECT) == {2}


# --- exactly_once_chain -----------------------------------------------------------------
def chain_history(parent: str = "success", followups: int = 1) -> History:
    """Job 10 (echo, created by a client) chains `j10>then1`; `followups` copies of it exist."""
    jobs = [Job(10, "echo", parent, 1, 3, "j10", finished_at=t(2), then_name="j10>then1")]
    jobs += [Job(11 + i, "noop", "success", 1, 3, "j10>then1", finished_at=t(4))
             for i in range(followups)]
    attempts = [Attempt(10, 1, A, t(1), t(2), "success" if parent == "success" else "error")]
    attempts += [Attempt(11 + i, 1, A, t(3), t(4), "success") for i in range(followups)]
    return History(jobs=jobs, attempts=attempts, creates=[Create("ok", ("j10",), (10,))])


def test_chained_followup_once_passes() -> None:
    for final in (False, True):
        report = check(chain_history(), final=final)
        assert report.ok, report.explain()


@pytest.mark.parametrize(("parent", "followups", "caught"),
                         [("success", 0, {10}), ("success", 2, {10, 11, 12}),
                          ("failed", 1, {10, 11}), ("cancelled", 1, {10, 11})])
def test_followup_missing_duplicated_or_orphaned(parent: str, followups: int,
                                                 caught: set[int]) -> None:
    h = chain_history(parent, followups)
    assert ids(h, EXACTLY_ONCE_CHAIN) == caught
    assert NO_PHANTOM_JOB not in names(h)  # a follow-up is no phantom: this check judges it


def test_followup_without_its_parent_is_a_phantom() -> None:
    h = chain_history()
    h.jobs = h.jobs[1:]
    assert ids(h, NO_PHANTOM_JOB) == {11}


# --- one_job_per_tick ------------------------------------------------------------------
def cron_history() -> History:
    """A schedule ticking every 2 s from T0 (catch_up 2), watermark at T0+14: ticks 0, 2
    made one by one; an outage, then a fire from 4 that made 8 and 10 (4, 6 skipped); 12
    made. Its jobs all succeeded; no client created them."""
    from invariants.cron_check import Schedule, Tick, job_name

    s = Schedule("tick", "* * * * * */2", "UTC", 2, T0, t(14))
    fires = [(0, 0), (2, 2), (8, 4), (10, 4), (12, 12)]  # (tick, window_start)
    ticks = [Tick("tick", t(at), 100 + i, t(start)) for i, (at, start) in enumerate(fires)]
    jobs = [Job(100 + i, "noop", "new", 0, 3, job_name("tick", t(at)))
            for i, (at, _) in enumerate(fires)]
    return History(jobs=jobs, attempts=[], creates=[], schedules=[s], ticks=ticks,
                   healed_at=t(11))


def cron_names(h: History, final: bool = False) -> set[str]:
    return check(h, final=final).names() - {NO_LOST_JOB}  # the jobs are not terminal


def test_cron_history_with_catch_up_passes() -> None:
    report = check(cron_history(), final=False)
    assert report.ok, report.explain()
    assert cron_names(cron_history(), final=True) == set()


def test_cron_violations_are_caught() -> None:
    from invariants.checker import ONE_JOB_PER_TICK
    from invariants.cron_check import Tick, job_name

    def caught(h: History, *, final: bool = False) -> str:
        report = check(h, final=final)
        assert ONE_JOB_PER_TICK in report.names(), report.explain()
        return "\n".join(v.detail for v in report.violations if v.invariant == ONE_JOB_PER_TICK)

    h = cron_history()  # a second job for a tick (created outside the tick's statement)
    h.jobs.append(Job(200, "noop", "new", 0, 3, job_name("tick", t(2))))
    assert "2 jobs for the tick" in caught(h)
    h = cron_history()  # a tick neither made nor skipped
    h.ticks = [x for x in h.ticks if x.tick_at != t(12)]
    h.jobs = [j for j in h.jobs if j.id != 104]
    assert "neither a job nor a skip" in caught(h)
    h = cron_history()  # a job whose tick has no row
    h.ticks = [x for x in h.ticks if x.tick_at != t(12)]
    assert "without a tick row" in caught(h)
    h = cron_history()  # a tick row whose job is missing
    h.jobs = [j for j in h.jobs if j.id != 101]
    assert "which is not its job" in caught(h)
    h = cron_history()  # a job for a tick past the watermark (after a change or retirement)
    h.jobs.append(Job(201, "noop", "new", 0, 3, job_name("tick", t(14))))
    h.ticks.append(Tick("tick", t(14), 201, t(14)))
    assert "past the watermark" in caught(h)
    h = cron_history()  # skipped more than the rule allows: a fire made 1 of 4 due ticks
    h.ticks = [x for x in h.ticks if x.tick_at != t(8)]
    h.jobs = [j for j in h.jobs if j.id != 102]
    assert "fewer than catch_up=2" in caught(h)
    h = cron_history()  # a fire that made an early tick and skipped a later one
    h.ticks = [replace(x, tick_at=t(6)) if x.job_id == 102 else x for x in h.ticks]
    h.jobs = [replace(j, name=job_name("tick", t(6))) if j.id == 102 else j for j in h.jobs]
    assert "not the latest ticks" in caught(h)
    h = cron_history()  # a job named for an instant that is not a tick
    h.jobs.append(Job(202, "noop", "new", 0, 3, job_name("tick", t(3))))
    assert "not a tick before the watermark" in caught(h)
    h = replace(cron_history(), healed_at=t(20))  # no scheduler caught up after healing
    assert "no scheduler caught up" in caught(h, final=True)
    assert check(h, final=False).ok


# --- dependency_order -------------------------------------------------------------------
def _with_children(claimed_at: float, parent: int = 1, status: str = "success") -> History:
    """good() plus job 4, waiting for `parent`, which ran once (claimed at claimed_at),
    and job 5, waiting for job 2 (failed), cancelled without an attempt."""
    h = good()
    h.jobs += [Job(4, "noop", status, 1, 3, "j4", finished_at=t(claimed_at + 1)),
               Job(5, "noop", "cancelled", 0, 3, "j5", finished_at=t(2))]
    h.attempts += [Attempt(4, 1, "host-303-cccc", t(claimed_at), t(claimed_at + 1), "success")]
    h.creates = [*(h.creates or []), Create("ok", ("j4", "j5"), (4, 5))]
    h.dependencies = [Dependency(4, parent), Dependency(5, 2)]
    h.transitions = None
    return h


def test_children_that_start_after_their_parents_succeeded_pass() -> None:
    report = check(_with_children(5.5), final=True)
    assert report.ok, report.explain()


def test_a_child_started_before_its_parent_succeeded_is_caught() -> None:
    # job 1 succeeded at t(5) (its second attempt); job 4 started at t(4)
    assert ids(_with_children(4.0), DEPENDENCY_ORDER) == {4, 1}
    assert names(_with_children(4.0), final=False) == {DEPENDENCY_ORDER}


def test_the_change_log_orders_a_claim_against_its_parent_s_success() -> None:
    """Job 4's claim carries a start (t(4)) before job 1's success (t(5)): a claim whose
    transaction started before its snapshot. The log, when it has both changes, says
    which came first: after the success, it passes; before it, it is caught."""
    def logged(child_first: bool) -> History:
        h = _with_children(4.0)
        success, start = JobEvent(1, "success", 2), JobEvent(4, "processing", 1)
        h.events = [start, success] if child_first else [success, start]
        return h

    assert DEPENDENCY_ORDER not in names(logged(child_first=False))
    assert ids(logged(child_first=True), DEPENDENCY_ORDER) == {4, 1}


def test_a_child_of_a_failed_or_cancelled_parent_that_starts_is_caught() -> None:
    assert ids(_with_children(9.0, parent=2), DEPENDENCY_ORDER) == {4, 2}
    assert ids(_with_children(9.0, parent=3), DEPENDENCY_ORDER) == {4, 3}


# --- event_log_path ---------------------------------------------------------------------
def _with_events(**changes: list[JobEvent]) -> History:
    """good() with its change log: job 1 claimed, lost, claimed again, succeeded; job 2
    claimed and failed; job 3 cancelled while new. `changes` replaces a job's path."""
    paths = {
        "j1": [JobEvent(1, "new", 0), JobEvent(1, "processing", 1), JobEvent(1, "new", 1),
               JobEvent(1, "processing", 2), JobEvent(1, "success", 2)],
        "j2": [JobEvent(2, "new", 0), JobEvent(2, "processing", 1), JobEvent(2, "failed", 1)],
        "j3": [JobEvent(3, "new", 0), JobEvent(3, "cancelled", 0)],
    }
    paths.update(changes)
    h = good()
    # Interleaved across jobs, as the log holds them; each job's own order kept.
    h.events = [e for step in range(5) for path in paths.values() for e in path[step:step + 1]]
    return h


def test_a_legal_event_log_passes() -> None:
    report = check(_with_events(), final=True)
    assert report.ok, report.explain()


def test_an_event_log_with_an_illegal_step_is_caught() -> None:
    skipped = [JobEvent(2, "new", 0), JobEvent(2, "failed", 1)]  # never processing
    assert ids(_with_events(j2=skipped), EVENT_LOG_PATH) == {2}
    back = [JobEvent(1, "new", 0), JobEvent(1, "processing", 2), JobEvent(1, "new", 2),
            JobEvent(1, "processing", 1), JobEvent(1, "success", 2)]  # attempt went back
    assert ids(_with_events(j1=back), EVENT_LOG_PATH) == {1}


def test_an_event_log_that_does_not_end_in_the_job_s_status_is_caught() -> None:
    missing_end = [JobEvent(3, "new", 0)]  # the cancel never logged
    assert ids(_with_events(j3=missing_end), EVENT_LOG_PATH) == {3}
    assert ids(_with_events(j3=[]), EVENT_LOG_PATH) == {3}


def test_an_event_log_must_start_at_a_create_unless_trimmed() -> None:
    late_start = [JobEvent(3, "cancelled", 0)]
    assert ids(_with_events(j3=late_start), EVENT_LOG_PATH) == {3}
    trimmed = _with_events(j3=late_start)
    trimmed.events_trimmed = True
    assert check(trimmed, final=True).ok
