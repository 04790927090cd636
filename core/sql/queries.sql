-- Every statement boundq runs against the jobs tables, as named blocks.
-- Names are table-first with a verb. Parameters are bound (psycopg %(name)s), never
-- formatted in. tests/test_queries_prepare.py prepares each block against the migrated
-- schema, so a query that no longer fits the schema fails the suite.
--
-- Fencing: every write by a worker to a job it claimed is guarded by
--   id AND attempts = <its attempt> AND lease_owner = <its owner> AND status = 'processing'
-- and zero rows back means the lease was lost: the caller drops its result.
--
-- Tallies: the statements that finish, claim, cancel, retry or delete jobs add what they
-- did to job_tallies in the same statement (one row per writer backend and second), so
-- /stats never counts history (core/sql/stats.sql reads them).

-- name: job_insert
-- One job. A run_at in the future makes it `scheduled` (the stager makes it `new` when
-- due). ON CONFLICT covers dedupe_key among unfinished jobs: no row back = duplicate.
INSERT INTO jobs (name, kind, queue, payload, priority, run_at, status, max_attempts,
                  timeout_s, dedupe_key, trace_parent)
SELECT %(name)s, %(kind)s, %(queue)s, %(payload)s, %(priority)s, at.run_at,
       CASE WHEN at.run_at > now() THEN 'scheduled'::job_status ELSE 'new'::job_status END,
       %(max_attempts)s, %(timeout_s)s, %(dedupe_key)s, %(trace_parent)s
FROM (SELECT coalesce(%(run_at)s::timestamptz, now())
             + make_interval(secs => %(delay_s)s::float8) AS run_at) AS at
ON CONFLICT (dedupe_key)
    WHERE dedupe_key IS NOT NULL AND status IN ('scheduled', 'blocked', 'new', 'processing')
DO NOTHING
RETURNING *

-- name: job_insert_many_deduped
-- Many jobs that carry dedupe keys; duplicates (also within the batch) are skipped.
INSERT INTO jobs (name, kind, queue, payload, priority, run_at, status, max_attempts,
                  timeout_s, dedupe_key, trace_parent)
SELECT name, kind, queue, payload, priority, at.run_at,
       CASE WHEN at.run_at > now() THEN 'scheduled'::job_status ELSE 'new'::job_status END,
       max_attempts, timeout_s, dedupe_key, trace_parent
FROM unnest(
    %(names)s::text[], %(kinds)s::text[], %(queues)s::text[], %(payloads)s::jsonb[],
    %(priorities)s::smallint[], %(run_ats)s::timestamptz[], %(delays)s::float8[],
    %(max_attempts)s::int[], %(timeouts)s::float8[], %(dedupe_keys)s::text[],
    %(trace_parents)s::text[]
) WITH ORDINALITY AS item(name, kind, queue, payload, priority, run_at, delay_s,
                          max_attempts, timeout_s, dedupe_key, trace_parent, ord)
CROSS JOIN LATERAL (SELECT coalesce(item.run_at, now())
                           + make_interval(secs => item.delay_s) AS run_at) AS at
ORDER BY ord
ON CONFLICT (dedupe_key)
    WHERE dedupe_key IS NOT NULL AND status IN ('scheduled', 'blocked', 'new', 'processing')
DO NOTHING
RETURNING id, dedupe_key

-- name: job_reserve_ids
-- Ids for a COPY batch, and the transaction's clock to turn delays into run_at (and to
-- tell `new` from `scheduled`).
SELECT now() AS db_now,
       array_agg(nextval(pg_get_serial_sequence('jobs', 'id'))) AS ids
FROM generate_series(1, %(n)s)

-- name: job_get_active_by_dedupe_key
SELECT * FROM jobs
WHERE dedupe_key = %(dedupe_key)s AND status IN ('scheduled', 'blocked', 'new', 'processing')

-- name: job_get
SELECT * FROM jobs WHERE id = %(id)s

-- name: job_terminal_among
-- Which of these waited jobs have finished (long polls, server/waits.py): primary key only.
SELECT id FROM jobs
WHERE id = ANY(%(ids)s::bigint[]) AND status IN ('success', 'failed', 'cancelled')

-- name: job_attempts_list
-- Ended attempts have a row; the running one (if any) is the jobs row itself.
SELECT job_id, attempt, owner, claimed_at, finished_at, outcome, error
FROM job_attempts WHERE job_id = %(id)s
UNION ALL
SELECT id, attempts, lease_owner, started_at, NULL, NULL, NULL
FROM jobs WHERE id = %(id)s AND status = 'processing'
ORDER BY attempt

