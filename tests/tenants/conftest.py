"""Two tenants and an admin against the real app over HTTP.

Tenant A may use queue `a`; tenant B queues `b` and `shared`; `ops` is an API_TOKENS
entry with every queue and `admin` is API_TOKEN. Jobs of queue `default` belong to no
tenant (only the two admin tokens see them)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import psycopg
import pytest

from boundq.core import queue
from boundq.core.config import Settings
from boundq.core.states import AttemptOutcome
from tests.api.conftest import TEST_OPTIONS, Api, running_api
from tests.conftest import fast_settings

ADMIN = "admin-secret"
TOKENS = {"tok-a": ["a"], "tok-b": ["b", "shared"], "ops": ["*"]}
WHO = {"A": "tok-a", "B": "tok-b", "ops": "ops", "admin": ADMIN, "nobody": None}
QUEUES_OF = {"A": {"a"}, "B": {"b", "shared"}}
OWNER = "tenants-test"


def tenant_settings(**overrides: Any) -> Settings:
    return fast_settings(API_TOKEN=ADMIN, API_TOKENS=json.dumps(TOKENS), **overrides)


def auth(who: str) -> dict[str, str]:
    token = WHO[who]
    return {} if token is None else {"Authorization": f"Bearer {token}"}


@dataclass
class Tenants:
    api: Api

    async def call(self, who: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**auth(who), **kwargs.pop("headers", {})}
        return await self.api.client.request(method, path, headers=headers, **kwargs)

    async def create(self, who: str, queue_name: str, **fields: Any) -> dict[str, Any]:
        r = await self.call(who, "POST", "/jobs",
                            json={"name": f"{who}-job", "queue": queue_name, **fields})
        assert r.status_code == 201, r.text
        job: dict[str, Any] = r.json()
        return job

    async def dead_letter(self, who: str, queue_name: str, **fields: Any) -> int:
        """A job that failed for good, through the statements a worker runs (so the
        tallies /stats reads count it)."""
        job_id = int((await self.create(who, queue_name, max_attempts=1, priority=9,
                                        **fields))["id"])
        claimed = await self.claim(queue_name)
        assert claimed.id == job_id, "another job of priority 9 was waiting"
        async with await psycopg.AsyncConnection.connect(self.api.db_url,
                                                         autocommit=True) as conn:
            done = await queue.fail_batch(conn, OWNER, [queue.Outcome(
                job_id, claimed.attempt, AttemptOutcome.ERROR, "boom", retryable=False)],
                0.0, 0.0)
        assert done == {job_id: "failed"}, done
        return job_id

    async def claim(self, queue_name: str) -> queue.ClaimedRow:
        """Claim the first waiting job of a queue, as a worker does (it stays processing)."""
        async with await psycopg.AsyncConnection.connect(self.api.db_url,
                                                         autocommit=True) as conn:
            claimed = await queue.claim(conn, OWNER, 1, 30.0, queue_name)
        assert len(claimed) == 1, claimed
        return claimed[0]

    async def status(self, job_id: int) -> str:
        rows = await self.api.sql("SELECT status::text FROM jobs WHERE id = %s", job_id)
        return str(rows[0][0])


@pytest.fixture
async def tenants(db_url: str) -> AsyncIterator[Tenants]:
    async with running_api(db_url, tenant_settings(), TEST_OPTIONS) as api:
        yield Tenants(api)


def same_apart_from(first: httpx.Response, second: httpx.Response, a: object, b: object
                    ) -> bool:
    """Two answers identical byte for byte once `a` in the first is written as `b`."""
    return (first.status_code == second.status_code
            and first.headers.get("content-type") == second.headers.get("content-type")
            and first.content.replace(str(a).encode(), str(b).encode()) == second.content)
