"""Every named query prepares against the migrated schema (the SQLx-style compile-time
check, done at test time): a query that no longer fits the schema fails here."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from boundq.core.queries import Q, parse_blocks
from tests.helpers import as_prepared, placeholders


async def _prepare(conn, name: str, sql: str) -> list[str]:
    """PREPARE on the server; returns the parameter types it inferred."""
    await conn.execute(f"PREPARE {name} AS {as_prepared(sql)}")
    cur = await conn.execute(
        "SELECT parameter_types::text[] FROM pg_prepared_statements WHERE name = %s", (name,))
    row = await cur.fetchone()
    assert row is not None
    return list(row[0])


def test_the_core_queries_are_named() -> None:
    names = set(Q.names())
    assert {"job_insert", "job_complete_and_claim", "job_heartbeat", "job_fail_batch",
            "job_release_batch", "job_reap_expired", "job_stage_due", "job_held_by_owner",
            "job_cancel", "job_retry", "job_tally_totals"} <= names


@pytest.mark.parametrize("name", Q.names())
async def test_named_query_prepares_against_the_schema(conn, name) -> None:
    types = await _prepare(conn, f"check_{name}", Q.text(name))
    assert "unknown" not in types, types
    # psycopg sees the same parameters as the server.
    assert len(types) == len(placeholders(Q.text(name)))


async def test_prepare_catches_a_query_schema_mismatch(conn) -> None:
    """Control: the check above does fail when a query and the schema disagree."""
    await conn.execute("ALTER TABLE jobs RENAME COLUMN lease_owner TO holder")
    with pytest.raises(psycopg.errors.UndefinedColumn):
        await _prepare(conn, "check_claim", Q.job_complete_and_claim)
    broken = Q.job_get.replace("WHERE id", "WHERE no_such_column")
    with pytest.raises(psycopg.errors.UndefinedColumn):
        await _prepare(conn, "check_get", broken)


async def test_named_queries_run_through_psycopg_with_prepare(conn) -> None:
    """The client side too: psycopg binds each hot-path query as a server-side prepared
    statement with real Python values (types must adapt, not just parse)."""
    params = {
        "job_complete_and_claim": {"owner": "o", "ids": [1], "attempts": [1], "results": "{}",
                                   "followups": "{}",
                                   "queues": ["default"], "limits": [5], "oldest": [1], "total": 5,
                                   "free": 4,
                                   "lease_s": 1.5, "floor_queues": ["default"],
                                   "floor_priorities": [0],
                                   "floor_ats": [datetime(2026, 1, 1, tzinfo=UTC)]},
        "job_heartbeat": {"owner": "o", "ids": [1], "attempts": [1], "lease_s": 1.5},
        "job_held_by_owner": {"owner": "o"},
        "job_stage_due": {"limit": 10},
        "job_tally_totals": None,
        "job_fail_batch": {"owner": "o", "ids": [1], "attempts": [1], "errors": ["e"],
                           "outcomes": ["error"], "retryable": [True], "retry_base_s": 0.1,
                           "retry_max_s": 1.0},
        "job_release_batch": {"owner": "o", "ids": [1], "attempts": [1]},
        "job_reap_expired": {"limit": 10},
        "job_cancel": {"id": 1},
        "job_retry": {"id": 1},
        "job_get": {"id": 1},
        "job_attempts_list": {"id": 1},
        "job_count_by_status": None,
    }
    for name, values in params.items():
        cur = await conn.execute(Q.text(name), values, prepare=True)
        assert cur.description is not None, name
    cur = await conn.execute("SELECT count(*) FROM pg_prepared_statements")
    row = await cur.fetchone()
    assert row is not None and row[0] >= len(params)


def test_block_parser_refuses_duplicate_names() -> None:
    with pytest.raises(ValueError, match="duplicate"):
        parse_blocks("-- name: a\nSELECT 1\n-- name: a\nSELECT 2\n")
    assert parse_blocks("-- name: one\n-- doc\nSELECT 1\n") == {"one": "-- doc\nSELECT 1"}
    with pytest.raises(AttributeError):
        _ = Q.no_such_query
