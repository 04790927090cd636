-- Reads for the dashboard (server/ui). Like stats.sql, none of them reads history: every
-- block walks a partial index of active rows no further than a cap, or a bounded range
-- of an index ordered the way the page reads it, so a page costs the same with 10k or
-- 10M finished rows. `queues` is the caller's scope: NULL for every queue, or the names
-- it may see (server/ui/access.py).

-- name: session_plans_bounded_set
-- The dashboard reads in a transaction with the plan shapes of the worker's sessions
-- (core/db.py WORKER_OPTIONS): index walks in index order and nested loops, no sorts,
-- sequential or bitmap scans, hash or merge joins. Each block below has such a plan; left
-- to its estimates, the planner may bitmap-scan every matching row and sort it to return
-- the first page (every dead letter, say). SET LOCAL: the settings end with the
-- transaction, so the API's other statements on the same pooled connection keep theirs.
SELECT set_config('enable_sort', 'off', true), set_config('enable_seqscan', 'off', true),
       set_config('enable_bitmapscan', 'off', true),
       set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)

-- name: db_now_get
-- The database clock: the charts' last minute and every age shown are measured on it.
SELECT now() AS now

-- name: job_count_by_queue_capped
-- Active rows per queue and state. `new`: per queue on the claim index, whose first
-- column is the queue (the names are found by skipping through it, a probe per queue),
-- counted no further than `cap` each. `scheduled` and `blocked`: over the first `cap`
-- rows of their own indexes, which hold no queue. `processing`: every running row, a set
-- bounded by the permits of all workers. `capped` says a count stopped at its cap.
WITH RECURSIVE q(name) AS (
    (SELECT queue FROM jobs WHERE status = 'new' ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT queue FROM jobs WHERE status = 'new' AND queue > q.name
            ORDER BY queue LIMIT 1)
    FROM q WHERE q.name IS NOT NULL
), later AS MATERIALIZED (
    (SELECT queue, 'scheduled' AS status FROM jobs WHERE status = 'scheduled'
     ORDER BY run_at, id LIMIT %(cap)s)
    UNION ALL
    (SELECT queue, 'blocked' FROM jobs WHERE status = 'blocked' ORDER BY id LIMIT %(cap)s)
)
SELECT q.name AS queue, 'new' AS status, w.n, w.n >= %(cap)s AS capped
FROM q
CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM (
        SELECT 1 FROM jobs WHERE status = 'new' AND queue = q.name LIMIT %(cap)s
    ) AS one_queue
) AS w
WHERE q.name IS NOT NULL
  AND (%(queues)s::text[] IS NULL OR q.name = ANY(%(queues)s::text[]))
UNION ALL
SELECT queue, status, count(*),
       (SELECT count(*) FROM later AS l WHERE l.status = later.status) >= %(cap)s
FROM later
WHERE %(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[])
GROUP BY queue, status
UNION ALL
SELECT queue, 'processing', count(*), false
FROM jobs
WHERE started_at IS NOT NULL AND finished_at IS NULL
  AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
GROUP BY queue

