-- Version 7 has no dependencies: a job still blocked could never run there, so it is
-- cancelled (and counted) before the columns go.
WITH cancelled AS (
    UPDATE jobs SET status = 'cancelled', finished_at = now(), updated_at = now(),
                    last_error = 'cancelled by a schema rollback while blocked'
    WHERE status = 'blocked'
    RETURNING queue
)
SELECT boundq_tally_cancelled(array_agg(queue)) FROM cancelled HAVING count(*) > 0;
DROP TRIGGER jobs_settle_dependants ON jobs;
DROP FUNCTION boundq_link_dependencies(bigint[], bigint[]);
DROP FUNCTION boundq_settle_dependants();
DROP FUNCTION boundq_cancel_dependants(bigint, text);
DROP FUNCTION boundq_tally_cancelled(text[]);
DROP TABLE job_dependencies;
ALTER TABLE jobs
    DROP CONSTRAINT jobs_blocked_by_valid,
    DROP COLUMN has_dependants,
    DROP COLUMN blocked_by;
