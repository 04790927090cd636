"""Job input is checked before anything is written; each problem names its field, and a
batch with one bad item writes nothing."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from boundq.core import queue
from boundq.core.errors import JobValidationError
from boundq.core.handlers import default_registry
from boundq.core.validation import MAX_PAYLOAD_DEPTH, validate_job
from tests.conftest import fast_settings
from tests.helpers import REPO_ROOT, scalar, spec

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def check(item: dict) -> object:
    return validate_job(item, default_registry, fast_settings(), now=NOW)


def nested(depth: int) -> dict:
    value: dict = {"leaf": 1}
    for _ in range(depth):
        value = {"down": value}
    return value


BAD = [
    ("unknown kind", {"name": "x", "kind": "no-such-kind"}, "kind"),
    ("kind not text", {"name": "x", "kind": 5}, "kind"),
    ("sleep ms negative", {"name": "x", "kind": "sleep", "payload": {"ms": -1}}, "payload.ms"),
    ("sleep ms missing", {"name": "x", "kind": "sleep", "payload": {}}, "payload.ms"),
    ("sleep ms text", {"name": "x", "kind": "sleep", "payload": {"ms": "10"}}, "payload.ms"),
    ("fail times text", {"name": "x", "kind": "fail", "payload": {"times": "2"}},
     "payload.times"),
    ("fail times float", {"name": "x", "kind": "fail", "payload": {"times": 1.5}},
     "payload.times"),
    ("fail times bool", {"name": "x", "kind": "fail", "payload": {"times": True}},
     "payload.times"),
    ("priority negative", {"name": "x", "priority": -1}, "priority"),
    ("priority too high", {"name": "x", "priority": 10}, "priority"),
    ("priority absurd", {"name": "x", "priority": 10**12}, "priority"),
    ("priority bool", {"name": "x", "priority": True}, "priority"),
    ("priority text", {"name": "x", "priority": "5"}, "priority"),
    ("delay negative", {"name": "x", "delay": -1}, "delay"),
    ("delay absurd", {"name": "x", "delay": 10**12}, "delay"),
    ("delay nan", {"name": "x", "delay": math.nan}, "delay"),
    ("delay inf", {"name": "x", "delay": math.inf}, "delay"),
    ("delay and run_at", {"name": "x", "delay": 1, "run_at": "2026-06-01T12:00:00Z"}, "delay"),
    ("run_at without zone", {"name": "x", "run_at": "2026-06-01T12:00:00"}, "run_at"),
    ("run_at naive datetime", {"name": "x", "run_at": datetime(2026, 6, 1, 12)}, "run_at"),
    ("run_at far future", {"name": "x", "run_at": (NOW + timedelta(days=400)).isoformat()},
     "run_at"),
    ("run_at far past", {"name": "x", "run_at": "1970-01-01T00:00:00Z"}, "run_at"),
    ("run_at garbage", {"name": "x", "run_at": "tomorrow-ish"}, "run_at"),
    ("run_at number", {"name": "x", "run_at": 1234567890}, "run_at"),
    ("NUL in name", {"name": "a\x00b"}, "name"),
    ("NUL in payload string", {"name": "x", "payload": {"k": "a\x00b"}}, "payload.k"),
    ("NUL in nested payload string", {"name": "x", "payload": {"k": ["ok", {"z": "\x00"}]}},
     "payload.k[1].z"),
    ("NUL in payload key", {"name": "x", "payload": {"a\x00b": 1}}, "payload"),
    ("NUL in dedupe_key", {"name": "x", "dedupe_key": "k\x00"}, "dedupe_key"),
    ("NaN in payload", {"name": "x", "payload": {"v": math.nan}}, "payload.v"),
    ("inf in payload", {"name": "x", "payload": {"v": [1, -math.inf]}}, "payload.v[1]"),
    ("deep nesting", {"name": "x", "payload": nested(MAX_PAYLOAD_DEPTH + 5)}, "payload"),
    ("payload not an object", {"name": "x", "payload": [1, 2]}, "payload"),
    ("payload not JSON", {"name": "x", "payload": {"v": object()}}, "payload.v"),
    ("payload too large", {"name": "x", "payload": {"v": "x" * (1024 * 1024 + 1)}}, "payload"),
    ("unknown field", {"name": "x", "colour": "red"}, "colour"),
    ("status processing", {"name": "x", "status": "processing"}, "status"),
    ("status success", {"name": "x", "status": "success"}, "status"),
    ("status None", {"name": "x", "status": None}, "status"),
    ("name missing", {"kind": "noop"}, "name"),
    ("name empty", {"name": ""}, "name"),
    ("name blank", {"name": "   "}, "name"),
    ("name too long", {"name": "n" * 201}, "name"),
    ("name not text", {"name": 42}, "name"),
    ("max_attempts zero", {"name": "x", "max_attempts": 0}, "max_attempts"),
    ("max_attempts absurd", {"name": "x", "max_attempts": 10**6}, "max_attempts"),
    ("timeout zero", {"name": "x", "timeout": 0}, "timeout"),
    ("timeout negative", {"name": "x", "timeout": -5}, "timeout"),
    ("timeout absurd", {"name": "x", "timeout": 10**9}, "timeout"),
    ("dedupe_key empty", {"name": "x", "dedupe_key": ""}, "dedupe_key"),
    ("dedupe_key too long", {"name": "x", "dedupe_key": "k" * 201}, "dedupe_key"),
]


@pytest.mark.parametrize(("item", "field"), [(i, f) for _, i, f in BAD], ids=[b[0] for b in BAD])
def test_bad_input_names_its_field(item, field) -> None:
    with pytest.raises(JobValidationError) as refused:
        check(item)
    assert refused.value.field == field
    assert str(refused.value).startswith(f"{field}: ")


def test_not_a_mapping_is_refused() -> None:
    with pytest.raises(JobValidationError) as refused:
        check(["name", "x"])  # type: ignore[arg-type]
    assert refused.value.field == "body"


def test_status_is_refused_where_not_allowed() -> None:
    with pytest.raises(JobValidationError) as refused:
        validate_job({"name": "x", "status": "new"}, default_registry, fast_settings(),
                     allow_status=False)
    assert refused.value.field == "status"


def test_seed_body_is_accepted() -> None:
    got = check({"name": "hello", "status": "new"})
    assert (got.name, got.kind, got.priority, got.payload_json) == ("hello", "noop", 0, "{}")
    assert got.max_attempts == fast_settings().default_max_attempts


@pytest.mark.parametrize(
    "item",
    [
        {"name": "x", "priority": 0},
        {"name": "x", "priority": 9},
        {"name": "x", "delay": 0},
        {"name": "x", "delay": 0.25},
        {"name": "x", "run_at": "2026-06-01T12:00:00Z"},
        {"name": "x", "run_at": "2026-06-02T12:00:00+02:00"},
        {"name": "x", "run_at": NOW + timedelta(days=300)},
        {"name": "x", "kind": "sleep", "payload": {"ms": 0}},
        {"name": "x", "kind": "fail", "payload": {}},
        {"name": "x", "kind": "fail", "payload": {"times": 3}},
        {"name": "x", "payload": None},
        {"name": "x", "payload": nested(MAX_PAYLOAD_DEPTH - 2)},
        {"name": "x", "payload": {"text": "ünïcødé ✓", "n": 1.5, "list": [1, None, True]}},
        {"name": "n" * 200, "dedupe_key": "k" * 200, "max_attempts": 1000, "timeout": 86400},
    ],
)
def test_good_input_is_accepted(item) -> None:
    assert check(item).name == item["name"]


async def test_validated_fields_reach_the_row(conn) -> None:
    run_at = datetime.now(UTC) + timedelta(hours=1)
    row, created = await queue.enqueue(conn, spec(
        "full", kind="sleep", payload={"ms": 5, "note": "ünï"}, priority=4, run_at=run_at,
        max_attempts=7, timeout=2.5, dedupe_key="k-1"))
    assert created
    assert (row["kind"], row["payload"], row["priority"], row["max_attempts"]) == (
        "sleep", {"ms": 5, "note": "ünï"}, 4, 7)
    assert (row["timeout_s"], row["dedupe_key"], row["status"]) == (2.5, "k-1", "scheduled")
    assert abs((row["run_at"] - run_at).total_seconds()) < 1e-3
    again, created = await queue.enqueue(conn, spec("dup", dedupe_key="k-1"))
    assert not created and again["id"] == row["id"]


async def test_batch_with_one_bad_item_writes_nothing(conn) -> None:
    items = [{"name": f"good-{i}"} for i in range(5)]
    items.insert(3, {"name": "bad", "payload": {"v": math.nan}})
    with pytest.raises(JobValidationError):
        specs = [check(item) for item in items]  # validate all first ...
        await queue.enqueue_many(conn, specs)  # ... so this line is never reached
    assert await scalar(conn, "SELECT count(*) FROM jobs") == 0


@pytest.mark.parametrize("bad_position", [0, 2, 5])
async def test_enqueue_many_is_one_transaction(conn, bad_position) -> None:
    """A spec that slipped past validation and fails in the database (here a priority out
    of range) takes the whole batch with it: plain rows (COPY) and keyed rows alike."""
    specs = [spec(f"plain-{i}") for i in range(3)] + [
        spec(f"keyed-{i}", dedupe_key=f"key-{i}") for i in range(3)]
    specs[bad_position] = replace(specs[bad_position], priority=42)
    with pytest.raises(psycopg.errors.CheckViolation):
        await queue.enqueue_many(conn, specs)
    assert await scalar(conn, "SELECT count(*) FROM jobs") == 0
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    ids = await queue.enqueue_many(conn, [spec("after")])
    assert len(ids) == 1


def test_cli_enqueue_with_one_bad_item_writes_nothing(tmp_path, db_url) -> None:
    batch = tmp_path / "jobs.json"
    batch.write_text(json.dumps([{"name": "good"}, {"name": "bad", "priority": 99},
                                 {"name": "good-too"}]))
    env = {**os.environ, "DATABASE_URL": db_url}
    done = subprocess.run([sys.executable, "-m", "boundq", "enqueue", "--file", str(batch)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "priority" in done.stderr
    assert "Traceback" not in done.stderr
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
