"""The dashboard's rules over plain HTTP (no browser needed to see them): CSRF, login,
a scoped token's queues, flow control's limits, a database that is down, escaping."""

from __future__ import annotations

import contextlib
import json
import re

import httpx
import psycopg
from markupsafe import escape

from boundq.server.ui import access
from tests.api.conftest import Api, running_api
from tests.conftest import fast_settings
from tests.helpers import add_job
from tests.ui.conftest import enqueue, worker

TOKEN = "http-test-token-51d2"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
SCOPED = "tok-a-7f3e"  # API_TOKENS: queue a only
MISSING = 987_654_321


async def csrf_of(client: httpx.AsyncClient, path: str = "/ui") -> str:
    """The token a page's forms carry: the same as its CSRF cookie (double submit)."""
    page = await client.get(path)
    assert page.status_code == 200, page.text
    token = client.cookies.get(access.CSRF_COOKIE)
    assert token
    found = _CSRF.search(page.text)
    assert found is None or found[1] == token
    return str(token)


async def failed_jobs(api: Api, n: int = 1, queues: str = "default", **fields: object
                      ) -> list[int]:
    ids = await enqueue(api.db_url, n, kind="fail", payload={"times": 9}, max_attempts=1,
                        **fields)
    async with worker(api.db_url, queues=queues):
        for job_id in ids:
            await _until_status(api, job_id, "failed")
    return ids


async def _until_status(api: Api, job_id: int, status: str) -> None:
    from tests.helpers import wait_until

    async def check() -> bool:
        rows = await api.sql("SELECT status::text FROM jobs WHERE id = %s", job_id)
        return rows[0][0] == status

    await wait_until(check, 20, what=f"job {job_id} {status}")


async def status_of(api: Api, job_id: int) -> str:
    return str((await api.sql("SELECT status::text FROM jobs WHERE id = %s", job_id))[0][0])


def form(csrf: str, **fields: str) -> dict[str, str]:
    return {"csrf": csrf, **fields}


async def test_actions_need_the_sessions_csrf_token_and_stay_on_the_dashboard(
        db_url: str) -> None:
    async with running_api(db_url) as api:
        (job,) = await failed_jobs(api)
        client = api.client
        csrf = await csrf_of(client)
        url = f"/ui/jobs/{job}/retry"
        for data, headers in (({"back": "/ui"}, {}), (form("x" * 43), {}),
                              (form(csrf), {"origin": "http://evil.example"})):
            refused = await client.post(url, data=data, headers=headers)
            assert refused.status_code == 403, refused.text
            assert "Form expired" in refused.text
        assert await status_of(api, job) == "failed"

        done = await client.post(url, data=form(csrf, back="https://evil.example/x"))
        assert done.status_code == 303
        assert done.headers["location"] == f"/ui/jobs/{job}"  # never off the dashboard
        assert await status_of(api, job) == "new"
        shown = await client.get(done.headers["location"])
        assert f"job {job} is waiting to run again" in shown.text
        assert "waiting to run again" not in (await client.get("/ui")).text  # shown once

        # Retrying a job that is not failed is a message on the page, not an error status.
        again = await client.post(url, data=form(csrf, back="/ui/failed"))
        assert again.status_code == 303 and again.headers["location"] == "/ui/failed"
        page = await client.get("/ui/failed")
        assert page.status_code == 200 and f"job {job} is new: cannot retry" in page.text
        missing = await client.post("/ui/jobs/999999/cancel", data=form(csrf))
        assert missing.status_code == 303
        assert "job 999999 not found" in (await client.get(missing.headers["location"])).text


async def test_login_is_required_for_pages_and_actions_when_a_token_is_set(db_url: str) -> None:
    async with running_api(db_url, fast_settings(api_token=TOKEN)) as api:
        (job,) = await failed_jobs(api)
        client = api.client
        page = await client.get("/ui/failed?queue=default")
        assert page.status_code == 303
        assert page.headers["location"] == "/ui/login?next=/ui/failed%3Fqueue%3Ddefault"
        csrf = await csrf_of(client, "/ui/login")
        act = await client.post(f"/ui/jobs/{job}/retry", data=form(csrf))
        assert act.status_code == 303 and act.headers["location"].startswith("/ui/login")
        assert await status_of(api, job) == "failed"

        wrong = await client.post("/ui/login", data=form(csrf, token="nope", next="/ui"))
        assert wrong.status_code == 401 and "not accepted" in wrong.text
        assert access.SESSION_COOKIE not in wrong.headers.get("set-cookie", "")
        right = await client.post("/ui/login", data=form(csrf, token=TOKEN, next="/ui/failed"))
        assert right.status_code == 303 and right.headers["location"] == "/ui/failed"
        cookie = right.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie
        assert (await client.get("/ui/failed")).status_code == 200

        # A script may send the API's header instead of a cookie.
        async with httpx.AsyncClient(base_url=api.base) as script:
            bearer = {"authorization": f"Bearer {TOKEN}"}
            assert (await script.get("/ui", headers=bearer)).status_code == 200
            assert (await script.get("/ui", headers={"authorization": "Bearer x"})
                    ).status_code == 303


