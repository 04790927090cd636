-- The change log behind GET /events (migration 0009). A position is (txid, seq); rows
-- are delivered in that order, and only once their txid is below the xmin of a fresh
-- snapshot: every transaction below it has ended, so no row can still appear before
-- such a position. xid8 values travel as text.

-- name: job_events_page
-- Up to `limit` rows after a position (or after the retention horizon when that is
-- newer), at most up to `upto` when given, within the filters (null = any). Every row
-- carries the horizon, and one row with null event columns comes back when none
-- matched, so the caller always learns whether its position was deleted. One statement:
-- the horizon and the rows are read in one snapshot. `result` only for a success.
WITH pos AS (
    SELECT h.txid AS horizon_txid, h.seq AS horizon_seq,
           CASE WHEN (h.txid, h.seq) > (%(txid)s::xid8, %(seq)s::bigint)
                THEN h.txid ELSE %(txid)s::xid8 END AS txid,
           CASE WHEN (h.txid, h.seq) > (%(txid)s::xid8, %(seq)s::bigint)
                THEN h.seq ELSE %(seq)s::bigint END AS seq
    FROM job_events_horizon AS h
)
SELECT pos.horizon_txid::text AS horizon_txid, pos.horizon_seq,
       e.txid::text AS txid, e.seq, e.job_id, e.queue, e.kind, e.status::text AS status,
       e.attempt, j.result
FROM pos
LEFT JOIN LATERAL (
    SELECT ev.txid, ev.seq, ev.job_id, ev.queue, ev.kind, ev.status, ev.attempt
    FROM job_events AS ev
    WHERE (ev.txid, ev.seq) > (pos.txid, pos.seq)
      AND ev.txid < pg_snapshot_xmin(pg_current_snapshot())
      AND (%(upto_txid)s::xid8 IS NULL
           OR (ev.txid, ev.seq) <= (%(upto_txid)s::xid8, %(upto_seq)s::bigint))
      AND (%(queues)s::text[] IS NULL OR ev.queue = ANY(%(queues)s::text[]))
      AND (%(kind)s::text IS NULL OR ev.kind = %(kind)s::text)
      AND (%(ids)s::bigint[] IS NULL OR ev.job_id = ANY(%(ids)s::bigint[]))
    ORDER BY ev.txid, ev.seq
    LIMIT %(limit)s
) AS e ON true
LEFT JOIN jobs AS j ON j.id = e.job_id AND e.status = 'success'
ORDER BY e.txid, e.seq

-- name: job_events_head
-- The newest position no later row can precede: where a reader starts that has no
-- position of its own (the horizon when the log is empty).
SELECT c.txid::text, c.seq
FROM ((SELECT txid, seq FROM job_events
       WHERE txid < pg_snapshot_xmin(pg_current_snapshot())
       ORDER BY txid DESC, seq DESC LIMIT 1)
      UNION ALL
      SELECT txid, seq FROM job_events_horizon) AS c
ORDER BY c.txid DESC, c.seq DESC
LIMIT 1

-- name: job_events_delete_before
-- Retention: deletes the oldest rows (a prefix in delivery order, up to the first row
-- younger than `keep_s`), at most `limit`, and moves the horizon to the newest deleted.
-- The horizon row's lock serialises concurrent sweeps (every worker process runs one);
-- after waiting for it, the re-read horizon keeps this sweep after the other's.
WITH lock AS MATERIALIZED (
    SELECT txid, seq FROM job_events_horizon FOR UPDATE
), head AS MATERIALIZED (
    SELECT e.txid, e.seq, e.at
    FROM job_events AS e, lock
    WHERE (e.txid, e.seq) > (lock.txid, lock.seq)
      AND e.txid < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY e.txid, e.seq
    LIMIT %(limit)s
), first_young AS (
    SELECT txid, seq FROM head
    WHERE at >= now() - make_interval(secs => %(keep_s)s::float8)
    ORDER BY txid, seq
    LIMIT 1
), deleted AS (
    DELETE FROM job_events AS e
    USING head AS h
    WHERE e.txid = h.txid AND e.seq = h.seq
      AND NOT EXISTS (SELECT 1 FROM first_young AS f WHERE (h.txid, h.seq) >= (f.txid, f.seq))
    RETURNING e.txid, e.seq
), newest AS (
    SELECT txid, seq FROM deleted ORDER BY txid DESC, seq DESC LIMIT 1
), moved AS (
    UPDATE job_events_horizon AS h SET txid = n.txid, seq = n.seq
    FROM newest AS n
    RETURNING h.txid
)
SELECT (SELECT count(*) FROM deleted) AS deleted, (SELECT count(*) FROM moved) AS moved

-- name: job_events_enabled_get
-- Whether the change log is written: both triggers enabled (`boundq events on`).
SELECT count(*) FILTER (WHERE tgenabled <> 'D') = 2 AS enabled
FROM pg_trigger
WHERE tgrelid = 'jobs'::regclass AND tgname IN ('jobs_log_insert', 'jobs_log_update')

-- name: job_events_switch
-- `boundq events on|off` (migration 0009 says what each does). Returns `on`.
SELECT boundq_job_events_switch(%(on)s::boolean) AS enabled
