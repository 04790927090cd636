-- The flow-control scenarios' measurements (loadtests/flow_verdict.py), from the jobs
-- table and PostgreSQL's own clock. Pickup = started_at - greatest(created_at, run_at):
-- a job scheduled for later waits from its run_at.

-- name: flow_pickup
-- Pickup latencies (seconds) of one queue's jobs created in [a, b): count, p50, p99, max;
-- and how many of them had not started when measured (after the drain: none).
SELECT count(*) AS jobs,
       count(*) FILTER (WHERE started_at IS NULL) AS not_started,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY w.s) AS p50_s,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY w.s) AS p99_s,
       max(w.s) AS max_s
FROM jobs AS j
CROSS JOIN LATERAL (
    SELECT extract(epoch FROM j.started_at - greatest(j.created_at, j.run_at))::float8 AS s
) AS w
WHERE j.queue = %(queue)s AND j.created_at >= %(a)s AND j.created_at < %(b)s

-- name: flow_pickup_waits
-- When each of one queue's jobs created in [a, b) arrived and started (started ones only).
SELECT greatest(created_at, run_at) AS arrived, started_at
FROM jobs
WHERE queue = %(queue)s AND created_at >= %(a)s AND created_at < %(b)s
  AND started_at IS NOT NULL

-- name: flow_other_starts
-- When the jobs of every other queue started, from %(a)s on, in time order: the claims a
-- waiting job of %(queue)s saw go to others.
SELECT started_at FROM jobs
WHERE queue <> %(queue)s AND started_at >= %(a)s
ORDER BY started_at

-- name: flow_first_created
-- The first job of a queue created at or after %(since)s: where a flood began.
SELECT min(created_at) FROM jobs WHERE queue = %(queue)s AND created_at >= %(since)s

-- name: flow_kind_starts
-- When each job of a kind started (its last claim: flood jobs do not fail, so their
-- only one), for the claims that began before %(until)s, in time order.
SELECT started_at FROM jobs
WHERE kind = %(kind)s AND started_at IS NOT NULL AND started_at < %(until)s
ORDER BY started_at

-- name: flow_limit_changes
-- The changes of one kind's or queue's limits, with when each was saved and took effect.
SELECT rate_per_s, burst, concurrency, paused, changed_at, effective_at
FROM job_limit_changes WHERE scope = %(scope)s AND name = %(name)s ORDER BY id

-- name: flow_completions_per_second
-- Jobs finished per second per queue (the per-queue figure): seconds since %(origin)s.
SELECT floor(extract(epoch FROM finished_at - %(origin)s))::int AS second, queue,
       count(*) AS finished
FROM jobs
WHERE finished_at IS NOT NULL AND finished_at >= %(origin)s
  AND (%(exclude)s::text IS NULL OR name <> %(exclude)s)
GROUP BY 1, 2 ORDER BY 1, 2

-- name: flow_first_started
-- The first start of a queue's job at or after %(since)s: from then on the workers serve
-- the queue (a queue new to them waits for the scout's next look, up to a poll interval).
SELECT min(started_at) FROM jobs WHERE queue = %(queue)s AND started_at >= %(since)s

-- name: flow_finished
-- A queue's jobs finished in [a, b): its throughput in a window.
SELECT count(*) FROM jobs
WHERE queue = %(queue)s AND finished_at >= %(a)s AND finished_at < %(b)s

-- name: flow_served_for
-- Seconds since the workers first started a job of the queue (at or after %(since)s);
-- null while none has started.
SELECT extract(epoch FROM clock_timestamp() - min(started_at))::float8 FROM jobs
WHERE queue = %(queue)s AND started_at >= %(since)s
