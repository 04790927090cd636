"""Idempotency-Key on `POST /jobs`: a retried request returns the job it made first.

The job and its key are written in one transaction. The key stores a hash of the decoded
request (so whitespace and key order do not matter); the same key with a different body
is a 409 naming the key, never a second job. Two concurrent requests with one key: the
second waits on the key's primary key until the first commits, rolls its own job back and
answers with the first one's job. Keys live as long as their job (ON DELETE CASCADE).
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
import psycopg

from boundq.core import queue
from boundq.core.queries import Q
from boundq.core.validation import MAX_KEY, JobSpec
from boundq.server.auth import ALL, Scope
from boundq.server.errors import ApiError
from boundq.server.schemas import JobCreate
from boundq.server.tenancy import check_created

HEADER = "Idempotency-Key"
_encoder = msgspec.json.Encoder()

Row = dict[str, Any]


class _KeyTaken(Exception):
    """Raised inside the transaction to roll our job back: another request won the key."""


def check_key(value: str) -> str:
    if not 1 <= len(value) <= MAX_KEY or not all("!" <= ch <= "~" for ch in value):
        raise ApiError(422, "invalid_field",
                       f"must be 1..{MAX_KEY} visible ASCII characters", HEADER)
    return value


def request_hash(job: JobCreate) -> str:
    return hashlib.sha256(_encoder.encode(job)).hexdigest()


def _in_use(key: str) -> ApiError:
    return ApiError(409, "idempotency_key_reused", f"{HEADER} {key!r} is in use", HEADER)


async def _replay(conn: psycopg.AsyncConnection[Any], key: str, digest: str,
                  scope: Scope) -> Row | None:
    cur = await conn.execute(Q.idempotency_key_get, {"key": key})
    found = await cur.fetchone()
    if found is None:
        return None
    stored_hash, job_id = found
    job = None if scope.everything else await queue.get_job(conn, int(job_id))
    if job is not None and not scope.allows(job["queue"]):
        # Keys are global: the key of another queue's job is taken, whatever the body.
        raise _in_use(key)
    if stored_hash != digest:
        raise ApiError(409, "idempotency_key_reused",
                       f"{HEADER} {key!r} was used with a different request body", HEADER)
    return job or await queue.get_job(conn, int(job_id))


async def create_idempotent(conn: psycopg.AsyncConnection[Any], spec: JobSpec, key: str,
                            digest: str, scope: Scope = ALL) -> tuple[Row, bool]:
    """Returns (job, created_now). created_now=False: a replay (or a dedupe_key holder).
    A replay or a holder of a queue outside `scope` is a 409 that names no job."""
    replayed = await _replay(conn, key, digest, scope)
    if replayed is not None:
        return replayed, False
    try:
        async with conn.transaction():
            row, created = await queue.enqueue(conn, spec, queues=scope.queue_list())
            check_created(spec, row, created, scope)  # before the key is stored
            cur = await conn.execute(Q.idempotency_key_insert,
                                     {"key": key, "request_hash": digest, "job_id": row["id"]})
            if await cur.fetchone() is None:
                raise _KeyTaken
    except _KeyTaken:
        replayed = await _replay(conn, key, digest, scope)
        if replayed is None:  # the winner's job was deleted meanwhile: a rare retention race
            raise _in_use(key) from None
        return replayed, False
    return row, created
