-- boundq schema, version 8: dependencies between jobs (docs/workflows.md). A job created
-- with `depends_on` waits as `blocked` until every job it depends on (its parents)
-- reached `success`; then it becomes `new` (or `scheduled` while its run_at is in the
-- future). A parent that ends `failed` or `cancelled` cancels its blocked descendants.
--
-- The unblocking happens in the transaction that finishes the parent, by a trigger that
-- reads the parent's children through an index: no loop polls blocked rows, and jobs
-- nobody depends on (has_dependants false) never run it.

-- How many parents of a blocked job have not reached success yet; 0 for every other job.
-- has_dependants: some job depends on this one (set, under the row's lock, by the
-- transaction that creates the dependant). Both have constant defaults: adding them
-- rewrites nothing.
ALTER TABLE jobs
    ADD COLUMN blocked_by integer NOT NULL DEFAULT 0,
    ADD COLUMN has_dependants boolean NOT NULL DEFAULT false,
    ADD CONSTRAINT jobs_blocked_by_valid CHECK (blocked_by >= 0);

CREATE TABLE job_dependencies (
    child_id  bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    parent_id bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    PRIMARY KEY (child_id, parent_id),
    CONSTRAINT job_dependencies_not_self CHECK (child_id <> parent_id)
);
-- A finishing parent finds its children here (and retention's cascade its rows).
CREATE INDEX job_dependencies_parent_idx ON job_dependencies (parent_id, child_id);

-- Cancelled jobs count in the tallies (/stats): the cancellations this migration's
-- functions make are added as job_cancel adds its own.
CREATE FUNCTION boundq_tally_cancelled(p_queues text[]) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO job_tallies AS t (grain, bucket, slot, queue, cancelled, cancelled_n)
    SELECT 's', date_trunc('second', now()), pg_backend_pid(), q, count(*), count(*)
    FROM unnest(p_queues) AS q
    GROUP BY q
    ON CONFLICT (grain, bucket, slot, queue) DO UPDATE
    SET cancelled = t.cancelled + EXCLUDED.cancelled,
        cancelled_n = t.cancelled_n + EXCLUDED.cancelled_n
$$;

-- Cancel the blocked descendants of a job that ended failed or cancelled, transitively,
-- in one UPDATE: each names the job it waited for (and, deeper down, the root).
CREATE FUNCTION boundq_cancel_dependants(p_parent bigint, p_status text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    queues text[];
BEGIN
    WITH RECURSIVE down(id, via) AS (
        SELECT d.child_id, p_parent
        FROM job_dependencies AS d JOIN jobs AS c ON c.id = d.child_id
        WHERE d.parent_id = p_parent AND c.status = 'blocked'
        UNION
        SELECT d.child_id, down.id
        FROM down
        JOIN job_dependencies AS d ON d.parent_id = down.id
        JOIN jobs AS c ON c.id = d.child_id
        WHERE c.status = 'blocked'
    ), one AS (
        SELECT DISTINCT ON (id) id, via FROM down ORDER BY id, (via = p_parent) DESC, via
    ), cancelled AS (
        UPDATE jobs AS j
        SET status = 'cancelled',
            finished_at = now(),
            updated_at = now(),
            last_error = CASE WHEN one.via = p_parent
                              THEN format('dependency %s ended %s', p_parent, p_status)
                              ELSE format('dependency %s ended cancelled (dependency %s ended %s)',
                                          one.via, p_parent, p_status) END
        FROM one
        WHERE j.id = one.id AND j.status = 'blocked'
        RETURNING j.queue
    )
    SELECT array_agg(queue) INTO queues FROM cancelled;
    IF queues IS NOT NULL THEN
        PERFORM boundq_tally_cancelled(queues);
    END IF;
END;
$$;

-- A parent reached a terminal state: on success its blocked children count one parent
-- less, and those with none left become new (scheduled while their run_at is ahead); on
-- failed or cancelled its blocked descendants are cancelled. Children are read through
-- job_dependencies_parent_idx and updated by primary key. "In the future" is judged by
-- clock_timestamp(): a completion that waited for a child's create to commit began before
-- it, so its now() is earlier than the child's default run_at.
CREATE FUNCTION boundq_settle_dependants() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'success' THEN
        UPDATE jobs AS c
        SET blocked_by = c.blocked_by - 1,
            status = CASE WHEN c.blocked_by > 1 THEN 'blocked'::job_status
                          WHEN c.run_at > clock_timestamp() THEN 'scheduled'::job_status
                          ELSE 'new'::job_status END,
            updated_at = now()
        FROM job_dependencies AS d
        WHERE d.parent_id = NEW.id AND c.id = d.child_id AND c.status = 'blocked';
    ELSE
        PERFORM boundq_cancel_dependants(NEW.id, NEW.status::text);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER jobs_settle_dependants AFTER UPDATE OF status ON jobs FOR EACH ROW
    WHEN (NEW.has_dependants AND NEW.status IN ('success', 'failed', 'cancelled')
          AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION boundq_settle_dependants();

-- Link jobs just inserted as `blocked` (p_child) to their parents (p_parent, pairwise),
-- in the creating transaction. Every parent's row is locked first (id order: creates
-- never deadlock each other), so no parent finishes between the reading of its status
-- and the commit: one that finishes later waits for this transaction and then sees the
-- links (its trigger reads them with a snapshot of its own). A parent already in success
-- does not count; one already failed or cancelled cancels the child (and what depends on
-- it); a child left with no unfinished parent is released at once.
CREATE FUNCTION boundq_link_dependencies(p_child bigint[], p_parent bigint[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    queues text[];
BEGIN
    PERFORM 1 FROM jobs AS p
    WHERE p.id IN (SELECT unnest(p_parent))
    ORDER BY p.id
    FOR NO KEY UPDATE;
    INSERT INTO job_dependencies (child_id, parent_id)
    SELECT DISTINCT l.child_id, l.parent_id FROM unnest(p_child, p_parent) AS l(child_id, parent_id)
    ON CONFLICT DO NOTHING;
    UPDATE jobs AS p SET has_dependants = true
    WHERE p.id IN (SELECT unnest(p_parent))
      AND p.status NOT IN ('success', 'failed', 'cancelled') AND NOT p.has_dependants;
    UPDATE jobs AS c
    SET blocked_by = n.open
    FROM (SELECT d.child_id, count(*) FILTER (WHERE p.status <> 'success') AS open
          FROM job_dependencies AS d JOIN jobs AS p ON p.id = d.parent_id
          WHERE d.child_id IN (SELECT unnest(p_child))
          GROUP BY d.child_id) AS n
    WHERE c.id = n.child_id AND c.status = 'blocked';
    -- A parent that already ended failed or cancelled: the child is cancelled (the
    -- trigger cancels what depends on the child in turn).
    WITH dead AS (
        SELECT DISTINCT ON (d.child_id) d.child_id, d.parent_id, p.status
        FROM job_dependencies AS d JOIN jobs AS p ON p.id = d.parent_id
        WHERE d.child_id IN (SELECT unnest(p_child)) AND p.status IN ('failed', 'cancelled')
        ORDER BY d.child_id, d.parent_id
    ), cancelled AS (
        UPDATE jobs AS c
        SET status = 'cancelled', finished_at = now(), updated_at = now(),
            last_error = format('dependency %s ended %s', dead.parent_id, dead.status)
        FROM dead
        WHERE c.id = dead.child_id AND c.status = 'blocked'
        RETURNING c.queue
    )
    SELECT array_agg(queue) INTO queues FROM cancelled;
    IF queues IS NOT NULL THEN
        PERFORM boundq_tally_cancelled(queues);
    END IF;
    UPDATE jobs AS c
    SET status = CASE WHEN c.run_at > now() THEN 'scheduled'::job_status
                      ELSE 'new'::job_status END,
        updated_at = now()
    WHERE c.id IN (SELECT unnest(p_child)) AND c.status = 'blocked' AND c.blocked_by = 0;
END;
$$;
