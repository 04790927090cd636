-- Every statement boundq runs against the jobs tables, as named blocks.
-- Names are table-first with a verb. Parameters are bound (psycopg %(name)s), never
-- formatted in. tests/test_queries_prepare.py prepares each block against the migrated
-- schema, so a query that no longer fits the schema fails the suite.
--
-- Fencing: every write by a worker to a job it claimed is guarded by
--   id AND attempts = <its attempt> AND lease_owner = <its owner> AND status = 'processing'
-- and zero rows back means the lease was lost: the caller drops its result.

-- name: job_insert
-- One job. ON CONFLICT covers dedupe_key among unfinished jobs: no row back = duplicate.
INSERT INTO jobs (name, kind, payload, priority, run_at, max_attempts, timeout_s, dedupe_key)
VALUES (
    %(name)s, %(kind)s, %(payload)s, %(priority)s,
    coalesce(%(run_at)s::timestamptz, now()) + make_interval(secs => %(delay_s)s::float8),
    %(max_attempts)s, %(timeout_s)s, %(dedupe_key)s
)
ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL AND status IN ('new', 'processing')
DO NOTHING
RETURNING *

-- name: job_insert_many_deduped
-- Many jobs that carry dedupe keys; duplicates (also within the batch) are skipped.
INSERT INTO jobs (name, kind, payload, priority, run_at, max_attempts, timeout_s, dedupe_key)
SELECT name, kind, payload, priority, coalesce(run_at, now()) + make_interval(secs => delay_s),
       max_attempts, timeout_s, dedupe_key
FROM unnest(
    %(names)s::text[], %(kinds)s::text[], %(payloads)s::jsonb[], %(priorities)s::smallint[],
    %(run_ats)s::timestamptz[], %(delays)s::float8[], %(max_attempts)s::int[],
    %(timeouts)s::float8[], %(dedupe_keys)s::text[]
) WITH ORDINALITY AS item(name, kind, payload, priority, run_at, delay_s, max_attempts,
                          timeout_s, dedupe_key, ord)
ORDER BY ord
ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL AND status IN ('new', 'processing')
DO NOTHING
RETURNING id, dedupe_key

-- name: job_reserve_ids
-- Ids for a COPY batch, and the transaction's clock to turn delays into run_at.
SELECT now() AS db_now,
       array_agg(nextval(pg_get_serial_sequence('jobs', 'id'))) AS ids
FROM generate_series(1, %(n)s)

-- name: job_get_active_by_dedupe_key
SELECT * FROM jobs
WHERE dedupe_key = %(dedupe_key)s AND status IN ('new', 'processing')

-- name: job_get
SELECT * FROM jobs WHERE id = %(id)s

-- name: job_attempts_list
-- Ended attempts have a row; the running one (if any) is the jobs row itself.
SELECT job_id, attempt, owner, claimed_at, finished_at, outcome, error
FROM job_attempts WHERE job_id = %(id)s
UNION ALL
SELECT id, attempts, lease_owner, started_at, NULL, NULL, NULL
FROM jobs WHERE id = %(id)s AND status = 'processing'
ORDER BY attempt

-- name: job_claim
-- Claim up to %(limit)s runnable jobs in one statement: lock them with SKIP LOCKED in a
-- materialized CTE (LIMIT applies before locking, so never more than limit rows) and lease
-- them. The caller already holds one permit per row. No job_attempts row is written here:
-- while the job is processing its jobs row describes the running attempt (attempts,
-- lease_owner, started_at), and the row is written once, by whatever ends the attempt.
WITH picked AS MATERIALIZED (
    SELECT id FROM jobs
    WHERE status = 'new' AND run_at <= now()
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
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
    RETURNING j.id, j.attempts, j.kind, j.payload, j.timeout_s, j.run_at
)
SELECT id, attempts, kind, payload, timeout_s,
       extract(epoch FROM now() - run_at)::float8 AS waited_s
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