async def test_without_a_token_the_dashboard_is_open(db_url: str) -> None:
    async with running_api(db_url) as api:
        assert (await api.client.get("/ui")).status_code == 200
        login = await api.client.get("/ui/login?next=/ui/failed")
        assert login.status_code == 303 and login.headers["location"] == "/ui/failed"
        csrf = await csrf_of(api.client)
        posted = await api.client.post("/ui/login", data=form(csrf, token="any", next="/ui"))
        assert posted.status_code == 303 and "set-cookie" not in posted.headers


def _total(page: str, column: str) -> str:
    found = re.search(rf'data-total="{column}">([^<]*)<', page)
    assert found is not None, column
    return found[1]


async def _log_in(client: httpx.AsyncClient, token: str) -> None:
    csrf = await csrf_of(client, "/ui/login")
    done = await client.post("/ui/login", data=form(csrf, token=token, next="/ui"))
    assert done.status_code == 303 and done.headers["location"] == "/ui", done.text


async def test_a_scoped_token_sees_and_acts_on_its_queues_only(db_url: str) -> None:
    """API_TOKENS gives a token queue `a`: logged in with it (cookie) or sending it as the
    bearer header, every page counts and lists queue a only, another queue's job and queue
    pages answer exactly as missing ones (404), and its actions find no job of queue b."""
    settings = fast_settings(API_TOKEN=TOKEN, API_TOKENS=json.dumps({SCOPED: ["a"]}))
    async with running_api(db_url, settings) as api:
        (failed_a,) = await failed_jobs(api, queue="a", queues="a,b")
        (failed_b,) = await failed_jobs(api, queue="b", queues="a,b")
        (waiting_a,) = await enqueue(db_url, queue="a", kind="noop")
        (waiting_b,) = await enqueue(db_url, queue="b", kind="sleep", payload={"ms": 1})
        admin = {"authorization": f"Bearer {TOKEN}"}
        put = await api.client.put("/queues/b", json={"concurrency": 3}, headers=admin)
        assert put.status_code == 201, put.text

        everything = (await api.client.get("/ui", headers=admin)).text
        assert 'data-queue="a"' in everything and 'data-queue="b"' in everything
        assert (_total(everything, "failed"), _total(everything, "new")) == ("2", "2")
        assert 'data-kind="sleep"' in everything

        client = api.client
        await _log_in(client, SCOPED)
        async with httpx.AsyncClient(base_url=api.base, timeout=10) as script:
            bearer = {"authorization": f"Bearer {SCOPED}"}
            for overview in ((await client.get("/ui")).text,
                             (await script.get("/ui", headers=bearer)).text):
                assert 'data-queue="a"' in overview and 'data-queue="b"' not in overview
                assert (_total(overview, "failed"), _total(overview, "new")) == ("1", "1")
                assert 'data-kind="noop"' in overview and 'data-kind="sleep"' not in overview
                assert "concurrency 3" not in overview  # b's limits
        failed = (await client.get("/ui/failed")).text
        assert f'data-job="{failed_a}"' in failed and f'data-job="{failed_b}"' not in failed
        assert f'data-job="{failed_b}"' not in (await client.get("/ui/failed?queue=b")).text
        assert (await client.get(f"/ui/jobs/{waiting_a}")).status_code == 200
        assert (await client.get("/ui/queues/a")).status_code == 200
        for (hidden_path, hidden_says), (absent_path, absent_says) in (
                ((f"/ui/jobs/{waiting_b}", f"job {waiting_b} not found"),
                 (f"/ui/jobs/{MISSING}", f"job {MISSING} not found")),
                (("/ui/queues/b", "no queue 'b' here"),
                 ("/ui/queues/nosuchqueue", "no queue 'nosuchqueue' here"))):
            hidden, absent = await client.get(hidden_path), await client.get(absent_path)
            assert hidden.status_code == absent.status_code == 404, hidden.text
            assert hidden.headers["content-type"] == absent.headers["content-type"]
            assert escape(hidden_says) in hidden.text
            assert (hidden.text.replace(escape(hidden_says), "?")
                    == absent.text.replace(escape(absent_says), "?"))

        csrf = await csrf_of(client)
        for job, verb in ((waiting_b, "cancel"), (failed_b, "retry")):
            refused = await client.post(f"/ui/jobs/{job}/{verb}", data=form(csrf))
            assert refused.status_code == 303
            page = await client.get(refused.headers["location"])
            assert f"job {job} not found" in page.text
        assert (await status_of(api, waiting_b), await status_of(api, failed_b)) == ("new",
                                                                                    "failed")
        done = await client.post(f"/ui/jobs/{waiting_a}/cancel", data=form(csrf))
        assert done.status_code == 303 and await status_of(api, waiting_a) == "cancelled"
        done = await client.post(f"/ui/jobs/{failed_a}/retry", data=form(csrf))
        assert done.status_code == 303 and await status_of(api, failed_a) == "new"


