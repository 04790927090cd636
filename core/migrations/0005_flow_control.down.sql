DROP FUNCTION boundq_claim_limited(text, text, integer, integer, double precision);
DROP FUNCTION boundq_pickup_hist(double precision[]);
DROP TABLE job_limit_changes;
DROP TABLE job_kinds;
DROP TABLE job_queues;