-- name: job_complete_batch
-- Finish a batch of successful attempts (fenced). In the same statement: write their
-- attempt rows and the exactly-once effect row of `effect` jobs, so an effect exists if
-- and only if its completion committed. Returns the ids written now; for the others see
-- job_attempts_settled_by_owner.
WITH done AS (
    UPDATE jobs AS j
    SET status = 'success',
        finished_at = now(),
        updated_at = now(),
        lease_owner = NULL,
        lease_expires_at = NULL,
        last_error = NULL
    FROM unnest(%(ids)s::bigint[], %(attempts)s::int[]) AS mine(id, attempt)
    WHERE j.id = mine.id
      AND j.attempts = mine.attempt
      AND j.lease_owner = %(owner)s
      AND j.status = 'processing'
    RETURNING j.id, j.attempts, j.kind, j.started_at
), ended AS (
    -- RETURNING gives the new lease_owner (NULL); the fence says it was the caller.
    INSERT INTO job_attempts (job_id, attempt, owner, claimed_at, finished_at, outcome)
    SELECT id, attempts, %(owner)s, started_at, now(), 'success' FROM done
), effects AS (
    INSERT INTO job_effects (job_id, attempt)
    SELECT id, attempts FROM done WHERE kind = 'effect'
)
SELECT id FROM done

-- name: job_fail_batch
-- Record failed attempts (fenced). With attempts left (and retryable) the job goes back
-- to `new` after capped exponential backoff with equal jitter; otherwise it is dead-lettered
-- to `failed`.
WITH failed AS (
    UPDATE jobs AS j
    SET status = CASE WHEN j.attempts >= j.max_attempts OR NOT mine.retryable
                      THEN 'failed'::job_status ELSE 'new'::job_status END,
        run_at = CASE WHEN j.attempts >= j.max_attempts OR NOT mine.retryable THEN j.run_at
                      ELSE now() + make_interval(secs =>
                          least(%(retry_max_s)s::float8,
                                %(retry_base_s)s::float8 * power(2::float8, j.attempts - 1))
                          * (0.5 + random() * 0.5)) END,
        finished_at = CASE WHEN j.attempts >= j.max_attempts OR NOT mine.retryable
                           THEN now() END,
        lease_owner = NULL,
        lease_expires_at = NULL,
        last_error = mine.error,
        updated_at = now()
    FROM unnest(%(ids)s::bigint[], %(attempts)s::int[], %(errors)s::text[],
                %(outcomes)s::attempt_outcome[], %(retryable)s::bool[])
         AS mine(id, attempt, error, outcome, retryable)
    WHERE j.id = mine.id
      AND j.attempts = mine.attempt
      AND j.lease_owner = %(owner)s
      AND j.status = 'processing'
    RETURNING j.id, j.attempts, j.status, j.started_at, mine.error, mine.outcome
), ended AS (
    INSERT INTO job_attempts (job_id, attempt, owner, claimed_at, finished_at, outcome, error)
    SELECT id, attempts, %(owner)s, started_at, now(), outcome, error FROM failed
)
SELECT id, status::text AS status FROM failed

-- name: job_attempts_settled_by_owner
-- Only for the rows a fenced write did not return (rare): those this owner itself already
-- settled. A retry after a lost answer (the connection broke after COMMIT) finds its own
-- earlier write here, so it committed then and was not fenced. Kept out of the hot
-- statements so a completion pays nothing for it; the reaper, a cancel or a release close
-- attempts as lost/cancelled, which the caller does not take for its own outcome.
SELECT a.job_id, a.attempt, a.outcome::text AS outcome, j.status::text AS status
FROM job_attempts AS a
JOIN jobs AS j ON j.id = a.job_id
WHERE a.job_id = ANY(%(ids)s::bigint[])
  AND (a.job_id, a.attempt) IN (
      SELECT * FROM unnest(%(ids)s::bigint[], %(attempts)s::int[]))
  AND a.owner = %(owner)s
  AND a.outcome IS NOT NULL

