-- Flow control's queue settings, read by the dashboard only when the table exists
-- (job_queues_table_exists in core/sql/ui.sql). This block lives beside the dashboard
-- and not in core/sql, because every block there is prepared against the schema by the
-- test suite and this table is not part of the schema yet; tests/ui prepares it against a
-- table of this shape. When flow control's migration lands, the block moves to
-- core/sql/ui.sql.

-- name: job_queues_list
SELECT name, concurrency, rate_per_s, burst, weight, paused
FROM job_queues
ORDER BY name
