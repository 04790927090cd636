-- boundq schema, version 9: the change log behind GET /events (docs/api.md).
--
-- Every change of a job's status or attempt appends a row, written by statement-level
-- triggers with transition tables: a claim or completion of a batch is one INSERT ...
-- SELECT for the whole batch. There is no NOTIFY here: NOTIFY takes a global lock at
-- commit and would make every claim and completion commit wait its turn (see
-- server/batcher.py); readers poll the log, woken early by boundq_jobs for new jobs.
--
-- Ordering: `seq` is taken when the row is written, not when its transaction commits, so
-- a row with a lower seq may become visible after a higher one. Readers therefore deliver
-- only rows whose txid is below the xmin of a fresh snapshot (every transaction below it
-- has ended: no row below it can still appear) in (txid, seq) order, and keep their
-- position as (txid, seq). A long transaction that holds a transaction id holds back the
-- events written after it began, until it ends.
CREATE TABLE job_events (
    seq     bigserial,
    txid    xid8        NOT NULL DEFAULT pg_current_xact_id(),
    job_id  bigint      NOT NULL,
    queue   text        NOT NULL,
    kind    text        NOT NULL,
    status  job_status  NOT NULL,
    attempt integer     NOT NULL,
    at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (txid, seq)
);
-- Append-only: vacuum has only retention's deletes to clean up, a batch at a time from
-- the oldest end.
ALTER TABLE job_events SET (autovacuum_vacuum_scale_factor = 0.05);

-- The newest position retention has deleted: a reader whose position is older has missed
-- events. One row, (0, 0) until the first deletion.
CREATE TABLE job_events_horizon (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    txid xid8   NOT NULL DEFAULT '0',
    seq  bigint NOT NULL DEFAULT 0
);
INSERT INTO job_events_horizon DEFAULT VALUES;

CREATE FUNCTION boundq_log_inserted_jobs() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_events (job_id, queue, kind, status, attempt)
    SELECT n.id, n.queue, n.kind, n.status, n.attempts FROM inserted_jobs AS n;
    RETURN NULL;
END;
$$;

-- An UPDATE trigger with transition tables takes no column list, so heartbeats and other
-- updates fire it too; the join then finds no changed row and inserts nothing.
CREATE FUNCTION boundq_log_updated_jobs() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO job_events (job_id, queue, kind, status, attempt)
    SELECT n.id, n.queue, n.kind, n.status, n.attempts
    FROM new_jobs AS n JOIN old_jobs AS o ON o.id = n.id
    WHERE n.status <> o.status OR n.attempts <> o.attempts;
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_log_insert AFTER INSERT ON jobs
    REFERENCING NEW TABLE AS inserted_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION boundq_log_inserted_jobs();
CREATE TRIGGER jobs_log_update AFTER UPDATE ON jobs
    REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION boundq_log_updated_jobs();

-- The log is off until `boundq events on` (core/events_log.py): its rows cost a drain
-- about 1.6x the database CPU per job, a price only those who stream should pay. Off, the
-- triggers do not fire at all (no transition tables are captured either).
ALTER TABLE jobs DISABLE TRIGGER jobs_log_insert;
ALTER TABLE jobs DISABLE TRIGGER jobs_log_update;

-- `boundq events on|off`. On: the ALTER takes the jobs table's share row exclusive lock,
-- so every write in flight has ended and the next ones wait for the commit, and from
-- then on every change is logged. What the log held is from before it was off, so it
-- goes, and the horizon moves past every position a client may hold: each open stream
-- gets `missed`, and a Last-Event-ID from before is told it missed changes. Every row
-- written from now on belongs to a transaction at or above the xmin of a snapshot taken
-- after the lock (one below it has ended), so it comes after (xmin - 1, max). Turning on
-- a log that is on changes nothing. Off: the triggers stop firing; open streams stay
-- open and carry nothing until the log is on again. Returns whether the log is on.
CREATE FUNCTION boundq_job_events_switch(p_on boolean) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    enabled integer;
BEGIN
    SELECT count(*) FILTER (WHERE tgenabled <> 'D') INTO enabled FROM pg_trigger
    WHERE tgrelid = 'jobs'::regclass AND tgname IN ('jobs_log_insert', 'jobs_log_update');
    IF p_on AND enabled < 2 THEN
        ALTER TABLE jobs ENABLE TRIGGER jobs_log_insert, ENABLE TRIGGER jobs_log_update;
        TRUNCATE job_events;
        UPDATE job_events_horizon
        SET txid = ((pg_snapshot_xmin(pg_current_snapshot())::text::numeric - 1)::text)::xid8,
            seq = 9223372036854775807;
    ELSIF NOT p_on AND enabled > 0 THEN
        ALTER TABLE jobs DISABLE TRIGGER jobs_log_insert, DISABLE TRIGGER jobs_log_update;
    END IF;
    RETURN p_on;
END;
$$;
