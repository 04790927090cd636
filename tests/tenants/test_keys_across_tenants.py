"""Dedupe keys and Idempotency-Keys are unique across every queue (the schema's unique
indexes): a key held by another tenant's job is a 409 that names no job, never that
job's id or body."""

from __future__ import annotations

from tests.tenants.conftest import Tenants


async def test_a_dedupe_key_held_in_another_queue_is_a_409_without_the_holder(
        tenants: Tenants) -> None:
    held = await tenants.create("A", "a", dedupe_key="order-7")
    r = await tenants.call("B", "POST", "/jobs",
                           json={"name": "x", "queue": "b", "dedupe_key": "order-7"})
    assert r.status_code == 409, r.text
    assert r.json() == {"error": {"code": "dedupe_key_taken", "field": "dedupe_key",
                                  "message": "dedupe_key 'order-7' is held by a live job"},
                        "holder": None}
    # with an Idempotency-Key too: the same answer, and the key is not kept
    r = await tenants.call("B", "POST", "/jobs", headers={"Idempotency-Key": "b-1"},
                           json={"name": "x", "queue": "b", "dedupe_key": "order-7"})
    assert r.status_code == 409 and r.json()["holder"] is None, r.text
    assert await tenants.api.sql("SELECT key FROM idempotency_keys") == []
    assert await tenants.api.count_jobs() == 1
    # the owner and the admin get the holder, as before tenants
    for who in ("A", "admin"):
        r = await tenants.call(who, "POST", "/jobs",
                               json={"name": "x", "queue": "a", "dedupe_key": "order-7"})
        assert r.status_code == 200 and r.json()["id"] == held["id"], (who, r.text)
    # once A's job is finished the key is free for B
    await tenants.call("A", "POST", f"/jobs/{held['id']}/cancel")
    r = await tenants.call("B", "POST", "/jobs", headers={"Idempotency-Key": "b-1"},
                           json={"name": "x", "queue": "b", "dedupe_key": "order-7"})
    assert r.status_code == 201 and r.json()["queue"] == "b", r.text


async def test_another_tenants_idempotency_key_is_a_409(tenants: Tenants) -> None:
    first = await tenants.call("A", "POST", "/jobs", headers={"Idempotency-Key": "k"},
                               json={"name": "pay", "queue": "a"})
    assert first.status_code == 201
    a_id = first.json()["id"]
    # B with its own body: the key is taken
    r = await tenants.call("B", "POST", "/jobs", headers={"Idempotency-Key": "k"},
                           json={"name": "pay", "queue": "b"})
    assert r.status_code == 409, r.text
    assert r.json() == {"error": {"code": "idempotency_key_reused", "field": "Idempotency-Key",
                                  "message": "Idempotency-Key 'k' is in use"}}
    # B replaying A's very body: a create into A's queue, refused before any replay
    r = await tenants.call("B", "POST", "/jobs", headers={"Idempotency-Key": "k"},
                           json={"name": "pay", "queue": "a"})
    assert r.status_code == 403 and r.json()["error"]["field"] == "queue", r.text
    # A's own replay still works
    r = await tenants.call("A", "POST", "/jobs", headers={"Idempotency-Key": "k"},
                           json={"name": "pay", "queue": "a"})
    assert r.status_code == 200 and r.json()["id"] == a_id


async def test_a_key_that_leads_to_another_queues_job_is_never_replayed(tenants: Tenants
                                                                        ) -> None:
    """The admin's create for queue `b` with A's dedupe_key answered with A's job, so the
    admin's Idempotency-Key points at a job of queue `a`. B sending the admin's exact
    request (a queue B may use) must not get that job back."""
    held = await tenants.create("A", "a", dedupe_key="d")
    body = {"name": "x", "queue": "b", "dedupe_key": "d"}
    r = await tenants.call("admin", "POST", "/jobs", headers={"Idempotency-Key": "via-admin"},
                           json=body)
    assert r.status_code == 200 and r.json()["id"] == held["id"]
    r = await tenants.call("B", "POST", "/jobs", headers={"Idempotency-Key": "via-admin"},
                           json=body)
    assert r.status_code == 409, r.text
    assert r.json() == {"error": {"code": "idempotency_key_reused", "field": "Idempotency-Key",
                                  "message": "Idempotency-Key 'via-admin' is in use"}}


async def test_retry_names_the_holder_only_within_the_scope(tenants: Tenants) -> None:
    dead = await tenants.dead_letter("B", "b", dedupe_key="nightly")
    live = await tenants.create("A", "a", dedupe_key="nightly")  # the dead letter let go
    r = await tenants.call("B", "POST", f"/jobs/{dead}/retry")
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "dedupe_key_taken" and r.json()["holder"] is None
    assert r.json()["error"]["message"] == (f"job {dead} cannot run again: its dedupe_key "
                                            "'nightly' is held by a live job")
    assert await tenants.status(dead) == "failed"
    r = await tenants.call("admin", "POST", f"/jobs/{dead}/retry")
    assert r.status_code == 409 and r.json()["holder"] == live["id"]
    # a holder in B's own queues is named to B
    await tenants.call("A", "POST", f"/jobs/{live['id']}/cancel")
    mine = await tenants.create("B", "shared", dedupe_key="nightly")
    r = await tenants.call("B", "POST", f"/jobs/{dead}/retry")
    assert r.status_code == 409 and r.json()["holder"] == mine["id"], r.text


async def test_bulk_items_whose_key_another_queue_holds_are_invalid(tenants: Tenants) -> None:
    held = await tenants.create("A", "a", dedupe_key="shared-key")
    mine = await tenants.create("B", "b", dedupe_key="own-key")
    items = [{"name": "1", "queue": "b", "dedupe_key": "shared-key"},
             {"name": "2", "queue": "b"},
             {"name": "3", "queue": "shared", "dedupe_key": "own-key"},
             {"name": "4", "queue": "b", "dedupe_key": "fresh"}]
    before = await tenants.api.count_jobs()
    r = await tenants.call("B", "POST", "/jobs/bulk?atomic=true", json=items)
    assert r.status_code == 422, r.text
    assert r.json()["errors"] == [{"index": 0, "field": "dedupe_key",
                                   "message": "is held by a live job"}]
    assert r.json()["ids"] == [] and r.json()["created"] == 0
    assert await tenants.api.count_jobs() == before  # all or nothing
    r = await tenants.call("B", "POST", "/jobs/bulk", json=items)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["errors"] == [{"index": 0, "field": "dedupe_key",
                               "message": "is held by a live job"}]
    assert body["created"] == 3 and held["id"] not in body["ids"]
    assert body["ids"][1] == mine["id"]  # a holder of B's own is answered, as before
    assert await tenants.api.count_jobs() == before + 2
    r = await tenants.call("B", "POST", "/jobs/bulk",
                           json=[{"name": "only", "queue": "b", "dedupe_key": "shared-key"}])
    assert r.status_code == 422 and r.json()["created"] == 0, r.text
    r = await tenants.call("admin", "POST", "/jobs/bulk", json=items[:1])
    assert r.status_code == 201 and r.json()["ids"] == [held["id"]]
