DROP FUNCTION boundq_job_events_switch(boolean);
DROP TRIGGER jobs_log_update ON jobs;
DROP TRIGGER jobs_log_insert ON jobs;
DROP FUNCTION boundq_log_updated_jobs();
DROP FUNCTION boundq_log_inserted_jobs();
DROP TABLE job_events_horizon;
DROP TABLE job_events;
