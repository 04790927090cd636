"""queue_concurrency_bound and rate_limit_respected against hand-made histories: each
rule is broken by one history and kept by its near twin, including the claims a change's
bracket leaves unjudged and the jobs a limit never governed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from invariants.checker import Attempt, History, Job, check
from invariants.flow_checks import QUEUE_CONCURRENCY_BOUND, RATE_LIMIT_RESPECTED, LimitChange

T0 = datetime(2026, 1, 1, tzinfo=UTC)
OWNER = "host-101-aaaa"


def t(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def change(id_: int, at: float, *, scope: str = "queue", name: str = "mail",
           concurrency: int | None = None, rate: float | None = None, burst: int = 1,
           paused: bool = False, stamped: float | None = 0.001) -> LimitChange:
    return LimitChange(id_, scope, name, concurrency, rate, burst, paused, t(at),
                       None if stamped is None else t(at + stamped))


def history(spans: list[tuple[float, float | None]], changes: list[LimitChange], *,
            queue: str = "mail", kind: str = "noop") -> History:
    """One job per span (claimed_at, finished_at or None = running)."""
    jobs, attempts = [], []
    for i, (start, end) in enumerate(spans, 1):
        status = "processing" if end is None else "success"
        jobs.append(Job(i, kind, status, 1, 3, f"j{i}",
                        lease_owner=OWNER if end is None else None,
                        finished_at=None if end is None else t(end), queue=queue))
        attempts.append(Attempt(i, 1, OWNER, t(start), None if end is None else t(end),
                                None if end is None else "success"))
    return History(jobs=jobs, attempts=attempts, limit_changes=changes)


def names(h: History) -> set[str]:
    return check(h, final=False).names()


def test_running_over_the_concurrency_limit_is_caught() -> None:
    limit = [change(1, 0, concurrency=2)]
    assert names(history([(1, 5), (2, 5), (3, 4)], limit)) == {QUEUE_CONCURRENCY_BOUND}
    # an end at an instant comes before a start at it
    assert names(history([(1, 3), (2, 5), (3, 4)], limit)) == set()


def test_a_lower_limit_counts_jobs_started_under_the_higher_one() -> None:
    changes = [change(1, 0, concurrency=5), change(2, 10, concurrency=1)]
    assert names(history([(1, 20), (11, 12)], changes)) == {QUEUE_CONCURRENCY_BOUND}
    assert names(history([(1, 10.5), (11, 12)], changes)) == set()


def test_claims_in_a_change_bracket_and_unlimited_starts_are_not_judged() -> None:
    # limit saved at 10, effective at 10.5: a start at 10.2 may have seen either era
    bracket = [change(1, 10, concurrency=1, stamped=0.5)]
    assert names(history([(10.2, 30), (11, 30)], bracket)) == set()
    # jobs started before any limit ran unlocked: the first limited claim may not see them
    assert names(history([(1, 30), (2, 30), (11, 30)], bracket)) == set()
    assert names(history([(11, 30), (12, 30)], bracket)) == {QUEUE_CONCURRENCY_BOUND}
    # a change never stamped effective governs nothing
    unstamped = [change(1, 10, concurrency=1, stamped=None)]
    assert names(history([(11, 30), (12, 30)], unstamped)) == set()


def test_a_start_while_paused_is_caught_and_a_resume_ends_the_pause() -> None:
    changes = [change(1, 0, paused=True), change(2, 10)]
    assert names(history([(5, 6)], changes)) == {QUEUE_CONCURRENCY_BOUND}
    assert names(history([(11, 12)], changes)) == set()


def test_kind_limits_count_the_kind_across_queues() -> None:
    limit = [change(1, 0, scope="kind", name="noop", concurrency=1)]
    assert names(history([(1, 5), (2, 5)], limit, kind="noop")) == {QUEUE_CONCURRENCY_BOUND}
    assert names(history([(1, 5), (2, 5)], limit, kind="sleep")) == set()


def test_more_starts_than_burst_plus_rate_times_window_are_caught() -> None:
    limit = [change(1, 0, rate=1.0, burst=2)]
    # burst 2 at once, then one a second: exactly at the bound
    ok = [(1, 1.1), (1, 1.1), (2, 2.1), (3, 3.1), (4, 4.1)]
    assert names(history(ok, limit)) == set()
    # a third start inside the first second
    assert names(history([(1, 1.1), (1, 1.1), (1.5, 2)], limit)) == {RATE_LIMIT_RESPECTED}
    # the densest window is found wherever it lies
    late = [(1, 1.1), (5, 5.1), (9, 9.1), (9.2, 9.3), (9.4, 9.5)]
    assert names(history(late, limit)) == {RATE_LIMIT_RESPECTED}


def test_each_rate_era_is_judged_by_its_own_settings() -> None:
    changes = [change(1, 0, rate=100.0, burst=10), change(2, 5, rate=0.1, burst=1)]
    busy_then_quiet = [(1 + i / 100, 2.0) for i in range(10)] + [(6, 6.1)]
    assert names(history(busy_then_quiet, changes)) == set()
    assert names(history([*busy_then_quiet, (7, 7.1)], changes)) == {RATE_LIMIT_RESPECTED}
