"""Dependencies across tenants: a job of a queue outside the caller's scope cannot be
named in depends_on, and the answer is the one a missing job gets."""

from __future__ import annotations

from tests.tenants.conftest import Tenants


async def test_a_parent_outside_the_scope_answers_like_a_missing_one(tenants: Tenants) -> None:
    theirs = (await tenants.create("B", "b"))["id"]
    missing = theirs + 1000
    seen = await tenants.call("A", "POST", "/jobs", json={"name": "c", "queue": "a",
                                                          "depends_on": [theirs]})
    unknown = await tenants.call("A", "POST", "/jobs", json={"name": "c", "queue": "a",
                                                             "depends_on": [missing]})
    assert seen.status_code == unknown.status_code == 422
    assert seen.json()["error"]["field"] == "depends_on"
    assert seen.content.replace(str(theirs).encode(), b"N") == unknown.content.replace(
        str(missing).encode(), b"N")
    bulk = await tenants.call("A", "POST", "/jobs/bulk?atomic=true", json=[
        {"name": "c", "queue": "a", "depends_on": [theirs]}])
    assert bulk.status_code == 422 and bulk.json()["error"]["field"] == "[0].depends_on"
    assert bulk.json()["errors"][0]["message"] == f"job {theirs} not found"
    rows = await tenants.api.sql("SELECT has_dependants, status::text FROM jobs WHERE id = %s",
                                 theirs)
    assert rows == [(False, "new")]
    # within its own queues (and any queue for the admin) it works
    own = (await tenants.create("A", "a"))["id"]
    assert (await tenants.create("A", "a", depends_on=[own]))["status"] == "blocked"
    assert (await tenants.create("admin", "default", depends_on=[theirs]))["status"] == "blocked"
