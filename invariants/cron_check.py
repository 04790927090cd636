"""`one_job_per_tick`, judged from one snapshot of `job_schedules`, `job_schedule_ticks`
and `jobs` (the checker's part for cron schedules, docs/cron.md).

For each schedule, the ticks of its expression from its first tick up to its watermark
(the first tick not yet handled) must each be accounted for exactly once:

- made: one tick row, whose job exists and is named `<schedule>@<tick>`, and no other
  job of that name; or
- skipped by the catch-up rule: a statement that started from watermark W and made jobs
  for ticks R (its rows, window_start = W) skipped the ticks in [W, first of R). R must be
  the latest ticks of [W, last of R], and there may be skipped ticks only when R holds
  catch_up of them.

No job or tick row may exist for an instant that is not a tick, or for a tick at or past
the watermark (a tick of an expression after it changed, or of a schedule after it was
retired). With `healed_at` (final check), every watermark must have moved past the
instant faults healed: schedulers caught up.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from boundq.core.cron import Cron


@dataclass(frozen=True, slots=True)
class Schedule:
    name: str
    cron: str
    timezone: str
    catch_up: int
    first_tick_at: datetime
    next_tick_at: datetime  # the watermark (for a retired schedule: the one it had)


@dataclass(frozen=True, slots=True)
class Tick:
    schedule: str
    tick_at: datetime
    job_id: int
    window_start: datetime


def job_name(schedule: str, tick: datetime) -> str:
    return f"{schedule}@{tick:%Y-%m-%dT%H:%M:%SZ}"


def scheduled_job(name: str, schedules: Iterable[Schedule]) -> bool:
    return any(name.startswith(s.name + "@") for s in schedules)


Found = tuple[tuple[int, ...], str]


def check_schedule(s: Schedule, rows: list[Tick], jobs: dict[str, list[int]],
                   healed_at: datetime | None) -> list[Found]:
    """Violations for one schedule; `jobs` maps each job name to the ids bearing it."""
    out: list[Found] = []
    expected = list(Cron(s.cron, ZoneInfo(s.timezone)).between(s.first_tick_at,
                                                                s.next_tick_at))
    known = set(expected)
    rows = sorted((r for r in rows if r.tick_at >= s.first_tick_at), key=lambda r: r.tick_at)
    by_tick = {r.tick_at: r for r in rows}
    for r in rows:
        ids = jobs.get(job_name(s.name, r.tick_at), [])
        if r.tick_at not in known:
            past = r.tick_at >= s.next_tick_at
            out.append(((r.job_id,), f"{s.name}: tick row at {r.tick_at}, "
                        + ("at or past the watermark " f"{s.next_tick_at}" if past
                           else "which is not a tick of " f"{s.cron!r}")))
        elif r.job_id not in ids:
            out.append(((r.job_id, *ids), f"{s.name}: the tick at {r.tick_at} records job "
                                          f"{r.job_id}, which is not its job (jobs {ids})"))
    prefix = s.name + "@"
    named = {job_name(s.name, t): t for t in expected}
    recorded = {job_name(s.name, r.tick_at) for r in rows}
    for name, ids in jobs.items():
        if not name.startswith(prefix):
            continue
        at = name[len(prefix):]
        tick = named.get(name)
        if len(ids) > 1:
            out.append((tuple(ids), f"{s.name}: {len(ids)} jobs for the tick at {at}"))
        if tick is None and name not in recorded:
            out.append((tuple(ids), f"{s.name}: job for {at}, which is not a tick before "
                                    f"the watermark {s.next_tick_at} and has no tick row"))
        elif tick is not None and tick not in by_tick:
            out.append((tuple(ids), f"{s.name}: job for the tick at {at} without a tick row "
                                    f"(made outside the statement that records the tick)"))
    skipped: set[datetime] = set()
    fires: dict[datetime, list[Tick]] = defaultdict(list)
    for r in rows:
        fires[r.window_start].append(r)
    for start, made in fires.items():
        window = [t for t in expected if start <= t <= made[-1].tick_at]
        ticks = [r.tick_at for r in made]
        if start not in known or ticks != window[-len(ticks):]:
            out.append((tuple(r.job_id for r in made),
                        f"{s.name}: a fire from {start} made ticks {ticks}, not the latest "
                        f"ticks of its window"))
        lost = window[:-len(ticks)]
        if lost and len(ticks) != s.catch_up:
            out.append((tuple(r.job_id for r in made),
                        f"{s.name}: a fire from {start} skipped {len(lost)} tick(s) but made "
                        f"{len(ticks)} job(s), fewer than catch_up={s.catch_up}"))
        skipped.update(lost)
    missing = [t for t in expected if t not in by_tick and t not in skipped]
    if missing:
        out.append(((), f"{s.name}: {len(missing)} tick(s) before the watermark with neither a "
                        f"job nor a skip on record, first {missing[0]}"))
    if healed_at is not None and s.next_tick_at <= healed_at:
        out.append(((), f"{s.name}: the watermark {s.next_tick_at} never passed the instant "
                        f"faults healed ({healed_at}): no scheduler caught up"))
    return out


def check_ticks(schedules: list[Schedule], ticks: list[Tick], names: dict[int, str],
                healed_at: datetime | None) -> list[Found]:
    """`names`: every job's id -> name."""
    jobs: dict[str, list[int]] = defaultdict(list)
    for job_id, name in names.items():
        jobs[name].append(job_id)
    rows: dict[str, list[Tick]] = defaultdict(list)
    for t in ticks:
        rows[t.schedule].append(t)
    out: list[Found] = []
    for s in schedules:
        out += check_schedule(s, rows.get(s.name, []), jobs, healed_at)
    return out
