-- Cron schedules (core/schedules.py, core/scheduler.py; docs/cron.md). The database's
-- clock decides which ticks are due; Python (croniter) says when the ticks are.

-- name: schedule_clock
SELECT now() AS db_now

-- name: schedule_put
-- Create or replace. A new expression or time zone starts at its first tick after now
-- (computed by the caller from schedule_clock); the same expression and zone keep the
-- watermark, so ticks still due are not lost by re-sending a schedule. Every PUT raises
-- `version`: a schedule_fire that read the old one changes nothing once this commits.
-- `created` tells a new schedule (201) from a replaced one (200): xmax is 0 on a freshly
-- inserted row version.
INSERT INTO job_schedules AS s (name, cron, timezone, job, catch_up, job_kind, job_queue,
                                job_payload, job_priority, job_max_attempts, job_timeout_s,
                                job_delay_s, first_tick_at, next_tick_at)
VALUES (%(name)s, %(cron)s, %(timezone)s, %(job)s::jsonb, %(catch_up)s, %(kind)s, %(queue)s,
        %(payload)s::jsonb, %(priority)s, %(max_attempts)s, %(timeout_s)s, %(delay_s)s,
        %(next_tick_at)s::timestamptz, %(next_tick_at)s::timestamptz)
ON CONFLICT (name) DO UPDATE
SET cron = EXCLUDED.cron, timezone = EXCLUDED.timezone, job = EXCLUDED.job,
    catch_up = EXCLUDED.catch_up, job_kind = EXCLUDED.job_kind,
    job_queue = EXCLUDED.job_queue, job_payload = EXCLUDED.job_payload,
    job_priority = EXCLUDED.job_priority, job_max_attempts = EXCLUDED.job_max_attempts,
    job_timeout_s = EXCLUDED.job_timeout_s, job_delay_s = EXCLUDED.job_delay_s,
    version = s.version + 1,
    first_tick_at = CASE WHEN (s.cron, s.timezone) = (EXCLUDED.cron, EXCLUDED.timezone)
                         THEN s.first_tick_at ELSE EXCLUDED.first_tick_at END,
    next_tick_at = CASE WHEN (s.cron, s.timezone) = (EXCLUDED.cron, EXCLUDED.timezone)
                        THEN s.next_tick_at ELSE EXCLUDED.next_tick_at END,
    updated_at = now()
RETURNING name, cron, timezone, job, catch_up, next_tick_at, created_at, updated_at,
          (xmax = 0) AS created

-- name: schedule_get
SELECT name, cron, timezone, job, catch_up, next_tick_at, created_at, updated_at
FROM job_schedules WHERE name = %(name)s

-- name: schedule_list
SELECT name, cron, timezone, job, catch_up, next_tick_at, created_at, updated_at
FROM job_schedules ORDER BY name

-- name: schedule_delete
-- The schedule and its tick rows (cascade); jobs it made stay. A schedule_fire that read
-- it before this commits waits for the row lock, then finds no row and changes nothing.
DELETE FROM job_schedules WHERE name = %(name)s RETURNING name, next_tick_at

-- name: schedule_ticks_recent
SELECT tick_at, job_id, window_start, fired_at
FROM job_schedule_ticks WHERE schedule = %(name)s
ORDER BY tick_at DESC LIMIT %(limit)s

-- name: schedule_due
-- Schedules with a due watermark, earliest first, with the clock that judged them.
SELECT name, cron, timezone, catch_up, version, next_tick_at, now() AS db_now
FROM job_schedules
WHERE next_tick_at <= now()
ORDER BY next_tick_at
LIMIT %(limit)s

-- name: schedule_next_due
-- Seconds until the earliest watermark (negative: due now); NULL without schedules.
SELECT extract(epoch FROM min(next_tick_at) - now())::float8 AS due_in FROM job_schedules

-- name: schedule_fire
-- One statement, one transaction: move the watermark from the value the caller read
-- (and only if the schedule is still the version it read), record each tick made (the
-- primary key refuses a tick recorded before), create one job per recorded tick, and
-- prune the tick rows beyond the window. Two schedulers racing for one watermark: the
-- second waits for the first's row lock, re-checks its WHERE against the committed row,
-- matches nothing and writes nothing. A scheduler killed or cut off mid-statement leaves
-- all of it or none of it. `won` = 0: another scheduler (or a PUT/DELETE) came first.
WITH advanced AS (
    UPDATE job_schedules
    SET next_tick_at = %(next_tick_at)s::timestamptz
    WHERE name = %(name)s AND version = %(version)s
      AND next_tick_at = %(window_start)s::timestamptz
    RETURNING name, job_kind, job_queue, job_payload, job_priority, job_max_attempts,
              job_timeout_s, job_delay_s
), ticks AS (
    INSERT INTO job_schedule_ticks (schedule, tick_at, job_id, window_start)
    SELECT a.name, t.tick_at, nextval(pg_get_serial_sequence('jobs', 'id')),
           %(window_start)s::timestamptz
    FROM advanced AS a
    CROSS JOIN unnest(%(ticks)s::timestamptz[]) AS t(tick_at)
    ON CONFLICT (schedule, tick_at) DO NOTHING
    RETURNING tick_at, job_id
), made AS (
    INSERT INTO jobs (id, name, kind, queue, payload, priority, run_at, status, max_attempts,
                      timeout_s)
    SELECT t.job_id,
           a.name || '@' || to_char(t.tick_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
           a.job_kind, a.job_queue, a.job_payload, a.job_priority, at.run_at,
           CASE WHEN at.run_at > now() THEN 'scheduled'::job_status ELSE 'new'::job_status END,
           a.job_max_attempts, a.job_timeout_s
    FROM ticks AS t
    CROSS JOIN advanced AS a
    CROSS JOIN LATERAL (SELECT t.tick_at + make_interval(secs => a.job_delay_s) AS run_at) AS at
    RETURNING id
), pruned AS (
    DELETE FROM job_schedule_ticks AS old
    USING advanced AS a
    WHERE old.schedule = a.name
      AND old.tick_at <= (SELECT k.tick_at FROM job_schedule_ticks AS k
                         WHERE k.schedule = a.name
                          ORDER BY k.tick_at DESC OFFSET %(keep)s LIMIT 1)
    RETURNING 1
)
SELECT (SELECT count(*) FROM advanced)::int AS won,
       coalesce((SELECT array_agg(t.tick_at ORDER BY t.tick_at)
                 FROM ticks AS t JOIN made AS m ON m.id = t.job_id), '{}') AS ticks,
       coalesce((SELECT array_agg(t.job_id ORDER BY t.tick_at)
                 FROM ticks AS t JOIN made AS m ON m.id = t.job_id), '{}') AS job_ids,
       (SELECT count(*) FROM pruned)::int AS pruned
