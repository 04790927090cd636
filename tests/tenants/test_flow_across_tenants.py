"""Flow settings across tenants: a scoped token sees its own queues' settings and counts,
another queue is a 404 whether or not it exists, and settings (which change every
tenant's share of the workers) and kinds (which span queues) are for all-queue tokens."""

from __future__ import annotations

import pytest

from tests.tenants.conftest import Tenants


async def test_queue_lists_and_reads_hold_the_callers_queues(tenants: Tenants) -> None:
    for who, q in (("A", "a"), ("B", "b"), ("admin", "default")):
        await tenants.create(who, q)
    r = await tenants.call("admin", "PUT", "/queues/shared", json={"concurrency": 2})
    assert r.status_code == 201, r.text
    seen = {who: {q["name"] for q in (await tenants.call(who, "GET", "/queues")).json()["queues"]}
            for who in ("A", "B", "ops", "admin")}
    assert seen == {"A": {"a"}, "B": {"b", "shared"}, "ops": {"a", "b", "default", "shared"},
                    "admin": {"a", "b", "default", "shared"}}
    own = await tenants.call("B", "GET", "/queues/shared")
    assert (own.status_code, own.json()["concurrency"]) == (200, 2)
    # another tenant's queue and a queue nobody has answer alike
    other = await tenants.call("A", "GET", "/queues/b")
    nowhere = await tenants.call("A", "GET", "/queues/nowhere")
    assert other.status_code == nowhere.status_code == 404
    assert other.json()["error"]["code"] == nowhere.json()["error"]["code"] == "not_found"
    assert (await tenants.call("nobody", "GET", "/queues")).status_code == 401


@pytest.mark.parametrize(("method", "path"), [
    ("PUT", "/queues/a"), ("PUT", "/queues/b"), ("PUT", "/kinds/noop"),
    ("GET", "/kinds"), ("GET", "/kinds/noop"),
])
async def test_settings_and_kinds_are_for_all_queue_tokens(tenants: Tenants, method: str,
                                                           path: str) -> None:
    body = {"json": {"burst": 2}} if method == "PUT" else {}
    for who in ("A", "B"):
        r = await tenants.call(who, method, path, **body)
        assert r.status_code == 403, (who, r.text)
    assert await tenants.api.sql("SELECT count(*) FROM job_limit_changes") == [(0,)]
    for who in ("ops", "admin"):
        r = await tenants.call(who, method, path, **body)
        assert r.status_code in (200, 201), (who, r.text)
