-- Reads for /stats, GET /queues and the dashboard. None of them counts history: finished
-- work comes from job_tallies (written by the statements that move jobs, see
-- queries.sql), active rows from their partial indexes, counted no further than a cap.

-- name: job_tally_totals
-- Rows in each terminal state, per queue: the sums of the tallies' *_n columns.
SELECT queue, sum(success_n)::bigint AS success, sum(failed_n)::bigint AS failed,
       sum(cancelled_n)::bigint AS cancelled
FROM job_tallies
GROUP BY queue

-- name: job_tally_recent
-- Events of the last `window_s` whole seconds, per queue (second grain: window_s must
-- stay below the fold's seconds_kept).
SELECT queue, sum(succeeded)::bigint AS succeeded, sum(dead)::bigint AS dead,
       sum(retried)::bigint AS retried, sum(claimed)::bigint AS claimed,
       sum(pickup_s)::float8 AS pickup_s, boundq_sum_counts(pickup_hist) AS pickup_hist
FROM job_tallies
WHERE grain = 's'
  AND bucket >= date_trunc('second', now()) - make_interval(secs => %(window_s)s::float8)
  AND bucket < date_trunc('second', now())
GROUP BY queue

-- name: job_tally_minutes
-- Per minute and queue over the last `window_s` seconds: seconds not yet folded and
-- folded minutes alike.
SELECT date_trunc('minute', bucket) AS minute, queue, sum(succeeded)::bigint AS succeeded,
       sum(dead)::bigint AS dead, sum(claimed)::bigint AS claimed,
       sum(pickup_s)::float8 AS pickup_s, boundq_sum_counts(pickup_hist) AS pickup_hist
FROM job_tallies
WHERE grain IN ('s', 'm') AND bucket >= now() - make_interval(secs => %(window_s)s::float8)
GROUP BY 1, 2
ORDER BY 1, 2

-- name: job_count_active_capped
-- Active rows by state, each counted through its partial index and no further than the
-- cap; processing rows are bounded by the permits of all workers.
SELECT (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE status = 'new'
                              LIMIT %(cap)s) AS a) AS new,
       (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE status = 'scheduled'
                              LIMIT %(cap)s) AS b) AS scheduled,
       (SELECT count(*) FROM (SELECT 1 FROM jobs WHERE status = 'blocked'
                              LIMIT %(cap)s) AS c) AS blocked,
       (SELECT count(*) FROM jobs
        WHERE started_at IS NOT NULL AND finished_at IS NULL) AS processing

-- name: job_oldest_waiting
-- Seconds the oldest runnable job has waited: the first entry of each (queue, priority)
-- range of the claim index, so a handful of probes, never a scan.
WITH RECURSIVE q(name) AS (
    (SELECT queue FROM jobs WHERE status = 'new' ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT queue FROM jobs WHERE status = 'new' AND queue > q.name
            ORDER BY queue LIMIT 1)
    FROM q WHERE q.name IS NOT NULL
)
SELECT extract(epoch FROM now() - min(w.run_at))::float8 AS age_s
FROM q
CROSS JOIN generate_series(0, 9) AS p(priority)
CROSS JOIN LATERAL (
    SELECT run_at FROM jobs
    WHERE status = 'new' AND queue = q.name AND priority = p.priority
    ORDER BY priority DESC, run_at, id
    LIMIT 1
) AS w
WHERE q.name IS NOT NULL