-- name: job_release_batch
-- Graceful shutdown gave up waiting: hand unfinished jobs back (fenced). The attempt is
-- recorded as lost and counts, but a release never dead-letters a job: it keeps at least
-- one attempt to run.
WITH released AS (
    UPDATE jobs AS j
    SET status = 'new',
        run_at = now(),
        max_attempts = greatest(j.max_attempts, j.attempts + 1),
        lease_owner = NULL,
        lease_expires_at = NULL,
        last_error = 'released at worker shutdown',
        updated_at = now()
    FROM unnest(%(ids)s::bigint[], %(attempts)s::int[]) AS mine(id, attempt)
    WHERE j.id = mine.id
      AND j.attempts = mine.attempt
      AND j.lease_owner = %(owner)s
      AND j.status = 'processing'
    RETURNING j.id, j.attempts, j.started_at
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
-- read in `expired`, whose row locks keep it from changing before the UPDATE.
WITH expired AS MATERIALIZED (
    SELECT id, lease_owner, started_at FROM jobs
    WHERE status = 'processing' AND lease_expires_at < now()
    ORDER BY lease_expires_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), reaped AS (
    UPDATE jobs AS j
    SET status = CASE WHEN j.attempts >= j.max_attempts
                      THEN 'failed'::job_status ELSE 'new'::job_status END,
        finished_at = CASE WHEN j.attempts >= j.max_attempts THEN now() END,
        run_at = now(),
        last_error = 'lease expired (owner ' || j.lease_owner || ')',
        lease_owner = NULL,
        lease_expires_at = NULL,
        updated_at = now()
    FROM expired
    WHERE j.id = expired.id AND j.status = 'processing' AND j.lease_expires_at < now()
    RETURNING j.id, j.attempts, j.status
), ended AS (
    INSERT INTO job_attempts (job_id, attempt, owner, claimed_at, finished_at, outcome, error)
    SELECT reaped.id, reaped.attempts, expired.lease_owner, expired.started_at, now(), 'lost',
           'lease expired'
    FROM reaped JOIN expired ON expired.id = reaped.id
)
SELECT id, status::text AS status FROM reaped

-- name: job_cancel
-- new | processing -> cancelled. A running attempt ends as cancelled; its owner's later
-- writes are fenced out by status. Its row needs the status and owner from before the
-- UPDATE (RETURNING gives the new ones): `target` reads them under the row lock, so they
-- cannot change before the UPDATE.
WITH target AS MATERIALIZED (
    SELECT id, status, lease_owner, attempts, started_at FROM jobs
    WHERE id = %(id)s AND status IN ('new', 'processing')
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
)
SELECT * FROM cancelled

-- name: job_retry
-- failed -> new, explicitly. The job gets one more attempt than it has used, as River
-- and Oban do, so attempts never pass max_attempts.
UPDATE jobs
SET status = 'new',
    run_at = now(),
    max_attempts = greatest(max_attempts, attempts + 1),
    finished_at = NULL,
    updated_at = now()
WHERE id = %(id)s AND status = 'failed'
RETURNING *

-- name: job_list
-- Keyset pagination on id (newest first); filters are optional.
SELECT * FROM jobs
WHERE (%(status)s::job_status IS NULL OR status = %(status)s::job_status)
  AND (%(kind)s::text IS NULL OR kind = %(kind)s::text)
  AND (%(before_id)s::bigint IS NULL OR id < %(before_id)s::bigint)
ORDER BY id DESC
LIMIT %(limit)s

-- name: job_count_by_status
SELECT status::text AS status, count(*) AS n FROM jobs GROUP BY status

-- name: job_count_waiting
SELECT count(*) AS n FROM jobs WHERE status = 'new'

-- name: job_oldest_waiting
SELECT extract(epoch FROM now() - min(run_at))::float8 AS age_s
FROM jobs WHERE status = 'new' AND run_at <= now()

-- name: job_throughput_recent
SELECT count(*) AS n FROM jobs
WHERE status IN ('success', 'failed') AND finished_at > now() - make_interval(secs => %(window_s)s::float8)

-- name: job_delete_finished_before
-- The optional retention sweep: only terminal rows, never an unfinished job.
WITH gone AS (
    SELECT id FROM jobs
    WHERE status IN ('success', 'failed', 'cancelled') AND finished_at < %(before)s
    ORDER BY id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), attempts_gone AS (
    DELETE FROM job_attempts USING gone WHERE job_attempts.job_id = gone.id
)
DELETE FROM jobs USING gone WHERE jobs.id = gone.id
RETURNING jobs.id

-- name: job_notify
SELECT pg_notify('boundq_jobs', '')

-- ---------------------------------------------------------------------------------------
-- HTTP API (server/)

-- name: job_insert_batch
-- The API's group commit: the single creates of concurrent requests in one statement
-- (so one transaction, one WAL flush). The items come as one JSON array (one parameter:
-- cheap to send), each an object with the job_insert fields. Ids are drawn per item
-- before the insert so each returned row can be matched to its request by `ord`; an item
-- whose dedupe_key is held by a live job returns no row (the caller looks the holder up).
WITH item AS MATERIALIZED (
    SELECT nextval(pg_get_serial_sequence('jobs', 'id')) AS id, u.*
    FROM ROWS FROM (json_to_recordset(%(items)s::json) AS (
        name text, kind text, payload jsonb, priority smallint, run_at timestamptz,
        delay_s float8, max_attempts int, timeout_s float8, dedupe_key text
    )) WITH ORDINALITY AS u(name, kind, payload, priority, run_at, delay_s, max_attempts,
                            timeout_s, dedupe_key, ord)
), inserted AS (
    INSERT INTO jobs (id, name, kind, payload, priority, run_at, max_attempts, timeout_s,
                      dedupe_key)
    SELECT id, name, kind, payload, priority,
           coalesce(run_at, now()) + make_interval(secs => delay_s), max_attempts, timeout_s,
           dedupe_key
    FROM item
    ORDER BY ord
    ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL AND status IN ('new', 'processing')
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

-- name: job_count_waiting_capped
-- Waiting jobs, counted no further than the cap (MAX_QUEUE_DEPTH + 1): the API's
-- backpressure check stays cheap however deep the backlog is.
SELECT count(*) AS n FROM (
    SELECT 1 FROM jobs WHERE status = 'new' LIMIT %(cap)s
) AS waiting

-- name: migration_version_get
SELECT coalesce(max(version), 0) AS version FROM boundq_migrations

-- job_modules (wasm) ----------------------------------------------------------------------
-- Modules for the `wasm` job kind (core/wasm, server/modules.py). The bytes are read only
-- by job_module_load, and only when the worker does not already hold that content.

-- name: job_module_put
-- Upload or replace. `created` tells a first upload (201) from a replacement (200): xmax
-- is 0 on a freshly inserted row version and set on the one ON CONFLICT updated.
INSERT INTO job_modules (name, wasm, sha256, size_bytes, exports)
VALUES (%(name)s, %(wasm)s, %(sha256)s, %(size_bytes)s, %(exports)s)
ON CONFLICT (name) DO UPDATE
SET wasm = EXCLUDED.wasm, sha256 = EXCLUDED.sha256, size_bytes = EXCLUDED.size_bytes,
    exports = EXCLUDED.exports, updated_at = now()
RETURNING name, size_bytes, sha256, exports, created_at, updated_at, (xmax = 0) AS created

-- name: job_module_get
SELECT name, size_bytes, sha256, exports, created_at, updated_at
FROM job_modules WHERE name = %(name)s

-- name: job_module_list
SELECT name, size_bytes, sha256, exports, created_at, updated_at
FROM job_modules ORDER BY name

-- name: job_module_delete
DELETE FROM job_modules WHERE name = %(name)s RETURNING name

-- name: job_module_load
-- The worker's read: the bytes only when their hash differs from the one it caches.
SELECT sha256, CASE WHEN sha256 = %(known_sha256)s THEN NULL ELSE wasm END AS wasm
FROM job_modules WHERE name = %(name)s
