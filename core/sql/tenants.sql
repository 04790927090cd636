-- Scoped variants for tokens of API_TOKENS that may use some queues only (server/auth.py,
-- server/tenancy.py). `queues` is the caller's list; a job of another queue is treated
-- exactly as a job that does not exist. Callers with every queue use the unscoped blocks
-- of queries.sql and stats.sql.

-- name: job_lock_in_queues
-- The first statement of a scoped cancel or retry, in the transaction of the change: the
-- row lock holds the job (and its queue) until the change commits, so the check and the
-- change see one version of the row. A row updated meanwhile is re-read under the lock
-- and checked again.
SELECT id FROM jobs WHERE id = %(id)s AND queue = ANY(%(queues)s::text[]) FOR UPDATE

-- name: job_list_in_queues
-- job_list within the caller's queues: the same bounded scan of at most `scan` ids below
-- the cursor, filtered after, so a page costs the same however many jobs other queues
-- hold (the page may come back short; next_cursor continues below what was read).
SELECT * FROM (
    SELECT * FROM jobs
    WHERE (%(before_id)s::bigint IS NULL OR id < %(before_id)s::bigint)
    ORDER BY id DESC
    LIMIT %(scan)s
) AS window_
WHERE queue = ANY(%(queues)s::text[])
  AND (%(status)s::job_status IS NULL OR status = %(status)s::job_status)
  AND (%(kind)s::text IS NULL OR kind = %(kind)s::text)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
ORDER BY id DESC
LIMIT %(limit)s

-- name: job_ids_outside_queues
-- Of a bulk upload's ids, those that are not (visibly) jobs of the caller's queues: the
-- live jobs of other queues that hold an item's dedupe_key. Run in the upload's
-- transaction, where the rows it wrote are its own.
SELECT x.id FROM unnest(%(ids)s::bigint[]) AS x(id)
WHERE NOT EXISTS (SELECT 1 FROM jobs WHERE jobs.id = x.id
                                       AND jobs.queue = ANY(%(queues)s::text[]))

-- name: job_count_active_in_queues_capped
-- job_count_active_capped within the caller's queues. `new` walks the claim index
-- (queue first) one queue at a time, in its order (with `queue = ANY(...)`, or without
-- the ORDER BY, a generic plan scanned the table) and `processing` the running rows (bounded by the permits of all
-- workers): both exact up to the cap. The indexes of `scheduled` and `blocked` do not
-- lead with the queue, so those two count the caller's rows among at most `cap` rows of
-- every queue: exact while fewer than `cap` wait in that state in all queues together,
-- a lower bound beyond.
SELECT (SELECT count(*) FROM (
            SELECT 1 FROM unnest(%(queues)s::text[]) AS q(name)
            CROSS JOIN LATERAL (SELECT 1 FROM jobs WHERE status = 'new' AND queue = q.name
                                ORDER BY priority DESC, run_at, id
                                LIMIT %(cap)s) AS w
            LIMIT %(cap)s) AS a) AS new,
       (SELECT count(*) FILTER (WHERE queue = ANY(%(queues)s::text[]))
        FROM (SELECT queue FROM jobs WHERE status = 'scheduled' LIMIT %(cap)s) AS b)
           AS scheduled,
       (SELECT count(*) FILTER (WHERE queue = ANY(%(queues)s::text[]))
        FROM (SELECT queue FROM jobs WHERE status = 'blocked' LIMIT %(cap)s) AS c) AS blocked,
       (SELECT count(*) FROM jobs
        WHERE started_at IS NOT NULL AND finished_at IS NULL
          AND queue = ANY(%(queues)s::text[])) AS processing

-- name: job_oldest_waiting_in_queues
-- job_oldest_waiting for the caller's queues: the first entry of each (queue, priority)
-- range of the claim index.
SELECT extract(epoch FROM now() - min(w.run_at))::float8 AS age_s
FROM unnest(%(queues)s::text[]) AS q(name)
CROSS JOIN generate_series(0, 9) AS p(priority)
CROSS JOIN LATERAL (
    SELECT run_at FROM jobs
    WHERE status = 'new' AND queue = q.name AND priority = p.priority
    ORDER BY priority DESC, run_at, id
    LIMIT 1
) AS w
