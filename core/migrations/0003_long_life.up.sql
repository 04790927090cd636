-- boundq schema, version 3: future work out of the runnable path, queues, results, and
-- counters whose cost does not grow with history. The state machine is documented in
-- core/states.py and docs/design.md.

-- 1. Two more states. `scheduled`: run_at is in the future (a delayed create, a retry in
-- backoff); the stager makes it `new` when due, so the claim index holds only runnable
-- rows. `blocked`: waiting for the jobs it depends on. A value added with ALTER TYPE
-- cannot be used in the transaction that adds it, so the type is replaced: what reads
-- jobs.status is dropped here and made again below.
DROP TRIGGER jobs_legal_transition ON jobs;
DROP TRIGGER jobs_notify_requeue ON jobs;
DROP INDEX jobs_claim_idx;
DROP INDEX jobs_lease_idx;
DROP INDEX jobs_settled_status_idx;
DROP INDEX jobs_dedupe_key_active_idx;
ALTER TABLE jobs
    DROP CONSTRAINT jobs_lease_iff_processing,
    DROP CONSTRAINT jobs_processing_claimed,
    DROP CONSTRAINT jobs_success_claimed,
    DROP CONSTRAINT jobs_finished_iff_terminal,
    ALTER COLUMN status DROP DEFAULT;
ALTER TYPE job_status RENAME TO job_status_v2;
CREATE TYPE job_status AS ENUM
    ('scheduled', 'blocked', 'new', 'processing', 'success', 'failed', 'cancelled');
ALTER TABLE jobs ALTER COLUMN status TYPE job_status USING status::text::job_status;
ALTER TABLE jobs ALTER COLUMN status SET DEFAULT 'new';
DROP TYPE job_status_v2;

-- 2. Every job belongs to a queue; a success may carry the handler's result.
ALTER TABLE jobs
    ADD COLUMN queue text NOT NULL DEFAULT 'default',
    ADD COLUMN result jsonb,
    ADD CONSTRAINT jobs_queue_valid CHECK (length(queue) BETWEEN 1 AND 100),
    ADD CONSTRAINT jobs_lease_iff_processing CHECK (
        (status = 'processing') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL)),
    ADD CONSTRAINT jobs_processing_claimed CHECK (
        status <> 'processing' OR (attempts >= 1 AND started_at IS NOT NULL)),
    ADD CONSTRAINT jobs_success_claimed CHECK (status <> 'success' OR attempts >= 1),
    ADD CONSTRAINT jobs_finished_iff_terminal CHECK (
        (status IN ('success', 'failed', 'cancelled')) = (finished_at IS NOT NULL)),
    ADD CONSTRAINT jobs_result_only_success CHECK (result IS NULL OR status = 'success');

-- Jobs already waiting for a future run_at leave the runnable set now.
UPDATE jobs SET status = 'scheduled' WHERE status = 'new' AND run_at > now();

-- 3. Indexes. The claim walks one queue's runnable rows in claim order; delayed and
-- backing-off rows live in their own index, which only the stager reads.
CREATE INDEX jobs_claim_idx ON jobs (queue, priority DESC, run_at, id) WHERE status = 'new';
CREATE INDEX jobs_scheduled_idx ON jobs (run_at, id) WHERE status = 'scheduled';
-- Running rows: the reaper's scan (every running row, a set bounded by the permits of
-- all workers), an owner's reconciliation after a claim whose answer was lost, the
-- processing count. started_at is set by the claim and cleared when a job goes back to
-- wait; finished_at is set when it ends: a heartbeat changes neither (only
-- lease_expires_at), so it can be a HOT update (the index on lease_expires_at it replaces
-- made every heartbeat a non-HOT update). Its predicate names no column the fenced
-- statements filter on, so the planner never walks it for them: they reach their rows by
-- primary key (a partial index matching their WHERE made it scan every leased row per
-- batch, measured here).
UPDATE jobs SET started_at = NULL WHERE status IN ('scheduled', 'blocked', 'new');
ALTER TABLE jobs ADD CONSTRAINT jobs_waiting_not_started CHECK (
    status NOT IN ('scheduled', 'blocked', 'new') OR started_at IS NULL);
CREATE INDEX jobs_running_idx ON jobs (started_at)
    WHERE started_at IS NOT NULL AND finished_at IS NULL;
