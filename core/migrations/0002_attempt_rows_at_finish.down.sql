COMMENT ON TABLE job_attempts IS NULL;

ALTER TABLE job_attempts ALTER COLUMN outcome DROP NOT NULL;
ALTER TABLE job_attempts ALTER COLUMN finished_at DROP NOT NULL;

-- Version 1 keeps an open row for the running attempt of every processing job.
INSERT INTO job_attempts (job_id, attempt, owner, claimed_at)
SELECT id, attempts, lease_owner, started_at FROM jobs WHERE status = 'processing';

ALTER TABLE job_attempts ADD CONSTRAINT job_attempts_closed_together
    CHECK ((finished_at IS NULL) = (outcome IS NULL));
