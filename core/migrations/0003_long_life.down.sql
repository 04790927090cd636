DROP TABLE job_tallies;
DROP AGGREGATE boundq_sum_counts(bigint[]);
DROP FUNCTION boundq_add_counts(bigint[], bigint[]);
DROP INDEX idempotency_keys_job_idx;

DROP TRIGGER jobs_legal_transition ON jobs;
DROP TRIGGER jobs_notify_requeue ON jobs;
DROP INDEX jobs_claim_idx;
DROP INDEX jobs_scheduled_idx;
DROP INDEX jobs_running_idx;
DROP INDEX jobs_settled_status_idx;
DROP INDEX jobs_blocked_idx;
DROP INDEX jobs_finished_idx;
DROP INDEX jobs_dedupe_key_active_idx;
ALTER TABLE jobs
    DROP CONSTRAINT jobs_queue_valid,
    DROP CONSTRAINT jobs_lease_iff_processing,
    DROP CONSTRAINT jobs_processing_claimed,
    DROP CONSTRAINT jobs_success_claimed,
    DROP CONSTRAINT jobs_finished_iff_terminal,
    DROP CONSTRAINT jobs_result_only_success,
    DROP CONSTRAINT jobs_waiting_not_started,
    DROP COLUMN queue,
    DROP COLUMN result,
    ALTER COLUMN status DROP DEFAULT;

-- Version 2 has no `scheduled` or `blocked`: delayed jobs wait as `new` (the claim skips
-- them until run_at), and a job still waiting for its parents is cancelled.
UPDATE jobs SET status = 'new' WHERE status = 'scheduled';
UPDATE jobs SET status = 'cancelled', finished_at = now(),
                last_error = 'cancelled by a schema rollback while blocked'
WHERE status = 'blocked';

ALTER TYPE job_status RENAME TO job_status_v3;
CREATE TYPE job_status AS ENUM ('new', 'processing', 'success', 'failed', 'cancelled');
ALTER TABLE jobs ALTER COLUMN status TYPE job_status USING status::text::job_status;
ALTER TABLE jobs ALTER COLUMN status SET DEFAULT 'new';
DROP TYPE job_status_v3;

ALTER TABLE jobs
    ADD CONSTRAINT jobs_lease_iff_processing CHECK (
        (status = 'processing') = (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL)),
    ADD CONSTRAINT jobs_processing_claimed CHECK (
        status <> 'processing' OR (attempts >= 1 AND started_at IS NOT NULL)),
    ADD CONSTRAINT jobs_success_claimed CHECK (status <> 'success' OR attempts >= 1),
    ADD CONSTRAINT jobs_finished_iff_terminal CHECK (
        (status IN ('success', 'failed', 'cancelled')) = (finished_at IS NOT NULL));

CREATE INDEX jobs_claim_idx ON jobs (priority DESC, run_at, id) WHERE status = 'new';
CREATE INDEX jobs_lease_idx ON jobs (lease_expires_at) WHERE lease_expires_at IS NOT NULL;
CREATE INDEX jobs_settled_status_idx ON jobs (status, id) WHERE status IN ('failed', 'cancelled');
CREATE UNIQUE INDEX jobs_dedupe_key_active_idx ON jobs (dedupe_key)
    WHERE dedupe_key IS NOT NULL AND status IN ('new', 'processing');

CREATE TRIGGER jobs_legal_transition BEFORE UPDATE ON jobs FOR EACH ROW
    WHEN (
        (OLD.status IN ('success', 'failed', 'cancelled')
            AND NOT (OLD.status = 'failed' AND NEW.status = 'new'))
        OR (OLD.status = 'new' AND NEW.status IN ('success', 'failed'))
    )
    EXECUTE FUNCTION boundq_refuse_transition();

CREATE TRIGGER jobs_notify_requeue AFTER UPDATE OF status ON jobs FOR EACH ROW
    WHEN (NEW.status = 'new' AND OLD.status <> 'new' AND NEW.run_at <= now())
    EXECUTE FUNCTION boundq_notify_new_jobs();
