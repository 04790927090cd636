ALTER TABLE jobs DROP CONSTRAINT jobs_trace_parent_length;
ALTER TABLE jobs DROP COLUMN trace_parent;
