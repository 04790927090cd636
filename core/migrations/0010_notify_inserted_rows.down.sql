DROP TRIGGER jobs_notify_insert ON jobs;
CREATE TRIGGER jobs_notify_insert AFTER INSERT ON jobs
    FOR EACH STATEMENT EXECUTE FUNCTION boundq_notify_new_jobs();
DROP FUNCTION boundq_notify_inserted_jobs();
