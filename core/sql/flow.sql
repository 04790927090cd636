-- Flow control: queue and kind settings (core/flow.py), the limited claim, live counts.

-- name: job_queue_put
-- Set a queue's settings (every field given). A new rate starts with a full bucket; the
-- change is recorded for the checker and the dashboard (effective_at is set after the
-- commit, by job_limit_change_effective).
WITH saved AS (
    INSERT INTO job_queues AS jq (name, concurrency, rate_per_s, burst, weight, paused, tokens,
                                  refilled_at, updated_at)
    VALUES (%(name)s, %(concurrency)s::int, %(rate_per_s)s::float8, %(burst)s::int,
            %(weight)s::int, %(paused)s::bool, %(burst)s::int, now(), now())
    ON CONFLICT (name) DO UPDATE
    SET concurrency = EXCLUDED.concurrency, rate_per_s = EXCLUDED.rate_per_s,
        burst = EXCLUDED.burst, weight = EXCLUDED.weight, paused = EXCLUDED.paused,
        tokens = CASE WHEN jq.rate_per_s IS NULL OR jq.burst <> EXCLUDED.burst
                      THEN EXCLUDED.burst::float8 ELSE least(jq.tokens, EXCLUDED.burst) END,
        refilled_at = CASE WHEN jq.rate_per_s IS NULL THEN now() ELSE jq.refilled_at END,
        updated_at = now()
    RETURNING *, (xmax = 0) AS created
), change AS (
    INSERT INTO job_limit_changes (scope, name, concurrency, rate_per_s, burst, paused)
    SELECT 'queue', name, concurrency, rate_per_s, burst, paused FROM saved
    RETURNING id
)
SELECT saved.name, saved.created, change.id AS change_id FROM saved, change

-- name: job_kind_put
WITH saved AS (
    INSERT INTO job_kinds AS jk (name, concurrency, rate_per_s, burst, paused, tokens,
                                 refilled_at, updated_at)
    VALUES (%(name)s, %(concurrency)s::int, %(rate_per_s)s::float8, %(burst)s::int,
            %(paused)s::bool, %(burst)s::int, now(), now())
    ON CONFLICT (name) DO UPDATE
    SET concurrency = EXCLUDED.concurrency, rate_per_s = EXCLUDED.rate_per_s,
        burst = EXCLUDED.burst, paused = EXCLUDED.paused,
        tokens = CASE WHEN jk.rate_per_s IS NULL OR jk.burst <> EXCLUDED.burst
                      THEN EXCLUDED.burst::float8 ELSE least(jk.tokens, EXCLUDED.burst) END,
        refilled_at = CASE WHEN jk.rate_per_s IS NULL THEN now() ELSE jk.refilled_at END,
        updated_at = now()
    RETURNING *, (xmax = 0) AS created
), change AS (
    INSERT INTO job_limit_changes (scope, name, concurrency, rate_per_s, burst, paused)
    SELECT 'kind', name, concurrency, rate_per_s, burst, paused FROM saved
    RETURNING id
)
SELECT saved.name, saved.created, change.id AS change_id FROM saved, change

-- name: job_limit_change_effective
-- In its own transaction, after the change committed: every claim that begins later sees it.
UPDATE job_limit_changes SET effective_at = clock_timestamp() WHERE id = %(id)s
RETURNING effective_at

-- name: job_flow_settings
-- What the scout tells the claim planner: each queue's weight, pause and whether it has a
-- limit, and whether any kind has one. (The claims themselves read the settings under
-- their own snapshot or locks: a stale planner only costs a round.)
SELECT name, weight, paused, (concurrency IS NOT NULL OR rate_per_s IS NOT NULL) AS limited,
       EXISTS (SELECT 1 FROM job_kinds
               WHERE concurrency IS NOT NULL OR rate_per_s IS NOT NULL OR paused)
           AS kinds_limited
FROM job_queues
UNION ALL
SELECT NULL, NULL, NULL, NULL,
       EXISTS (SELECT 1 FROM job_kinds
               WHERE concurrency IS NOT NULL OR rate_per_s IS NOT NULL OR paused)

-- name: job_claim_limited
-- One queue's claim under its limits and those of the kinds (boundq_claim_limited).
SELECT * FROM boundq_claim_limited(%(owner)s, %(queue)s, %(n)s, %(oldest)s, %(lease_s)s)

-- name: job_queue_list
-- Every queue that has settings, runnable jobs or running ones (or just the one asked
-- for), with its settings and live counts. Counts use the partial indexes; waiting stops
-- at the cap (a count at the cap means at least); processing counts the running rows
-- (bounded by every worker's permits).
WITH RECURSIVE waiting_queues(name) AS (
    (SELECT queue FROM jobs WHERE status = 'new' AND %(name)s::text IS NULL
     ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT queue FROM jobs WHERE status = 'new' AND queue > w.name
            ORDER BY queue LIMIT 1)
    FROM waiting_queues AS w WHERE w.name IS NOT NULL
), names AS (
    SELECT name FROM waiting_queues WHERE name IS NOT NULL
    UNION
    SELECT name FROM job_queues WHERE %(name)s::text IS NULL
    UNION
    SELECT queue FROM jobs
    WHERE started_at IS NOT NULL AND finished_at IS NULL AND %(name)s::text IS NULL
    UNION
    SELECT %(name)s::text WHERE %(name)s::text IS NOT NULL
)
SELECT n.name, jq.concurrency, jq.rate_per_s, coalesce(jq.burst, 1) AS burst,
       coalesce(jq.weight, 1) AS weight, coalesce(jq.paused, false) AS paused,
       (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE status = 'new' AND queue = n.name
                              LIMIT %(cap)s) AS w) AS waiting,
       (SELECT count(*) FROM jobs WHERE started_at IS NOT NULL AND finished_at IS NULL
                                    AND queue = n.name) AS processing,
       jq.updated_at
FROM names AS n LEFT JOIN job_queues AS jq ON jq.name = n.name
ORDER BY n.name

-- name: job_kind_list
-- Kinds with settings (or just the one asked for), with live counts: processing from the
-- running rows; waiting among the first `cap` runnable jobs (no index holds jobs by
-- kind: a bounded read, so a count at the cap means "at least").
WITH names AS (
    SELECT name FROM job_kinds WHERE %(name)s::text IS NULL
    UNION
    SELECT %(name)s::text WHERE %(name)s::text IS NOT NULL
)
SELECT n.name, jk.concurrency, jk.rate_per_s, coalesce(jk.burst, 1) AS burst,
       coalesce(jk.paused, false) AS paused,
       (SELECT count(*) FROM (SELECT kind FROM jobs WHERE status = 'new' LIMIT %(cap)s) AS w
        WHERE w.kind = n.name) AS waiting,
       (SELECT count(*) FROM jobs WHERE started_at IS NOT NULL AND finished_at IS NULL
                                    AND kind = n.name) AS processing,
       jk.updated_at
FROM names AS n LEFT JOIN job_kinds AS jk ON jk.name = n.name
ORDER BY n.name
