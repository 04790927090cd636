-- boundq schema, version 11: pickup histograms add up without a query per call.
--
-- boundq_add_counts (elementwise sum of two count arrays) was a SQL function whose body
-- is a query (unnest ... array_agg). PostgreSQL inlines only a SQL function whose body is
-- a single expression, so every call ran that query as one of its own, planned again
-- each time the calling statement ran. job_complete_and_claim calls it once per cycle,
-- in the tallies upsert: about 0.3 ms of a 4.5-5 ms statement at the seed's settings.
-- The same loop in PL/pgSQL is expression evaluation with a plan cached per session.
-- Same results: the longer array's length, a missing or NULL element counts as 0.
CREATE OR REPLACE FUNCTION boundq_add_counts(a bigint[], b bigint[]) RETURNS bigint[]
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    total bigint[] := '{}';
BEGIN
    FOR i IN 1 .. coalesce(greatest(cardinality(a), cardinality(b)), 0) LOOP
        total[i] := coalesce(a[i], 0) + coalesce(b[i], 0);
    END LOOP;
    RETURN total;
END;
$$;
