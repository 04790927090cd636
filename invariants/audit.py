"""Test-only instrumentation: an audit trigger that records every UPDATE of a jobs row.

It is installed in the harness's template database only, never by core migrations. Each
row is written by the same transaction as the change it describes (a rolled-back change
leaves no audit row), and `at` is that transaction's now(): the clock every lease decision
uses. The checker replays these rows to see transitions the final tables cannot show: a
terminal row that changed and changed back, a lease revoked before it expired, a claim that
did not count. Heartbeats are updates too, so each attempt's latest granted lease is known.
"""

from __future__ import annotations

from typing import LiteralString

AUDIT_TABLE = "boundq_test_audit"

INSTALL: LiteralString = """
CREATE TABLE boundq_test_audit (
    seq                  bigserial PRIMARY KEY,
    job_id               bigint      NOT NULL,
    at                   timestamptz NOT NULL,
    old_status           job_status  NOT NULL,
    new_status           job_status  NOT NULL,
    old_attempts         integer     NOT NULL,
    new_attempts         integer     NOT NULL,
    max_attempts         integer     NOT NULL,
    old_owner            text,
    new_owner            text,
    old_lease_expires_at timestamptz,
    new_lease_expires_at timestamptz
);
CREATE INDEX boundq_test_audit_job_idx ON boundq_test_audit (job_id, seq);

CREATE FUNCTION boundq_test_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO boundq_test_audit (job_id, at, old_status, new_status, old_attempts,
        new_attempts, max_attempts, old_owner, new_owner, old_lease_expires_at,
        new_lease_expires_at)
    VALUES (NEW.id, now(), OLD.status, NEW.status, OLD.attempts, NEW.attempts,
        NEW.max_attempts, OLD.lease_owner, NEW.lease_owner, OLD.lease_expires_at,
        NEW.lease_expires_at);
    RETURN NULL;
END;
$$;

CREATE TRIGGER boundq_test_audit AFTER UPDATE ON jobs FOR EACH ROW
    EXECUTE FUNCTION boundq_test_audit();
"""

SELECT: LiteralString = """
SELECT seq, job_id, at, old_status::text, new_status::text, old_attempts, new_attempts,
       max_attempts, old_owner, new_owner, old_lease_expires_at, new_lease_expires_at
FROM boundq_test_audit ORDER BY seq
"""
