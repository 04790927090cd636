-- What the API's read router (server/replica.py) asks to route reads to a streaming
-- replica while it is close enough behind the primary.

-- name: replica_primary_position
-- The primary's WAL insert position, as a number: every commit visible on the primary
-- when this runs lies at or before it.
SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint AS lsn

-- name: replica_replay_position
-- On the replica: is it a standby, and up to where has it replayed (null on a server
-- that is not in recovery).
SELECT pg_is_in_recovery() AS standby,
       pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')::bigint AS replayed
