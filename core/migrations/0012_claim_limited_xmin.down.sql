-- Back to migration 0007's boundq_claim_limited (no xmin check).
CREATE OR REPLACE FUNCTION boundq_claim_limited(p_owner text, p_queue text, p_n integer,
                                     p_oldest integer, p_lease_s double precision)
RETURNS TABLE (id bigint, attempts integer, kind text, queue text, payload jsonb,
               timeout_s double precision, run_at timestamptz, created_at timestamptz,
               waited_s double precision, claimed_at timestamptz, trace_parent text)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    q        job_queues%ROWTYPE;
    k        record;
    t        timestamptz;
    budget   integer := p_n;
    kb       jsonb := '{}';      -- kind -> what it may still start now
    spent    jsonb := '{}';      -- kind -> started now
    shut     text[] := '{}';     -- kinds with no room: filtered out of the scans
    picked   bigint[] := '{}';
    cand     record;
    room     integer;
    again    boolean;
    locked   text[];
BEGIN
    -- Lock the queue's row and every limited kind's row (name order: no deadlock), then
    -- take `t`. A row inserted after a locking statement's snapshot is not locked by it:
    -- if one is visible by `t`, lock again, so the claim obeys every limit saved before
    -- `t` and only limits whose rows it holds.
    LOOP
        SELECT * INTO q FROM job_queues AS jq WHERE jq.name = p_queue FOR UPDATE;
        locked := ARRAY(SELECT jk.name FROM job_kinds AS jk
                        WHERE jk.concurrency IS NOT NULL OR jk.rate_per_s IS NOT NULL
                           OR jk.paused
                        ORDER BY jk.name FOR UPDATE);
        t := clock_timestamp();
        EXIT WHEN (q.name IS NOT NULL
                   OR NOT EXISTS (SELECT 1 FROM job_queues AS jq WHERE jq.name = p_queue))
              AND locked = ARRAY(SELECT jk.name FROM job_kinds AS jk
                                 WHERE jk.concurrency IS NOT NULL OR jk.rate_per_s IS NOT NULL
                                    OR jk.paused
                                 ORDER BY jk.name);
    END LOOP;
    IF q.name IS NOT NULL THEN
        IF q.paused THEN
            RETURN;
        END IF;
        IF q.concurrency IS NOT NULL THEN
            budget := least(budget, q.concurrency - (
                SELECT count(*) FROM jobs AS r
                WHERE r.started_at IS NOT NULL AND r.finished_at IS NULL AND r.queue = p_queue));
        END IF;
        IF q.rate_per_s IS NOT NULL THEN
            q.tokens := least(q.burst, q.tokens
                              + q.rate_per_s * greatest(0, extract(epoch FROM t - q.refilled_at)));
            budget := least(budget, floor(q.tokens)::integer);
        END IF;
    END IF;
    FOR k IN
        SELECT jk.name, jk.concurrency, jk.rate_per_s, jk.burst, jk.paused, jk.tokens,
               jk.refilled_at
        FROM job_kinds AS jk
        WHERE jk.name = ANY (locked)
    LOOP
        room := CASE WHEN k.paused THEN 0 ELSE p_n END;
        IF k.concurrency IS NOT NULL THEN
            room := least(room, k.concurrency - (
                SELECT count(*) FROM jobs AS r
                WHERE r.started_at IS NOT NULL AND r.finished_at IS NULL AND r.kind = k.name));
        END IF;
        IF k.rate_per_s IS NOT NULL THEN
            room := least(room, floor(least(k.burst, k.tokens + k.rate_per_s
                          * greatest(0, extract(epoch FROM t - k.refilled_at))))::integer);
        END IF;
        kb := kb || jsonb_build_object(k.name, greatest(room, 0));
        IF room <= 0 THEN
            shut := shut || k.name;
        END IF;
    END LOOP;
    -- The aging lane, then claim order; a candidate of a kind with no room left is passed
    -- over (and unlocked at commit).
    FOR cand IN
        SELECT o.id, o.kind
        FROM (SELECT lvl.p, h.run_at, h.id
              FROM unnest('{9,8,7,6,5,4,3,2,1,0}'::smallint[]) AS lvl(p)
              CROSS JOIN LATERAL (
                  SELECT r.id, r.run_at FROM jobs AS r
                  WHERE r.status = 'new' AND r.queue = p_queue AND r.priority = lvl.p
                    AND r.run_at <= now() AND r.kind <> ALL (shut)
                  ORDER BY r.run_at, r.id
                  LIMIT least(p_oldest, budget)) AS h
              WHERE least(p_oldest, budget) > 0
              ORDER BY h.run_at, h.id
              LIMIT least(p_oldest, budget)) AS c
        CROSS JOIN LATERAL (  -- a point lookup on every column of the claim index
            SELECT j.id, j.kind FROM jobs AS j
            WHERE j.status = 'new' AND j.queue = p_queue AND j.priority = c.p
              AND j.run_at = c.run_at AND j.id = c.id
            FOR UPDATE SKIP LOCKED) AS o
    LOOP
        IF kb ? cand.kind THEN
            CONTINUE WHEN (kb ->> cand.kind)::integer <= 0;
            kb := jsonb_set(kb, ARRAY[cand.kind], to_jsonb((kb ->> cand.kind)::integer - 1));
            spent := jsonb_set(spent, ARRAY[cand.kind],
                               to_jsonb(coalesce((spent ->> cand.kind)::integer, 0) + 1));
        END IF;
        picked := picked || cand.id;
        budget := budget - 1;
        EXIT WHEN budget <= 0;
    END LOOP;
    -- Claim order. A kind that runs out here joins `shut` and the scan starts again
    -- without it (at most once per limited kind), so its backlog is filtered in the index
    -- scan, never locked, and the jobs behind it are reached.
    LOOP
        again := false;
        FOR cand IN
            SELECT j.id, j.kind FROM jobs AS j
            WHERE budget > 0 AND j.status = 'new' AND j.queue = p_queue AND j.run_at <= now()
              AND j.kind <> ALL (shut) AND j.id <> ALL (picked)
            ORDER BY j.priority DESC, j.run_at, j.id
            LIMIT budget
            FOR UPDATE SKIP LOCKED
        LOOP
            IF kb ? cand.kind THEN
                IF (kb ->> cand.kind)::integer <= 0 THEN
                    shut := shut || cand.kind;
                    again := true;
                    EXIT;
                END IF;
                kb := jsonb_set(kb, ARRAY[cand.kind], to_jsonb((kb ->> cand.kind)::integer - 1));
                spent := jsonb_set(spent, ARRAY[cand.kind],
                                   to_jsonb(coalesce((spent ->> cand.kind)::integer, 0) + 1));
            END IF;
            picked := picked || cand.id;
            budget := budget - 1;
            EXIT WHEN budget <= 0;
        END LOOP;
        EXIT WHEN NOT again OR budget <= 0;
    END LOOP;
    IF q.name IS NOT NULL AND q.rate_per_s IS NOT NULL THEN
        UPDATE job_queues AS jq
        SET tokens = q.tokens - cardinality(picked), refilled_at = t
        WHERE jq.name = p_queue;
    END IF;
    UPDATE job_kinds AS jk
    SET tokens = least(jk.burst, jk.tokens
                       + jk.rate_per_s * greatest(0, extract(epoch FROM t - jk.refilled_at)))
                 - coalesce((spent ->> jk.name)::integer, 0),
        refilled_at = t
    WHERE jk.rate_per_s IS NOT NULL AND kb ? jk.name;
    RETURN QUERY
    WITH claimed AS (
        UPDATE jobs AS j
        SET status = 'processing',
            attempts = j.attempts + 1,
            lease_owner = p_owner,
            lease_expires_at = t + make_interval(secs => p_lease_s),
            started_at = t,
            updated_at = t
        WHERE j.id = ANY(picked) AND j.status = 'new'
        RETURNING j.id, j.attempts, j.kind, j.queue, j.payload, j.timeout_s, j.run_at,
                  j.created_at, j.trace_parent
    ), tally AS (
        INSERT INTO job_tallies AS tl (grain, bucket, slot, queue, claimed, pickup_s,
                                       pickup_hist)
        SELECT 's', date_trunc('second', now()), pg_backend_pid(), w.queue, count(*),
               sum(w.waited), boundq_pickup_hist(array_agg(w.waited))
        FROM (SELECT c.queue, greatest(extract(epoch FROM t - c.run_at), 0)::float8 AS waited
              FROM claimed AS c) AS w
        GROUP BY w.queue
        ON CONFLICT (grain, bucket, slot, queue) DO UPDATE
        SET claimed = tl.claimed + EXCLUDED.claimed, pickup_s = tl.pickup_s + EXCLUDED.pickup_s,
            pickup_hist = boundq_add_counts(tl.pickup_hist, EXCLUDED.pickup_hist)
    )
    SELECT c.id, c.attempts, c.kind, c.queue, c.payload, c.timeout_s, c.run_at, c.created_at,
           greatest(extract(epoch FROM t - c.run_at), 0)::float8, t, c.trace_parent
    FROM claimed AS c;
END;
$$;
