-- boundq schema, version 10: new jobs wake the workers only when rows were inserted.
--
-- jobs_notify_insert was a statement-level trigger, and a statement-level trigger fires
-- for every statement that could insert, rows or none. job_complete_and_claim inserts a
-- finished job's follow-ups in the same statement, so every claim cycle of every worker
-- sent a NOTIFY: each took the cluster's notification lock at commit (commits that
-- notify take turns), and each woke every listening worker for nothing. Now the trigger
-- reads its transition table and notifies only when the statement inserted a row.
CREATE FUNCTION boundq_notify_inserted_jobs() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM inserted) THEN
        PERFORM pg_notify('boundq_jobs', '');
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER jobs_notify_insert ON jobs;
CREATE TRIGGER jobs_notify_insert AFTER INSERT ON jobs REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION boundq_notify_inserted_jobs();
