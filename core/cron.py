"""The schedule model: a cron expression in a time zone, its ticks, and a validated schedule.

Ticks come from croniter, computed in the schedule's time zone and handed out as UTC
instants. Two rules on top of croniter, both about daylight saving time:

- Spring forward: a wall-clock time that does not exist that day (02:30 when clocks jump
  from 02:00 to 03:00) ticks once, at the first instant after the gap (03:00 local);
  croniter does this itself.
- Fall back: a wall-clock hour that happens twice. An expression whose hour field is a
  wildcard (`*`, `*/2`) ticks through both passes, since its ticks are spaced in real
  time (`*/30 * * * *` stays every 30 minutes). An expression that names its hours
  (`30 2 * * *`, `0 1-3 * * *`) ticks in the first pass only: a daily 02:30 job runs once
  that day, not twice (croniter alone would give both; vixie cron runs it once too).

The public contract is five fields (minute hour day-of-month month day-of-week). A sixth
field (seconds, croniter's format) is accepted only where a caller asks for it
(`seconds=True`): the invariant harness uses it to see many ticks in a few seconds.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from croniter.croniter import CroniterBadDateError, CroniterError

from boundq.core.config import Settings
from boundq.core.errors import JobValidationError
from boundq.core.handlers import Registry
from boundq.core.validation import JobSpec, check_queue_name, validate_job

MAX_CRON_CHARS = 200
MAX_ZONE_CHARS = 100
CATCH_UP_DEFAULT = 1
CATCH_UP_MAX = 100
CRON_FIELDS = "minute hour day-of-month month day-of-week"
# A tick's job is named `<schedule>@<tick>`; this is the longest tick part.
TICK_NAME_EXAMPLE = "@2000-01-01T00:00:00Z"
# The template fields a schedule decides for itself.
FORBIDDEN_TEMPLATE_FIELDS = {
    "name": "a schedule names each job <schedule>@<tick> (the tick in UTC); leave name out",
    "run_at": "a schedule's job runs at its tick; give delay to run it later than the tick",
    "dedupe_key": "each tick makes exactly one job; a dedupe_key would let a live job "
                  "swallow a tick",
    "depends_on": "a tick's job cannot wait for other jobs: every tick would wait for the "
                  "same ones",
    "depends_on_index": "a schedule's job is not part of a bulk upload",
}
# When an expression has no next tick croniter can find (it never fires again), the
# watermark moves here: the schedule is never due again.
NEVER = datetime(9999, 12, 31, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)


class CronError(ValueError):
    """An expression croniter cannot iterate (said in one line)."""


def _second_pass(local: datetime) -> bool:
    """A wall-clock time in the hour that repeats when the clocks go back, second time."""
    return local.fold == 1 and local.replace(fold=0).utcoffset() != local.utcoffset()


@dataclass(frozen=True, slots=True)
class Cron:
    """An expression and its time zone; every instant it hands out is UTC."""

    expr: str
    zone: ZoneInfo

    @property
    def _hours_named(self) -> bool:
        return not self.expr.split()[1].startswith("*")

    def _keep(self, local: datetime) -> bool:
        return not (self._hours_named and _second_pass(local))

    def _iter(self, start: datetime) -> croniter:
        try:
            return croniter(self.expr, start.astimezone(self.zone))
        except CroniterError as exc:
            raise CronError(f"{self.expr!r}: {exc}") from None

    def next_after(self, instant: datetime) -> datetime:
        """The first tick strictly after `instant`; NEVER when there is none."""
        it = self._iter(instant)
        while True:
            try:
                local: datetime = it.get_next(datetime)
            except CroniterBadDateError:
                return NEVER
            if self._keep(local):
                return local.astimezone(UTC)

    def latest(self, since: datetime, until: datetime, limit: int) -> list[datetime]:
        """The last `limit` ticks in [since, until], oldest first. Walks back from
        `until`, so a long outage costs `limit` steps, not one per missed tick."""
        it = self._iter(until + _MICRO)  # get_prev is strictly before its start
        out: list[datetime] = []
        while len(out) < limit:
            try:
                local: datetime = it.get_prev(datetime)
            except CroniterBadDateError:
                break
            tick = local.astimezone(UTC)
            if tick < since:
                break
            if self._keep(local):
                out.append(tick)
        out.reverse()
        return out

    def between(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """Every tick in [start, end), in order (tests and the history checker)."""
        tick = self.next_after(start - _MICRO)
        while tick < end:
            yield tick
            tick = self.next_after(tick)


def parse_cron(expr: Any, *, seconds: bool = False) -> str:
    """The expression with its fields separated by one space; JobValidationError('cron')."""
    if not isinstance(expr, str):
        raise JobValidationError("cron", f"must be a string of 5 fields ({CRON_FIELDS})")
    fields = expr.split()
    wanted = (5, 6) if seconds else (5,)
    if len(expr) > MAX_CRON_CHARS or len(fields) not in wanted:
        raise JobValidationError("cron", f"must have 5 fields ({CRON_FIELDS}), like "
                                         f"'*/5 * * * *'; got {len(fields)}")
    text = " ".join(fields)
    if not croniter.is_valid(text):
        raise JobValidationError("cron", f"{text!r} is not a valid cron expression "
                                         f"({CRON_FIELDS})")
    return text


def parse_zone(name: Any) -> ZoneInfo:
    """An IANA time zone such as `UTC` or `Europe/Berlin`; JobValidationError('timezone')."""
    if not isinstance(name, str) or not name or len(name) > MAX_ZONE_CHARS or "\x00" in name:
        raise JobValidationError("timezone", "must be an IANA time zone name such as UTC or "
                                             "Europe/Berlin")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise JobValidationError("timezone", f"unknown time zone {name!r}; use an IANA name "
                                             f"such as UTC or Europe/Berlin") from None


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """A validated schedule, ready to store. `job` is the template as validate_job made
    it (its name is a placeholder); `template` is what the client sent, for GET."""

    name: str
    cron: Cron
    timezone: str
    template: dict[str, Any]
    job: JobSpec
    catch_up: int


def _catch_up(value: Any) -> int:
    if value is None:
        return CATCH_UP_DEFAULT
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= CATCH_UP_MAX:
        raise JobValidationError("catch_up", f"must be an integer between 1 and {CATCH_UP_MAX}")
    return value


def _template(name: str, job: Any, registry: Registry, settings: Settings) -> tuple[
        dict[str, Any], JobSpec]:
    if job is None:
        raise JobValidationError("job", "is required: the job each tick creates "
                                        "(the fields of POST /jobs, without name)")
    if not isinstance(job, Mapping):
        raise JobValidationError("job", "must be a JSON object (the fields of POST /jobs)")
    for field, why in FORBIDDEN_TEMPLATE_FIELDS.items():
        if job.get(field) is not None:
            raise JobValidationError(f"job.{field}", why)
    template = {k: v for k, v in job.items() if k != "status" and v is not None}
    try:
        spec = validate_job({**job, "name": name + TICK_NAME_EXAMPLE}, registry, settings)
    except JobValidationError as exc:
        field = "job" if exc.field == "body" else f"job.{exc.field}"
        raise JobValidationError(field, exc.message) from None
    return template, spec


def validate_schedule(name: Any, body: Mapping[str, Any], registry: Registry,
                      settings: Settings, *, seconds: bool = False,
                      now: datetime | None = None) -> ScheduleSpec:
    """Check a schedule (API body, CLI, Python): each problem names its field (`name`,
    `cron`, `timezone`, `catch_up`, `job` or `job.<field>` as POST /jobs names it)."""
    check_queue_name(name, "name")
    unknown = set(body) - {"cron", "timezone", "job", "catch_up"}
    if unknown:
        raise JobValidationError(sorted(unknown)[0], "is not a known field")
    if body.get("cron") is None:
        raise JobValidationError("cron", f"is required: 5 fields ({CRON_FIELDS})")
    expr = parse_cron(body["cron"], seconds=seconds)
    if body.get("timezone") is None:
        raise JobValidationError("timezone", "is required: an IANA name such as UTC")
    zone = parse_zone(body["timezone"])
    catch_up = _catch_up(body.get("catch_up"))
    template, job = _template(name, body.get("job"), registry, settings)
    cron = Cron(expr, zone)
    try:
        never = cron.next_after(now or datetime.now(UTC)) == NEVER
    except CronError as exc:
        raise JobValidationError("cron", str(exc)) from None
    if never:
        raise JobValidationError("cron", f"{expr!r} never fires")
    return ScheduleSpec(name, cron, body["timezone"], template, job, catch_up)
