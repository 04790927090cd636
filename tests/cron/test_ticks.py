"""Tick computation (core/cron.py): time zones, daylight saving time, catch-up windows,
and the validation of a schedule's fields. No database."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from boundq.core.cron import NEVER, Cron, parse_cron, parse_zone, validate_schedule
from boundq.core.errors import JobValidationError
from boundq.core.handlers import default_registry
from tests.conftest import fast_settings

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def ticks(cron: Cron, start: datetime, end: datetime) -> list[str]:
    return [t.strftime("%Y-%m-%dT%H:%MZ") for t in cron.between(start, end)]


def test_ticks_are_utc_instants_of_the_zone_s_wall_clock() -> None:
    daily = Cron("0 9 * * *", BERLIN)
    # Winter (UTC+1) then summer (UTC+2): 09:00 local is 08:00Z, then 07:00Z.
    assert ticks(daily, utc(2025, 1, 10), utc(2025, 1, 12)) == ["2025-01-10T08:00Z",
                                                               "2025-01-11T08:00Z"]
    assert ticks(daily, utc(2025, 7, 10), utc(2025, 7, 11)) == ["2025-07-10T07:00Z"]
    assert daily.next_after(utc(2025, 7, 10, 7, 0)) == utc(2025, 7, 11, 7, 0)  # strictly after
    assert Cron("*/5 * * * *", ZoneInfo("UTC")).next_after(utc(2025, 1, 1, 10, 0, 0)) \
        == utc(2025, 1, 1, 10, 5)


def test_a_daily_0230_job_on_the_spring_forward_day_runs_once_at_0300() -> None:
    """Europe/Berlin 2025-03-30: 02:00 -> 03:00. 02:30 does not exist; it ticks at the
    first instant after the gap (03:00 CEST = 01:00Z), once."""
    daily = Cron("30 2 * * *", BERLIN)
    assert ticks(daily, utc(2025, 3, 29), utc(2025, 4, 1)) == [
        "2025-03-29T01:30Z",  # 02:30 CET
        "2025-03-30T01:00Z",  # 03:00 CEST, the jump
        "2025-03-31T00:30Z",  # 02:30 CEST
    ]
    ny = Cron("30 2 * * *", NEW_YORK)  # 2025-03-09: 02:00 -> 03:00 EDT
    assert ticks(ny, utc(2025, 3, 9), utc(2025, 3, 10)) == ["2025-03-09T07:00Z"]  # 03:00 EDT


def test_a_daily_0230_job_on_the_fall_back_day_runs_once() -> None:
    """Europe/Berlin 2025-10-26: 03:00 CEST -> 02:00 CET, so 02:30 happens twice. A job set
    for 02:30 runs in the first pass only (croniter alone would run it twice)."""
    daily = Cron("30 2 * * *", BERLIN)
    assert ticks(daily, utc(2025, 10, 25), utc(2025, 10, 28)) == [
        "2025-10-25T00:30Z", "2025-10-26T00:30Z", "2025-10-27T01:30Z"]
    assert daily.next_after(utc(2025, 10, 26, 0, 30)) == utc(2025, 10, 27, 1, 30)
    assert daily.latest(utc(2025, 10, 26), utc(2025, 10, 26, 5), 5) == [utc(2025, 10, 26, 0, 30)]
    ranged = Cron("0 1-3 * * *", BERLIN)  # named hours: 02:00 once as well
    assert ticks(ranged, utc(2025, 10, 25, 22), utc(2025, 10, 26, 3)) == [
        "2025-10-25T23:00Z", "2025-10-26T00:00Z", "2025-10-26T02:00Z"]  # 01, 02 CEST, 03 CET


def test_wildcard_hours_keep_real_time_spacing_through_the_repeated_hour() -> None:
    every_30 = Cron("*/30 * * * *", BERLIN)
    got = list(every_30.between(utc(2025, 10, 25, 23, 30), utc(2025, 10, 26, 2, 1)))
    assert [b - a for a, b in itertools.pairwise(got)] == [timedelta(minutes=30)] * 5
    assert len(got) == 6  # 01:30 CEST, 02:00 and 02:30 twice, 03:00 CET
    hourly = Cron("0 * * * *", NEW_YORK)  # 2025-11-02: 01:00 EDT and 01:00 EST both tick
    assert ticks(hourly, utc(2025, 11, 2, 4), utc(2025, 11, 2, 8)) == [
        "2025-11-02T04:00Z", "2025-11-02T05:00Z", "2025-11-02T06:00Z", "2025-11-02T07:00Z"]


def test_latest_gives_the_last_ticks_of_a_window_oldest_first() -> None:
    minutely = Cron("* * * * *", ZoneInfo("UTC"))
    since, until = utc(2025, 1, 1, 10, 0), utc(2025, 1, 1, 13, 0, 0, 1)
    assert minutely.latest(since, until, 1) == [utc(2025, 1, 1, 13, 0)]  # until itself counts
    assert minutely.latest(since, until, 3) == [utc(2025, 1, 1, 12, 58), utc(2025, 1, 1, 12, 59),
                                                utc(2025, 1, 1, 13, 0)]
    assert minutely.latest(since, utc(2025, 1, 1, 10, 1), 5) == [utc(2025, 1, 1, 10, 0),
                                                                 utc(2025, 1, 1, 10, 1)]
    # A year-long outage costs `limit` steps back from now, not one per missed tick.
    assert minutely.latest(utc(2024, 1, 1), until, 2) == [utc(2025, 1, 1, 12, 59),
                                                          utc(2025, 1, 1, 13, 0)]


def test_seconds_field_only_when_asked_for() -> None:
    with pytest.raises(JobValidationError, match="5 fields") as err:
        parse_cron("* * * * * */2")
    assert err.value.field == "cron"
    expr = parse_cron("* * * * *  */2", seconds=True)
    every_2s = Cron(expr, ZoneInfo("UTC"))
    assert every_2s.next_after(utc(2025, 1, 1, 0, 0, 1)) == utc(2025, 1, 1, 0, 0, 2)


def test_an_expression_that_never_fires_has_no_next_tick() -> None:
    assert Cron("0 0 30 2 *", ZoneInfo("UTC")).next_after(utc(2025, 1, 1)) == NEVER


@pytest.mark.parametrize("expr", [
    "", "* * * *", "* * * * * *", "@daily", "61 * * * *", "* 24 * * *", "* * 32 * *",
    "* * * 13 *", "* * * * 8", "x * * * *", "*/0 * * * *", 5, None, ["* * * * *"],
    "H * * * *", "*" * 201])
def test_bad_cron_expressions_name_cron(expr: Any) -> None:
    with pytest.raises(JobValidationError) as err:
        parse_cron(expr)
    assert err.value.field == "cron"


@pytest.mark.parametrize("zone", ["", "Mars/Olympus", "../../etc/passwd", "/etc/localtime",
                                  "UTC\x00", 3, None, "x" * 101])
def test_bad_time_zones_name_timezone(zone: Any) -> None:
    with pytest.raises(JobValidationError) as err:
        parse_zone(zone)
    assert err.value.field == "timezone"


def validate(**body: Any) -> Any:
    base: dict[str, Any] = {"cron": "*/5 * * * *", "timezone": "UTC", "job": {"kind": "noop"}}
    name = body.pop("schedule_name", "nightly")
    return validate_schedule(name, {**base, **body}, default_registry, fast_settings())


@pytest.mark.parametrize(("body", "field"), [
    ({"schedule_name": "bad name"}, "name"), ({"schedule_name": ""}, "name"),
    ({"schedule_name": "x" * 101}, "name"), ({"schedule_name": "-lead"}, "name"),
    ({"cron": "nope"}, "cron"), ({"cron": None}, "cron"), ({"cron": "0 0 30 2 *"}, "cron"),
    ({"timezone": "Nowhere/City"}, "timezone"), ({"timezone": None}, "timezone"),
    ({"catch_up": 0}, "catch_up"), ({"catch_up": 101}, "catch_up"),
    ({"catch_up": True}, "catch_up"), ({"catch_up": 1.5}, "catch_up"),
    ({"job": None}, "job"), ({"job": []}, "job"), ({"job": "noop"}, "job"),
    ({"job": {"name": "x"}}, "job.name"), ({"job": {"run_at": "2030-01-01T00:00:00Z"}},
                                           "job.run_at"),
    ({"job": {"dedupe_key": "k"}}, "job.dedupe_key"), ({"job": {"priority": 10}}, "job.priority"),
    ({"job": {"kind": "no-such-kind"}}, "job.kind"), ({"job": {"queue": "a b"}}, "job.queue"),
    ({"job": {"kind": "sleep", "payload": {"ms": -1}}}, "job.payload.ms"),
    ({"job": {"payload": {"a": "\x00"}}}, "job.payload.a"), ({"job": {"status": "failed"}},
                                                             "job.status"),
    ({"job": {"delay": -1}}, "job.delay"), ({"job": {"timeout": 0}}, "job.timeout"),
    ({"job": {"max_attempts": 0}}, "job.max_attempts"), ({"job": {"color": "red"}}, "job.color"),
    ({"every": "minute"}, "every"),
])
def test_bad_schedules_name_the_field(body: dict[str, Any], field: str) -> None:
    with pytest.raises(JobValidationError) as err:
        validate(**body)
    assert err.value.field == field, err.value


def test_a_valid_schedule_normalizes_its_template() -> None:
    spec = validate(cron=" 0  9 * * 1-5 ", timezone="Europe/Berlin", catch_up=3,
                    job={"kind": "sleep", "payload": {"ms": 5}, "priority": 4, "delay": 30,
                         "queue": "reports", "status": "new"})
    assert (spec.cron.expr, spec.timezone, spec.catch_up) == ("0 9 * * 1-5", "Europe/Berlin", 3)
    assert spec.template == {"kind": "sleep", "payload": {"ms": 5}, "priority": 4, "delay": 30,
                             "queue": "reports"}
    job = spec.job
    assert (job.kind, job.queue, job.priority, job.delay_s, job.max_attempts) == (
        "sleep", "reports", 4, 30.0, fast_settings().default_max_attempts)
    assert validate(job={}).catch_up == 1 and validate(job={}).job.kind == "noop"