-- name: job_complete_and_claim
-- The worker's one statement per cycle: finish a batch of successful attempts (fenced)
-- and, in the same transaction, claim up to `limits` runnable jobs per queue for the
-- permits those attempts held plus free ones (`total` in all, `free` of them free before).
-- A permit therefore passes from a finished job to its successor with no round trip in
-- between, and the rows this owner holds `processing` never outnumber its permits: the
-- finished rows leave `processing` in the very commit that brings the new ones in.
--
-- Finishing writes the attempt rows and the exactly-once effect row of `effect` jobs, so
-- an effect exists if and only if its completion committed; a stale attempt (fenced)
-- writes nothing and its result is never stored. Claiming locks each queue's first
-- runnable rows with SKIP LOCKED in a materialized CTE (LIMIT applies before locking, so
-- never more than the limit) and leases them. No job_attempts row is written for a claim:
-- while a job is processing its jobs row describes the running attempt.
--
-- Chaining: `followups` maps a finished job's id to the jobs its handler created (an
-- array of validated job rows, the fields of job_insert_batch's items). They are inserted
-- from `done`, so they exist if and only if their job's success commits here: a fenced
-- attempt creates none, and a success written again after a lost answer (its first
-- write did not commit) creates them once. '{}' (no follow-ups) reads no row.
WITH done AS (
    UPDATE jobs AS j
    SET status = 'success',
        finished_at = now(),
        updated_at = now(),
        lease_owner = NULL,
        lease_expires_at = NULL,
        last_error = NULL,
        result = %(results)s::jsonb -> mine.id::text
    FROM unnest(%(ids)s::bigint[], %(attempts)s::int[]) AS mine(id, attempt)
    WHERE j.id = mine.id
      AND j.attempts = mine.attempt
      AND j.lease_owner = %(owner)s
      AND j.status = 'processing'
    RETURNING j.id, j.attempts, j.kind, j.queue, j.started_at
), ended AS (
    -- RETURNING gives the new lease_owner (NULL); the fence says it was the caller.
    INSERT INTO job_attempts (job_id, attempt, owner, claimed_at, finished_at, outcome)
    SELECT id, attempts, %(owner)s, started_at, now(), 'success' FROM done
), effects AS (
    INSERT INTO job_effects (job_id, attempt)
    SELECT id, attempts FROM done WHERE kind = 'effect'
), asked AS MATERIALIZED (
    -- the follow-up parameter read once (a join's inner side would re-read it per row)
    SELECT key::bigint AS job_id, value AS rows FROM json_each(%(followups)s::json)
), chained AS (
    -- Follow-ups are plain jobs: `scheduled` when their run_at is ahead, `new` otherwise
    -- (claimed from the next cycle on: this statement's claim does not see them); one
    -- whose dedupe_key a live job holds is skipped, as a create returns the holder.
    INSERT INTO jobs (name, kind, queue, payload, priority, run_at, status, max_attempts,
                      timeout_s, dedupe_key, trace_parent)
    SELECT f.name, f.kind, f.queue, f.payload, f.priority, at.run_at,
           CASE WHEN at.run_at > now() THEN 'scheduled'::job_status ELSE 'new'::job_status END,
           f.max_attempts, f.timeout_s, f.dedupe_key, f.trace_parent
    FROM asked AS fu
    JOIN done ON done.id = fu.job_id
    CROSS JOIN LATERAL ROWS FROM (json_to_recordset(fu.rows) AS (
        name text, kind text, queue text, payload jsonb, priority smallint,
        run_at timestamptz, delay_s float8, max_attempts int, timeout_s float8,
        dedupe_key text, trace_parent text
    )) WITH ORDINALITY AS f(name, kind, queue, payload, priority, run_at, delay_s,
                            max_attempts, timeout_s, dedupe_key, trace_parent, ord)
    CROSS JOIN LATERAL (SELECT coalesce(f.run_at, now())
                               + make_interval(secs => f.delay_s) AS run_at) AS at
    ORDER BY done.id, f.ord
    ON CONFLICT (dedupe_key)
        WHERE dedupe_key IS NOT NULL AND status IN ('scheduled', 'blocked', 'new', 'processing')
    DO NOTHING
), floors AS MATERIALIZED (
    -- Claim floors (core/floors.py), sent only while a snapshot holds the xmin horizon:
    -- per queue and priority, the run_at below which this claim does not look. Every
    -- row a claim took then still has an index entry the scan would walk; none sent (the
    -- usual case, and every rescan) and the claim walks each queue from its head.
    SELECT f.queue, f.p, f.at
    FROM unnest(%(floor_queues)s::text[], %(floor_priorities)s::smallint[],
                %(floor_ats)s::timestamptz[]) AS f(queue, p, at)
), served AS MATERIALIZED (
    -- Queues with a limit or a pause are claimed by boundq_claim_limited (under their
    -- locks), never here; nor are jobs of a kind that has one (they wait for the limited
    -- claim). This statement's snapshot decides: a change that commits later applies from
    -- the next claim on.
    SELECT q.name, q.n, q.oldest
    FROM unnest(%(queues)s::text[], %(limits)s::int[], %(oldest)s::int[]) AS q(name, n, oldest)
    WHERE NOT EXISTS (
        SELECT 1 FROM job_queues AS jq
        WHERE jq.name = q.name
          AND (jq.concurrency IS NOT NULL OR jq.rate_per_s IS NOT NULL OR jq.paused))
), limited_kinds AS MATERIALIZED (
    SELECT coalesce(array_agg(name), '{}') AS names FROM job_kinds
    WHERE concurrency IS NOT NULL OR rate_per_s IS NOT NULL OR paused
), picked AS MATERIALIZED (
    SELECT x.id, x.aged
    FROM served AS q
    -- The aging lane: `oldest` of the n are the queue's longest-waiting runnable jobs,
    -- whatever their priority (the head of each of the ten priorities in the claim index,
    -- oldest first). The planner gives it a tenth of every queue's claims, so no job waits
    -- behind a stream of higher priorities forever (core/planner.py).
    CROSS JOIN LATERAL (
        SELECT coalesce(array_agg(o.id), '{}') AS ids
        FROM (SELECT lvl.p, h.run_at, h.id
              FROM unnest('{9,8,7,6,5,4,3,2,1,0}'::smallint[]) AS lvl(p)
              CROSS JOIN LATERAL (
                  SELECT id, run_at FROM jobs
                  WHERE status = 'new' AND queue = q.name AND priority = lvl.p
                    AND run_at >= coalesce((SELECT max(f.at) FROM floors AS f
                                            WHERE f.queue = q.name AND f.p = lvl.p),
                                           '-infinity')
                    AND run_at <= now()
                    AND kind <> ALL ((SELECT names FROM limited_kinds)::text[])
                  ORDER BY run_at, id
                  LIMIT q.oldest) AS h
              WHERE q.oldest > 0
              ORDER BY h.run_at, h.id
              LIMIT q.oldest) AS c
        -- each locked through a point lookup on every column of the claim index (no plan,
        -- whatever the statistics, can make it a scan); status is re-checked on the
        -- locked row
        CROSS JOIN LATERAL (
            SELECT j.id FROM jobs AS j
            WHERE j.status = 'new' AND j.queue = q.name AND j.priority = c.p
              AND j.run_at = c.run_at AND j.id = c.id
            FOR UPDATE SKIP LOCKED) AS o
    ) AS aged
    CROSS JOIN LATERAL (
        SELECT unnest(aged.ids) AS id, true AS aged
        UNION ALL
        -- without floors: one walk of the queue's part of the claim index, in claim order
        SELECT p.id, false FROM (
            SELECT id FROM jobs
            WHERE status = 'new' AND queue = q.name AND run_at <= now()
              AND kind <> ALL ((SELECT names FROM limited_kinds)::text[])
              AND id <> ALL (aged.ids)
              AND cardinality(%(floor_queues)s::text[]) = 0
            ORDER BY priority DESC, run_at, id
            LIMIT q.n - cardinality(aged.ids)
            FOR UPDATE SKIP LOCKED) AS p
        UNION ALL
        -- with floors: the same order, one range per priority (9 to 0), each starting at
        -- its floor; the outer LIMIT stops the loop, so no more rows are locked than taken
        SELECT s.id, false FROM (
            SELECT r.id
            FROM unnest('{9,8,7,6,5,4,3,2,1,0}'::smallint[]) AS lvl(p)
            CROSS JOIN LATERAL (
                SELECT id FROM jobs
                WHERE status = 'new' AND queue = q.name AND priority = lvl.p
                  AND run_at >= coalesce((SELECT max(f.at) FROM floors AS f
                                          WHERE f.queue = q.name AND f.p = lvl.p),
                                         '-infinity')
                  AND run_at <= now()
                  AND kind <> ALL ((SELECT names FROM limited_kinds)::text[])
                  AND id <> ALL (aged.ids)
                ORDER BY run_at, id
                LIMIT q.n - cardinality(aged.ids)
                FOR UPDATE SKIP LOCKED) AS r
            WHERE cardinality(%(floor_queues)s::text[]) > 0
            LIMIT q.n - cardinality(aged.ids)) AS s
    ) AS x
    -- A permit passes on only from an attempt whose completion commits here: one fenced
    -- (a reaper took the job first) keeps its permit back, so no claim of this statement
    -- ever stands beside a row this owner still held when the statement began. Reading
    -- `done` here also makes the completions run before anything is picked.
    LIMIT least(%(total)s, (SELECT count(*) FROM done) + %(free)s)
), claimed AS (
    UPDATE jobs AS j
    SET status = 'processing',
        attempts = j.attempts + 1,
        lease_owner = %(owner)s,
        lease_expires_at = now() + make_interval(secs => %(lease_s)s::float8),
        started_at = now(),
        updated_at = now()
    FROM picked
    WHERE j.id = picked.id  -- picked holds the row locks, taken after re-checking status
    RETURNING j.id, j.attempts, j.kind, j.queue, j.payload, j.timeout_s, j.run_at,
              j.created_at, greatest(extract(epoch FROM now() - j.run_at), 0)::float8 AS waited_s,
              j.trace_parent, j.priority, picked.aged
), events AS (
    SELECT queue, 1 AS succeeded, 0 AS claimed, NULL::float8 AS waited_s FROM done
    UNION ALL
    SELECT queue, 0, 1, waited_s FROM claimed
), tally AS (
    INSERT INTO job_tallies AS t (grain, bucket, slot, queue, succeeded, success_n, claimed,
                                  pickup_s, pickup_hist)
    SELECT 's', date_trunc('second', now()), pg_backend_pid(), queue, sum(succeeded),
           sum(succeeded), sum(claimed), coalesce(sum(waited_s), 0),
           ARRAY[count(*) FILTER (WHERE waited_s < 0.005),
                 count(*) FILTER (WHERE waited_s >= 0.005 AND waited_s < 0.01),
                 count(*) FILTER (WHERE waited_s >= 0.01 AND waited_s < 0.025),
                 count(*) FILTER (WHERE waited_s >= 0.025 AND waited_s < 0.05),
                 count(*) FILTER (WHERE waited_s >= 0.05 AND waited_s < 0.1),
                 count(*) FILTER (WHERE waited_s >= 0.1 AND waited_s < 0.25),
                 count(*) FILTER (WHERE waited_s >= 0.25 AND waited_s < 0.5),
                 count(*) FILTER (WHERE waited_s >= 0.5 AND waited_s < 1),
                 count(*) FILTER (WHERE waited_s >= 1 AND waited_s < 2.5),
                 count(*) FILTER (WHERE waited_s >= 2.5 AND waited_s < 5),
                 count(*) FILTER (WHERE waited_s >= 5 AND waited_s < 10),
                 count(*) FILTER (WHERE waited_s >= 10 AND waited_s < 30),
                 count(*) FILTER (WHERE waited_s >= 30 AND waited_s < 60),
                 count(*) FILTER (WHERE waited_s >= 60)]
    FROM events
    GROUP BY queue
    ORDER BY queue
    ON CONFLICT (grain, bucket, slot, queue) DO UPDATE
    SET succeeded = t.succeeded + EXCLUDED.succeeded,
        success_n = t.success_n + EXCLUDED.success_n,
        claimed = t.claimed + EXCLUDED.claimed,
        pickup_s = t.pickup_s + EXCLUDED.pickup_s,
        pickup_hist = boundq_add_counts(t.pickup_hist, EXCLUDED.pickup_hist)
)
SELECT false AS claimed, id, attempts, NULL::text AS kind, NULL::text AS queue,
       NULL::jsonb AS payload, NULL::float8 AS timeout_s, NULL::timestamptz AS run_at,
       NULL::timestamptz AS created_at, NULL::float8 AS waited_s, now() AS at,
       NULL::text AS trace_parent, NULL::smallint AS priority, NULL::boolean AS aged
FROM done
UNION ALL
SELECT true, id, attempts, kind, queue, payload, timeout_s, run_at, created_at, waited_s, now(),
       trace_parent, priority, aged
FROM claimed

-- name: job_heartbeat
-- Extend the leases of every job this process still owns; rows not returned are lost.
UPDATE jobs AS j
SET lease_expires_at = now() + make_interval(secs => %(lease_s)s::float8)
FROM unnest(%(ids)s::bigint[], %(attempts)s::int[]) AS mine(id, attempt)
WHERE j.id = mine.id
  AND j.attempts = mine.attempt
  AND j.lease_owner = %(owner)s
  AND j.status = 'processing'
RETURNING j.id

-- name: job_fail_batch
-- Record failed attempts (fenced). With attempts left (and retryable) the job waits out a
-- capped exponential backoff with equal jitter as `scheduled` (the stager makes it `new`
-- when due; `new` at once when the backoff is zero); otherwise it is dead-lettered to
-- `failed`.
WITH failed AS (
    UPDATE jobs AS j
    SET status = CASE WHEN j.attempts >= j.max_attempts OR NOT mine.retryable
                      THEN 'failed'::job_status
                      WHEN b.backoff_s > 0 THEN 'scheduled'::job_status
                      ELSE 'new'::job_status END,
        run_at = CASE WHEN j.attempts >= j.max_attempts OR NOT mine.retryable THEN j.run_at
                      ELSE now() + make_interval(secs => b.backoff_s) END,
        finished_at = CASE WHEN j.attempts >= j.max_attempts OR NOT mine.retryable
                           THEN now() END,
        started_at = CASE WHEN j.attempts >= j.max_attempts OR NOT mine.retryable
                          THEN j.started_at END,
        lease_owner = NULL,
        lease_expires_at = NULL,
        last_error = mine.error,
        updated_at = now()
    FROM unnest(%(ids)s::bigint[], %(attempts)s::int[], %(errors)s::text[],
                %(outcomes)s::attempt_outcome[], %(retryable)s::bool[])
         AS mine(id, attempt, error, outcome, retryable)
    CROSS JOIN LATERAL (
        SELECT least(%(retry_max_s)s::float8,
                     %(retry_base_s)s::float8 * power(2::float8, mine.attempt - 1))
               * (0.5 + random() * 0.5) AS backoff_s) AS b
    JOIN jobs AS before ON before.id = mine.id  -- started_at before the UPDATE clears it
    WHERE j.id = mine.id
      AND j.attempts = mine.attempt
      AND j.lease_owner = %(owner)s
      AND j.status = 'processing'
    RETURNING j.id, j.attempts, j.queue, j.status, before.started_at, mine.error, mine.outcome
), ended AS (
    INSERT INTO job_attempts (job_id, attempt, owner, claimed_at, finished_at, outcome, error)
    SELECT id, attempts, %(owner)s, started_at, now(), outcome, error FROM failed
), tally AS (
    INSERT INTO job_tallies AS t (grain, bucket, slot, queue, dead, failed_n, retried)
    SELECT 's', date_trunc('second', now()), pg_backend_pid(), queue,
           count(*) FILTER (WHERE status = 'failed'), count(*) FILTER (WHERE status = 'failed'),
           count(*) FILTER (WHERE status <> 'failed')
    FROM failed GROUP BY queue ORDER BY queue
    ON CONFLICT (grain, bucket, slot, queue) DO UPDATE
    SET dead = t.dead + EXCLUDED.dead, failed_n = t.failed_n + EXCLUDED.failed_n,
        retried = t.retried + EXCLUDED.retried
)
SELECT id, status::text AS status FROM failed

-- name: job_attempts_settled_by_owner
-- Only for the rows a fenced write did not return (rare): those this owner itself already
-- settled. A retry after a lost answer (the connection broke after COMMIT) finds its own
-- earlier write here, so it committed then and was not fenced. Kept out of the hot
-- statements so a completion pays nothing for it; the reaper, a cancel or a release close
-- attempts as lost/cancelled, which the caller does not take for its own outcome. Driven
-- by the batch (each pair looked up by key): no condition here lets the planner start
-- from job_attempts instead.
SELECT a.job_id, a.attempt, a.outcome::text AS outcome, j.status::text AS status
FROM unnest(%(ids)s::bigint[], %(attempts)s::int[]) AS mine(id, attempt)
JOIN job_attempts AS a ON a.job_id = mine.id AND a.attempt = mine.attempt
JOIN jobs AS j ON j.id = mine.id
WHERE a.owner = %(owner)s

-- name: job_held_by_owner
-- Every row this owner holds `processing`, with what a worker needs to run it: after a
-- claim whose answer was lost, the owner adopts the rows that claim committed (their
-- permits were held back meanwhile), so none waits out its lease unseen. Reads the
-- running rows (jobs_running_idx), a set bounded by the permits of all workers.
SELECT id, attempts, kind, queue, payload, timeout_s, run_at, created_at,
       greatest(extract(epoch FROM started_at - run_at), 0)::float8 AS waited_s, started_at,
       trace_parent
FROM jobs
WHERE started_at IS NOT NULL AND finished_at IS NULL
  AND lease_owner = %(owner)s AND status = 'processing'

-- name: job_release_batch
-- Graceful shutdown gave up waiting: hand unfinished jobs back (fenced). The attempt is
-- recorded as lost and counts, but a release never dead-letters a job: it keeps at least
-- one attempt to run.
WITH released AS (
    UPDATE jobs AS j
    SET status = 'new',
        run_at = now(),
        max_attempts = greatest(j.max_attempts, j.attempts + 1),
        started_at = NULL,
        lease_owner = NULL,
        lease_expires_at = NULL,
        last_error = 'released at worker shutdown',
        updated_at = now()
    FROM unnest(%(ids)s::bigint[], %(attempts)s::int[]) AS mine(id, attempt)
    JOIN jobs AS before ON before.id = mine.id  -- started_at before the UPDATE clears it
    WHERE j.id = mine.id
      AND j.attempts = mine.attempt
      AND j.lease_owner = %(owner)s
      AND j.status = 'processing'
    RETURNING j.id, j.attempts, before.started_at
), ended AS (
    INSERT INTO job_attempts (job_id, attempt, owner, claimed_at, finished_at, outcome, error)
    SELECT id, attempts, %(owner)s, started_at, now(), 'lost', 'released at worker shutdown'
    FROM released
)
SELECT id FROM released

-- name: job_reap_expired
-- One guarded statement over expired leases: rows a completion holds are skipped, and
-- the UPDATE re-checks the guard on the locked row, so a job finished meanwhile is never
-- overwritten (River #1302). The lost attempt counts; with none left the job fails.
-- The attempt row needs the owner, which RETURNING gives as the new value (NULL): it is
-- read in `expired`, whose row locks keep it from changing before the UPDATE. Running
-- rows are found through jobs_running_idx: every running row, a set bounded by the
-- permits of all workers, never the history.
WITH expired AS MATERIALIZED (
    SELECT id, lease_owner, started_at FROM jobs
    WHERE started_at IS NOT NULL AND finished_at IS NULL
      AND status = 'processing' AND lease_expires_at < now()
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), reaped AS (
    UPDATE jobs AS j
    SET status = CASE WHEN j.attempts >= j.max_attempts
                      THEN 'failed'::job_status ELSE 'new'::job_status END,
        finished_at = CASE WHEN j.attempts >= j.max_attempts THEN now() END,
        started_at = CASE WHEN j.attempts >= j.max_attempts THEN j.started_at END,
        run_at = now(),
        last_error = 'lease expired (owner ' || j.lease_owner || ')',
        lease_owner = NULL,
        lease_expires_at = NULL,
        updated_at = now()
    FROM expired
    WHERE j.id = expired.id AND j.status = 'processing' AND j.lease_expires_at < now()
    RETURNING j.id, j.attempts, j.queue, j.status
), ended AS (
    INSERT INTO job_attempts (job_id, attempt, owner, claimed_at, finished_at, outcome, error)
    SELECT reaped.id, reaped.attempts, expired.lease_owner, expired.started_at, now(), 'lost',
           'lease expired'
    FROM reaped JOIN expired ON expired.id = reaped.id
), tally AS (
    INSERT INTO job_tallies AS t (grain, bucket, slot, queue, reaped, dead, failed_n)
    SELECT 's', date_trunc('second', now()), pg_backend_pid(), queue, count(*),
           count(*) FILTER (WHERE status = 'failed'), count(*) FILTER (WHERE status = 'failed')
    FROM reaped GROUP BY queue ORDER BY queue
    ON CONFLICT (grain, bucket, slot, queue) DO UPDATE
    SET reaped = t.reaped + EXCLUDED.reaped, dead = t.dead + EXCLUDED.dead,
        failed_n = t.failed_n + EXCLUDED.failed_n
)
SELECT id, status::text AS status FROM reaped

-- name: job_stage_due
-- The stager: `scheduled` jobs whose run_at has come become `new` (oldest first), in
-- batches, safe in every process at once (SKIP LOCKED). The requeue trigger wakes idle
-- workers.
WITH due AS MATERIALIZED (
    SELECT id FROM jobs
    WHERE status = 'scheduled' AND run_at <= now()
    ORDER BY run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE jobs AS j
SET status = 'new', updated_at = now()
FROM due
WHERE j.id = due.id AND j.status = 'scheduled'
RETURNING j.id

-- name: job_schedule_early
-- The other direction, for rows written by plain SQL: a `new` job whose run_at is in the
-- future (an INSERT that gave run_at but not status) waits as `scheduled` instead of
-- sitting in the claim index. Probes each (queue, priority) range of the claim index, so
-- it reads the early rows only, never every waiting one.
WITH early AS MATERIALIZED (
    SELECT e.id
    FROM unnest(%(queues)s::text[]) AS q(name)
    CROSS JOIN generate_series(0, 9) AS p(priority)
    CROSS JOIN LATERAL (
        SELECT id FROM jobs
        WHERE status = 'new' AND queue = q.name AND priority = p.priority AND run_at > now()
        ORDER BY priority DESC, run_at, id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS e
)
UPDATE jobs AS j
SET status = 'scheduled', updated_at = now()
FROM early
WHERE j.id = early.id AND j.status = 'new' AND j.run_at > now()
RETURNING j.id

-- name: job_next_due
-- When the earliest scheduled job comes due (seconds from now; null: none scheduled).
SELECT extract(epoch FROM min(run_at) - now())::float8 AS due_in_s
FROM jobs WHERE status = 'scheduled'

-- name: job_queues_waiting
-- The queues that have runnable jobs: a skip scan of the claim index (one probe per
-- queue), so finding them costs the same with ten waiting jobs or ten million.
WITH RECURSIVE q(name) AS (
    (SELECT queue FROM jobs WHERE status = 'new' ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT queue FROM jobs WHERE status = 'new' AND queue > q.name
            ORDER BY queue LIMIT 1)
    FROM q WHERE q.name IS NOT NULL
)
SELECT name FROM q WHERE name IS NOT NULL

-- name: activity_oldest_snapshot_get
-- Seconds since the oldest transaction of this database that holds a snapshot began (0:
-- none): while one is old, what claims took stays in the claim index (core/floors.py).
-- Another role's transactions show their start only to members of pg_read_all_stats.
SELECT coalesce(extract(epoch FROM now() - min(xact_start)), 0)::float8 AS age_s
FROM pg_stat_activity
WHERE datname = current_database() AND backend_xmin IS NOT NULL
  AND pid <> pg_backend_pid()

-- name: job_cancel
-- scheduled | blocked | new | processing -> cancelled. A running attempt ends as
-- cancelled; its owner's later writes are fenced out by status. Its row needs the status
-- and owner from before the UPDATE (RETURNING gives the new ones): `target` reads them
-- under the row lock, so they cannot change before the UPDATE.
WITH target AS MATERIALIZED (
    SELECT id, status, lease_owner, attempts, started_at FROM jobs
    WHERE id = %(id)s AND status IN ('scheduled', 'blocked', 'new', 'processing')
    FOR UPDATE
), cancelled AS (
    UPDATE jobs AS j
    SET status = 'cancelled',
        finished_at = now(),
        lease_owner = NULL,
        lease_expires_at = NULL,
        updated_at = now()
    FROM target
    WHERE j.id = target.id
    RETURNING j.*
), ended AS (
    INSERT INTO job_attempts (job_id, attempt, owner, claimed_at, finished_at, outcome, error)
    SELECT id, attempts, lease_owner, started_at, now(), 'cancelled', 'cancelled'
    FROM target WHERE status = 'processing'
), tally AS (
    INSERT INTO job_tallies AS t (grain, bucket, slot, queue, cancelled, cancelled_n)
    SELECT 's', date_trunc('second', now()), pg_backend_pid(), queue, 1, 1 FROM cancelled
    ON CONFLICT (grain, bucket, slot, queue) DO UPDATE
    SET cancelled = t.cancelled + 1, cancelled_n = t.cancelled_n + 1
)
SELECT * FROM cancelled

-- name: job_retry
-- failed -> new, explicitly. The job gets one more attempt than it has used, as River
-- and Oban do, so attempts never pass max_attempts.
WITH revived AS (
    UPDATE jobs
    SET status = 'new',
        run_at = now(),
        max_attempts = greatest(max_attempts, attempts + 1),
        started_at = NULL,
        finished_at = NULL,
        updated_at = now()
    WHERE id = %(id)s AND status = 'failed'
    RETURNING *
), tally AS (
    INSERT INTO job_tallies AS t (grain, bucket, slot, queue, failed_n)
    SELECT 's', date_trunc('second', now()), pg_backend_pid(), queue, -1 FROM revived
    ON CONFLICT (grain, bucket, slot, queue) DO UPDATE SET failed_n = t.failed_n - 1
)
SELECT * FROM revived

-- name: job_list
-- Keyset pagination on id (newest first). A filter without an index of its own reads at
-- most `scan` rows below the cursor: the page may then come back short (even empty)
-- with next_cursor pointing past what was read, so a page costs the same however much
-- history the table holds.
SELECT * FROM (
    SELECT * FROM jobs
    WHERE (%(before_id)s::bigint IS NULL OR id < %(before_id)s::bigint)
    ORDER BY id DESC
    LIMIT %(scan)s
) AS window_
WHERE (%(status)s::job_status IS NULL OR status = %(status)s::job_status)
  AND (%(kind)s::text IS NULL OR kind = %(kind)s::text)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s::text)
ORDER BY id DESC
LIMIT %(limit)s

-- name: job_list_scan_floor
-- The lowest id a bounded job_list scan read, and how many it read: the next page of a
-- filtered list starts below it.
SELECT min(id) AS floor, count(*) AS n FROM (
    SELECT id FROM jobs
    WHERE (%(before_id)s::bigint IS NULL OR id < %(before_id)s::bigint)
    ORDER BY id DESC
    LIMIT %(scan)s
) AS window_

-- name: job_count_by_status
-- Every row, grouped: for tests and tools, never on a request path (/stats reads the
-- tallies and bounded index counts instead).
SELECT status::text AS status, count(*) AS n FROM jobs GROUP BY status

-- name: job_delete_finished_before
-- The retention sweep: the oldest finished rows of the given statuses that finished more
-- than `keep_s` seconds ago (by the database's clock), in a small batch,
-- with their attempt rows and effects (idempotency keys go by ON DELETE CASCADE). Only
-- terminal rows, never an active job; SKIP LOCKED keeps it out of every writer's way and
-- safe in every process at once.
WITH gone AS MATERIALIZED (
    SELECT id FROM jobs
    WHERE finished_at IS NOT NULL
      AND finished_at < now() - make_interval(secs => %(keep_s)s::float8)
      AND status = ANY(%(statuses)s::job_status[])
    ORDER BY finished_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), attempts_gone AS (
    DELETE FROM job_attempts USING gone WHERE job_attempts.job_id = gone.id
), effects_gone AS (
    DELETE FROM job_effects USING gone WHERE job_effects.job_id = gone.id
), deleted AS (
    DELETE FROM jobs USING gone WHERE jobs.id = gone.id
    RETURNING jobs.id, jobs.queue, jobs.status
), tally AS (
    INSERT INTO job_tallies AS t (grain, bucket, slot, queue, success_n, failed_n, cancelled_n)
    SELECT 's', date_trunc('second', now()), pg_backend_pid(), queue,
           -count(*) FILTER (WHERE status = 'success'), -count(*) FILTER (WHERE status = 'failed'),
           -count(*) FILTER (WHERE status = 'cancelled')
    FROM deleted GROUP BY queue ORDER BY queue
    ON CONFLICT (grain, bucket, slot, queue) DO UPDATE
    SET success_n = t.success_n + EXCLUDED.success_n, failed_n = t.failed_n + EXCLUDED.failed_n,
        cancelled_n = t.cancelled_n + EXCLUDED.cancelled_n
)
SELECT count(*) AS n FROM deleted

-- name: job_tallies_fold
-- Seconds older than `seconds_kept` fold into minutes, and minutes older than
-- `minutes_kept` into one total per queue, so the table stays small. One folder at a
-- time (the advisory lock); rows are moved by DELETE ... RETURNING, so each counts once.
WITH go AS (
    SELECT pg_try_advisory_xact_lock(7423117) AS mine
), old_seconds AS (
    DELETE FROM job_tallies
    WHERE grain = 's' AND bucket < now() - make_interval(secs => %(seconds_kept)s::float8)
      AND (SELECT mine FROM go)
    RETURNING *
), old_minutes AS (
    DELETE FROM job_tallies
    WHERE grain = 'm' AND bucket < now() - make_interval(secs => %(minutes_kept)s::float8)
      AND (SELECT mine FROM go)
    RETURNING *
), moved AS (
    SELECT 'm' AS grain, date_trunc('minute', bucket) AS bucket, queue, succeeded, dead,
           retried, cancelled, reaped, claimed, pickup_s, pickup_hist, success_n, failed_n,
           cancelled_n
    FROM old_seconds
    UNION ALL
    SELECT 't', 'epoch'::timestamptz, queue, succeeded, dead, retried, cancelled, reaped,
           claimed, pickup_s, pickup_hist, success_n, failed_n, cancelled_n
    FROM old_minutes
), folded AS (
    INSERT INTO job_tallies AS t (grain, bucket, slot, queue, succeeded, dead, retried,
                                  cancelled, reaped, claimed, pickup_s, pickup_hist,
                                  success_n, failed_n, cancelled_n)
    SELECT grain, bucket, 0, queue, sum(succeeded), sum(dead), sum(retried), sum(cancelled),
           sum(reaped), sum(claimed), sum(pickup_s), boundq_sum_counts(pickup_hist),
           sum(success_n), sum(failed_n), sum(cancelled_n)
    FROM moved
    GROUP BY grain, bucket, queue
    ORDER BY grain, bucket, queue
    ON CONFLICT (grain, bucket, slot, queue) DO UPDATE
    SET succeeded = t.succeeded + EXCLUDED.succeeded, dead = t.dead + EXCLUDED.dead,
        retried = t.retried + EXCLUDED.retried, cancelled = t.cancelled + EXCLUDED.cancelled,
        reaped = t.reaped + EXCLUDED.reaped, claimed = t.claimed + EXCLUDED.claimed,
        pickup_s = t.pickup_s + EXCLUDED.pickup_s,
        pickup_hist = boundq_add_counts(t.pickup_hist, EXCLUDED.pickup_hist),
        success_n = t.success_n + EXCLUDED.success_n, failed_n = t.failed_n + EXCLUDED.failed_n,
        cancelled_n = t.cancelled_n + EXCLUDED.cancelled_n
    RETURNING 1
)
SELECT (SELECT count(*) FROM old_seconds) + (SELECT count(*) FROM old_minutes) AS folded

-- ---------------------------------------------------------------------------------------
-- HTTP API (server/)

-- name: job_insert_batch
-- The API's group commit: the single creates of concurrent requests in one statement
-- (so one transaction, one WAL flush). The items come as one JSON array (one parameter:
-- cheap to send), each an object with the job_insert fields. Ids are drawn per item
-- before the insert so each returned row can be matched to its request by `ord`; an item
-- whose dedupe_key is held by a live job returns no row (the caller looks the holder up).
WITH item AS MATERIALIZED (
    SELECT nextval(pg_get_serial_sequence('jobs', 'id')) AS id, u.*,
           coalesce(u.run_at, now()) + make_interval(secs => u.delay_s) AS due_at
    FROM ROWS FROM (json_to_recordset(%(items)s::json) AS (
        name text, kind text, queue text, payload jsonb, priority smallint,
        run_at timestamptz, delay_s float8, max_attempts int, timeout_s float8, dedupe_key text,
        trace_parent text
    )) WITH ORDINALITY AS u(name, kind, queue, payload, priority, run_at, delay_s,
                            max_attempts, timeout_s, dedupe_key, trace_parent, ord)
), inserted AS (
    INSERT INTO jobs (id, name, kind, queue, payload, priority, run_at, status, max_attempts,
                      timeout_s, dedupe_key, trace_parent)
    SELECT id, name, kind, queue, payload, priority, due_at,
           CASE WHEN due_at > now() THEN 'scheduled'::job_status ELSE 'new'::job_status END,
           max_attempts, timeout_s, dedupe_key, trace_parent
    FROM item
    ORDER BY ord
    ON CONFLICT (dedupe_key)
        WHERE dedupe_key IS NOT NULL AND status IN ('scheduled', 'blocked', 'new', 'processing')
    DO NOTHING
    RETURNING *
)
SELECT item.ord, inserted.* FROM inserted JOIN item ON item.id = inserted.id
ORDER BY item.ord

-- name: idempotency_key_get
SELECT request_hash, job_id FROM idempotency_keys WHERE key = %(key)s

-- name: idempotency_key_insert
-- Written in the transaction that inserts the job. A concurrent request with the same
-- key waits on the primary key until the first commits, then gets no row back.
INSERT INTO idempotency_keys (key, request_hash, job_id)
VALUES (%(key)s, %(request_hash)s, %(job_id)s)
ON CONFLICT (key) DO NOTHING
RETURNING key

-- name: job_count_waiting_by_queue_capped
-- Runnable jobs per queue, each queue counted no further than the cap (MAX_QUEUE_DEPTH +
-- 1): the API's backpressure check. The names are found by skipping through the claim
-- index, whose first column is the queue (one probe per queue with waiting jobs), and
-- each count reads at most `cap` entries of that queue's range, however much history the
-- table holds. Queues with nothing waiting are absent.
WITH RECURSIVE q(name) AS (
    (SELECT queue FROM jobs WHERE status = 'new' ORDER BY queue LIMIT 1)
    UNION ALL
    SELECT (SELECT queue FROM jobs WHERE status = 'new' AND queue > q.name
            ORDER BY queue LIMIT 1)
    FROM q WHERE q.name IS NOT NULL
)
SELECT q.name AS queue, w.n
FROM q
CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM (
        SELECT 1 FROM jobs WHERE status = 'new' AND queue = q.name LIMIT %(cap)s
    ) AS one_queue
) AS w
WHERE q.name IS NOT NULL

-- name: job_count_waiting_in_queue_capped
-- One queue's runnable jobs, counted no further than the cap: the count that confirms a
-- refusal (queue_full) before it is sent.
SELECT count(*) AS n FROM (
    SELECT 1 FROM jobs WHERE status = 'new' AND queue = %(queue)s LIMIT %(cap)s
) AS one_queue

-- name: migration_version_get
SELECT coalesce(max(version), 0) AS version FROM boundq_migrations

-- ---------------------------------------------------------------------------------------
-- Dependencies (migration 0008, docs/workflows.md)

-- name: job_lock_parents
-- The jobs a create names in depends_on, locked in id order until its commit (so none
-- finishes or is deleted before the links are written); `queues` null = any queue. An
-- id not returned is missing or outside the caller's queues: the same answer for both.
SELECT id, status::text AS status FROM jobs
WHERE id = ANY(%(ids)s::bigint[])
  AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
ORDER BY id
FOR NO KEY UPDATE

-- name: job_insert_blocked
-- One job that depends on others: `blocked` until job_link_dependencies settles it.
INSERT INTO jobs (name, kind, queue, payload, priority, run_at, status, max_attempts,
                  timeout_s, trace_parent)
SELECT %(name)s, %(kind)s, %(queue)s, %(payload)s, %(priority)s, at.run_at,
       'blocked'::job_status, %(max_attempts)s, %(timeout_s)s, %(trace_parent)s
FROM (SELECT coalesce(%(run_at)s::timestamptz, now())
             + make_interval(secs => %(delay_s)s::float8) AS run_at) AS at
RETURNING id

-- name: job_link_dependencies
-- Pairs (children[i] depends on parents[i]) of jobs just inserted `blocked`, in their
-- creating transaction: counts each child's unfinished parents, cancels a child of a
-- parent that already failed or was cancelled, releases one with none left.
SELECT boundq_link_dependencies(%(children)s::bigint[], %(parents)s::bigint[])

-- name: job_parents_list
-- The jobs a job depends on.
SELECT parent_id FROM job_dependencies WHERE child_id = %(id)s ORDER BY parent_id