-- name: job_count_by_kind_capped
-- Per kind, bounded three ways: every running row (bounded by the permits); among the
-- next `next_cap` jobs of each queue in claim order (what runs next); and among the jobs
-- that finished in the last minute, no more than `finished_cap` of them (a backward range
-- of the finished index). `*_capped` says a window was full: its counts are lower bounds.
WITH RECURSIVE q(name) AS (
    (SELECT queue FROM jobs WHERE status = 'new' ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT queue FROM jobs WHERE status = 'new' AND queue > q.name
            ORDER BY queue LIMIT 1)
    FROM q WHERE q.name IS NOT NULL
), next_up AS MATERIALIZED (
    SELECT w.kind, w.queue
    FROM q
    CROSS JOIN LATERAL (
        SELECT kind, queue FROM jobs
        WHERE status = 'new' AND queue = q.name
        ORDER BY priority DESC, run_at, id
        LIMIT %(next_cap)s
    ) AS w
    WHERE q.name IS NOT NULL
      AND (%(queues)s::text[] IS NULL OR q.name = ANY(%(queues)s::text[]))
), next_full AS (
    SELECT coalesce(bool_or(n >= %(next_cap)s), false) AS full_
    FROM (SELECT count(*) AS n FROM next_up GROUP BY queue) AS per_queue
), running AS MATERIALIZED (
    SELECT kind FROM jobs
    WHERE started_at IS NOT NULL AND finished_at IS NULL
      AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
), finished AS MATERIALIZED (
    SELECT kind, queue, status FROM jobs
    WHERE finished_at IS NOT NULL AND finished_at >= now() - interval '1 minute'
    ORDER BY finished_at DESC
    LIMIT %(finished_cap)s
), finished_full AS (
    SELECT count(*) >= %(finished_cap)s AS full_ FROM finished
), recent AS (
    SELECT kind, status FROM finished
    WHERE %(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[])
)
SELECT kinds.kind,
       (SELECT count(*) FROM running AS r WHERE r.kind = kinds.kind) AS running,
       (SELECT count(*) FROM next_up AS n WHERE n.kind = kinds.kind) AS next_up,
       (SELECT full_ FROM next_full) AS next_up_capped,
       (SELECT count(*) FROM recent AS f
        WHERE f.kind = kinds.kind AND f.status = 'success') AS succeeded_last_minute,
       (SELECT count(*) FROM recent AS f
        WHERE f.kind = kinds.kind AND f.status = 'failed') AS failed_last_minute,
       (SELECT full_ FROM finished_full) AS last_minute_capped
FROM (SELECT kind FROM running UNION SELECT kind FROM next_up
      UNION SELECT kind FROM recent) AS kinds
ORDER BY kinds.kind

-- name: job_list_failed
-- Dead letters, newest first, keyset on id, walking jobs_settled_status_idx (status, id)
-- backwards. The status is matched as `= ANY(array)` and ordered on with the id so that
-- only that index gives the order: with `status = 'failed'` the planner may walk the
-- primary key instead and filter, which reads every newer row of another state when the
-- dead letters are old. A queue filter reads at most `scan` entries below the cursor (the
-- page may come back short; the next page starts below what was read:
-- job_list_failed_scan_floor), so a page never walks the whole dead-letter history.
SELECT id, name, kind, queue, attempts, max_attempts, last_error, finished_at
FROM (
    SELECT id, name, kind, queue, attempts, max_attempts, last_error, finished_at
    FROM jobs
    WHERE status = ANY('{failed}'::job_status[])
      AND (%(before_id)s::bigint IS NULL OR id < %(before_id)s::bigint)
    ORDER BY status DESC, id DESC
    LIMIT %(scan)s
) AS window_
WHERE %(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[])
ORDER BY id DESC
LIMIT %(limit)s

-- name: job_list_failed_scan_floor
-- The lowest id a bounded job_list_failed window read, and how many entries it read.
SELECT min(id) AS floor, count(*) AS n FROM (
    SELECT id FROM jobs
    WHERE status = ANY('{failed}'::job_status[])
      AND (%(before_id)s::bigint IS NULL OR id < %(before_id)s::bigint)
    ORDER BY status DESC, id DESC
    LIMIT %(scan)s
) AS window_

-- name: job_list_running
-- Running jobs, longest running first: the running index, bounded by the permits.
SELECT id, name, kind, queue, attempts, max_attempts, lease_owner, started_at
FROM jobs
WHERE started_at IS NOT NULL AND finished_at IS NULL
  AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
ORDER BY started_at, id
LIMIT %(limit)s

-- name: job_list_next_in_queue
-- The next runnable jobs of one queue, in the order the claim takes them (claim index).
SELECT id, name, kind, queue, priority, attempts, max_attempts, run_at, created_at
FROM jobs
WHERE status = 'new' AND queue = %(queue)s
ORDER BY priority DESC, run_at, id
LIMIT %(limit)s

-- name: job_queues_list
-- Flow control's settings of the queues the scope sees, by name (its primary key). The
-- table holds one row per configured queue, so the read is bounded by the configuration,
-- not by the jobs.
SELECT name, concurrency, rate_per_s, burst, weight, paused
FROM job_queues
WHERE %(queues)s::text[] IS NULL OR name = ANY(%(queues)s::text[])
ORDER BY name
