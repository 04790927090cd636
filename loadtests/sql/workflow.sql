-- The workflow scenario's measurements (loadtests/workflow_verdict.py), from the jobs
-- table, job_dependencies and PostgreSQL's own clock: a graph's latency is its sink's
-- finished_at - its root's created_at.

-- name: workflow_graphs
-- Every fan-out/fan-in graph of a queue whose root was created in [a, b), found from its
-- sink through job_dependencies (sink -> its first child -> the root): the root's id and
-- created_at, the sink's id, status and finished_at, its fan-in, and the latency (null
-- while the sink has not finished).
SELECT r.id AS root_id, s.id AS sink_id, r.created_at AS root_created_at, s.status,
       s.finished_at, extract(epoch FROM s.finished_at - r.created_at)::float8 AS latency_s,
       (SELECT count(*) FROM job_dependencies AS f WHERE f.child_id = s.id) AS fan_in
FROM jobs AS s
CROSS JOIN LATERAL (
    SELECT d.parent_id FROM job_dependencies AS d
    WHERE d.child_id = s.id ORDER BY d.parent_id LIMIT 1
) AS c
JOIN job_dependencies AS up ON up.child_id = c.parent_id
JOIN jobs AS r ON r.id = up.parent_id
WHERE s.queue = %(queue)s AND s.name = %(sink)s
  AND r.created_at >= %(a)s AND r.created_at < %(b)s
ORDER BY r.created_at, r.id

-- name: workflow_unfinished
-- Jobs of a queue not finished yet (blocked, waiting or running): the graphs of the alone
-- phase are let finish before the flood starts.
SELECT count(*) FROM jobs WHERE queue = %(queue)s AND finished_at IS NULL