CREATE INDEX jobs_settled_status_idx ON jobs (status, id) WHERE status IN ('failed', 'cancelled');
CREATE INDEX jobs_blocked_idx ON jobs (id) WHERE status = 'blocked';
-- Finished rows by age: the retention sweep deletes the oldest first, in small batches.
CREATE INDEX jobs_finished_idx ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE UNIQUE INDEX jobs_dedupe_key_active_idx ON jobs (dedupe_key)
    WHERE dedupe_key IS NOT NULL AND status IN ('scheduled', 'blocked', 'new', 'processing');
-- Deleting a job cascades to its idempotency keys: without this index every delete
-- scanned the whole table.
CREATE INDEX idempotency_keys_job_idx ON idempotency_keys (job_id);

-- 4. Transitions the CHECKs cannot see. Terminal rows are absorbing except the explicit
-- retry of a failed job; nothing finishes without being claimed; only `new` is claimed;
-- a job is `blocked` only from its creation.
CREATE TRIGGER jobs_legal_transition BEFORE UPDATE ON jobs FOR EACH ROW
    WHEN (
        (OLD.status IN ('success', 'failed', 'cancelled')
            AND NOT (OLD.status = 'failed' AND NEW.status = 'new'))
        OR (OLD.status IN ('scheduled', 'blocked', 'new') AND NEW.status IN ('success', 'failed'))
        OR (OLD.status IN ('scheduled', 'blocked') AND NEW.status = 'processing')
        OR (NEW.status = 'blocked' AND OLD.status <> 'blocked')
    )
    EXECUTE FUNCTION boundq_refuse_transition();

CREATE TRIGGER jobs_notify_requeue AFTER UPDATE OF status ON jobs FOR EACH ROW
    WHEN (NEW.status = 'new' AND OLD.status <> 'new')
    EXECUTE FUNCTION boundq_notify_new_jobs();

-- 5. Tallies: what /stats and the dashboard report about finished work, kept by the
-- statements that move jobs, so reading them never scans history. Each writer adds to
-- its own row (slot = its backend's pid, grain 's' = that second), so writers never wait
-- on each other; the maintenance loop folds seconds into minutes ('m') and old minutes
-- into one total per queue ('t', bucket = epoch). Counts of rows in a terminal state are
-- the sums of the *_n columns over every grain; the others count events.
CREATE TABLE job_tallies (
    grain        char(1)          NOT NULL CHECK (grain IN ('s', 'm', 't')),
    bucket       timestamptz      NOT NULL,
    slot         integer          NOT NULL,
    queue        text             NOT NULL,
    succeeded    bigint           NOT NULL DEFAULT 0,  -- attempts that succeeded
    dead         bigint           NOT NULL DEFAULT 0,  -- jobs dead-lettered (to failed)
    retried      bigint           NOT NULL DEFAULT 0,  -- failed attempts sent to backoff
    cancelled    bigint           NOT NULL DEFAULT 0,  -- jobs cancelled
    reaped       bigint           NOT NULL DEFAULT 0,  -- expired leases taken back
    claimed      bigint           NOT NULL DEFAULT 0,  -- attempts started
    pickup_s     double precision NOT NULL DEFAULT 0,  -- sum over claims of (claim - run_at)
    pickup_hist  bigint[]         NOT NULL DEFAULT '{}',  -- claims per pickup bucket
    success_n    bigint           NOT NULL DEFAULT 0,  -- net change of rows in success
    failed_n     bigint           NOT NULL DEFAULT 0,  -- ... in failed
    cancelled_n  bigint           NOT NULL DEFAULT 0,  -- ... in cancelled
    PRIMARY KEY (grain, bucket, slot, queue)
);
ALTER TABLE job_tallies SET (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.05);

-- Elementwise sum of two count arrays (pickup histograms of different lengths add up).
CREATE FUNCTION boundq_add_counts(a bigint[], b bigint[]) RETURNS bigint[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i), '{}')
    FROM unnest(a, b) WITH ORDINALITY AS u(x, y, i)
$$;

CREATE AGGREGATE boundq_sum_counts(bigint[]) (
    SFUNC = boundq_add_counts, STYPE = bigint[], INITCOND = '{}');

-- The rows already finished start the totals.
INSERT INTO job_tallies (grain, bucket, slot, queue, success_n, failed_n, cancelled_n)
SELECT 't', 'epoch', 0, queue,
       count(*) FILTER (WHERE status = 'success'),
       count(*) FILTER (WHERE status = 'failed'),
       count(*) FILTER (WHERE status = 'cancelled')
FROM jobs WHERE status IN ('success', 'failed', 'cancelled')
GROUP BY queue;
