-- boundq schema, version 5: the trace context a job was created in (docs/tracing.md).
-- When tracing is on, the API, the Client and `boundq enqueue` store the W3C traceparent
-- of their create span here; the claim returns it and the worker starts the job's claim,
-- run and complete spans as its children, so one job is one trace across processes.
-- Null when tracing is off (the default) or the producer had no span.
--
-- A nullable column without a default: adding it rewrites nothing, and a null costs a
-- row one bit of its null bitmap.

ALTER TABLE jobs ADD COLUMN trace_parent text;

-- A traceparent is 55 characters today (version 00); later versions may append fields.
-- The bound keeps a plain SQL insert from parking anything large in the hot table. NOT
-- VALID: every existing row is null, so there is nothing to check, and validating would
-- scan the whole table under an exclusive lock; new and updated rows are checked.
ALTER TABLE jobs ADD CONSTRAINT jobs_trace_parent_length
    CHECK (octet_length(trace_parent) <= 256) NOT VALID;

COMMENT ON COLUMN jobs.trace_parent IS
    'W3C traceparent of the span that created the job (null: not traced); the worker''s '
    'spans for every attempt are its children.';