async def test_flow_control_limits_are_shown(db_url: str) -> None:
    async with running_api(db_url) as api:
        await enqueue(db_url, queue="default")
        page = (await api.client.get("/ui")).text
        assert "no limits" in page and "concurrency" not in page
        for name, settings in (("default", {"concurrency": 5, "rate_per_s": 10, "burst": 20,
                                            "weight": 2, "paused": True}), ("idle", {})):
            put = await api.client.put(f"/queues/{name}", json=settings)
            assert put.status_code == 201, put.text
        page = (await api.client.get("/ui")).text
        row = _row(page, "default")
        for text in ("paused", "concurrency 5", "10/s (burst 20)", "weight 2"):
            assert text in row, row
        assert "no limits" in _row(page, "idle")  # a queue with settings and no jobs yet


async def test_a_database_that_is_down_is_a_503_page(db_url: str) -> None:
    """No database behind the pool: first the pool's bounded wait (503 busy, as the API
    answers), then, once the monitor knows it is down, 503 at once without touching the
    pool. The probe cannot reach a database that does not exist, so it stays down."""
    missing = db_url.rsplit("/", 1)[0] + "/no_such_database"
    async with running_api(missing) as api:
        busy = await api.client.get("/ui")
        assert busy.status_code == 503 and "Traceback" not in busy.text
        api.state.monitor.mark_down(psycopg.OperationalError("connection refused (test)"))
        for path in ("/ui", "/ui/failed", "/ui/jobs/1", "/ui/queues/default"):
            r = await api.client.get(path)
            assert r.status_code == 503, (path, r.text)
            assert r.headers["content-type"].startswith("text/html")
            assert r.headers["retry-after"] == "1"
            assert "Database unavailable" in r.text and "Traceback" not in r.text
            assert '<meta http-equiv="refresh"' in r.text  # the page tries again by itself


async def test_pages_escape_what_jobs_carry_and_send_their_headers(db_url: str) -> None:
    async with running_api(db_url) as api:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            job = await add_job(conn, name="<script>alert(1)</script>",
                                payload={"x": "</pre><b>bold</b>"})
        r = await api.client.get(f"/ui/jobs/{job}")
        assert r.status_code == 200
        assert "<script>alert" not in r.text and "&lt;script&gt;alert(1)" in r.text
        assert "<b>bold</b>" not in r.text
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["x-frame-options"] == "DENY"
        css = await api.client.get("/ui/static/ui.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
        for path, status in (("/ui/nope", 404), ("/ui/failed?cursor=abc", 400),
                             ("/ui/jobs?id=x", 404), (f"/ui/jobs/{2**63}", 404)):
            r = await api.client.get(path)
            assert r.status_code == status, (path, r.text)
            assert r.headers["content-type"].startswith("text/html")
        found = await api.client.get(f"/ui/jobs?id={job}")
        assert found.status_code == 303 and found.headers["location"] == f"/ui/jobs/{job}"


def _row(page: str, queue: str) -> str:
    start = page.index(f'<tr data-queue="{queue}">')
    return page[start:page.index("</tr>", start)]


async def test_a_page_gives_its_pooled_connection_back_as_it_found_it(db_url: str) -> None:
    """A page reads read-only, REPEATABLE READ and with bounded plans; none of that may
    stay on the connection for the API's next statement (a create would fail on it)."""
    async with running_api(db_url) as api:
        for path in ("/ui", "/ui/failed", "/ui/queues/default", "/ui/jobs/1"):
            assert (await api.client.get(path)).status_code in (200, 404)
        async with contextlib.AsyncExitStack() as stack:
            size = api.state.pool.size
            conns = [await stack.enter_async_context(api.state.connection())
                     for _ in range(size)]
            for conn in conns:
                assert (conn.read_only, conn.isolation_level) == (None, None)
                cur = await conn.execute("SELECT current_setting('enable_sort'), "
                                         "current_setting('transaction_read_only')")
                assert await cur.fetchone() == ("on", "off")
        created = await api.client.post("/jobs", json={"name": "after the pages"})
        assert created.status_code == 201, created.text
