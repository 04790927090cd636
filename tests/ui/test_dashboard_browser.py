"""The dashboard in a real headless Chromium: pages load, their numbers match the
database, and the buttons do what they say. Every wait is on a page element or a
database condition, never on a sleep."""

from __future__ import annotations

from collections import Counter

from playwright.async_api import Browser, expect

from tests.ui.conftest import dashboard, enqueue, worker

TOKEN = "ui-test-token-8c1f"


async def test_overview_counts_and_chart_match_the_database(browser: Browser, db_url: str) -> None:
    await enqueue(db_url, 3, kind="noop")
    failing = await enqueue(db_url, 2, kind="fail", payload={"times": 5}, max_attempts=1)
    running = await enqueue(db_url, 1, kind="sleep", payload={"ms": 60_000})
    await enqueue(db_url, 4, queue="mail")  # no worker serves "mail": they wait
    await enqueue(db_url, 1, queue="mail", delay=3600)  # scheduled
    async with dashboard(browser, db_url) as ui, worker(db_url, queues="default"):
        await ui.status_is(failing[-1], "failed")
        await ui.status_is(running[0], "processing")

        async def settled() -> bool:
            return await ui.scalar("SELECT count(*) FROM jobs WHERE queue = 'default' AND "
                                   "status IN ('success', 'failed')") == 5

        await ui.until(settled, "the default queue's jobs finished")
        counts = {(q, s): n for q, s, n in await ui.sql(
            "SELECT queue, status::text, count(*) FROM jobs GROUP BY 1, 2")}
        await ui.open("/ui")
        columns = {"new": "new", "scheduled": "scheduled", "running": "processing",
                   "succeeded": "success", "failed": "failed", "cancelled": "cancelled"}
        for queue in ("default", "mail"):
            row = ui.page.locator(f'#queues tr[data-queue="{queue}"]')
            for column, status in columns.items():
                expected = f"{counts.get((queue, status), 0):,}"
                await expect(row.locator(f'td[data-col="{column}"]')).to_have_text(expected)
        await expect(ui.page.locator('[data-total="failed"]')).to_have_text("2")
        await expect(ui.page.locator('#kinds tr[data-kind="sleep"] td[data-col="running"]')
                     ).to_have_text("1")
        await expect(ui.page.locator('#queues tr[data-queue="mail"] td[data-col="limits"]')
                     ).to_have_text("no limits")

        # The throughput chart has a point for each minute jobs finished in, with the
        # number the database counts for that minute.
        finished = Counter({minute: n for minute, n in await ui.sql(
            "SELECT to_char(date_trunc('minute', finished_at AT TIME ZONE 'UTC'), "
            "'YYYY-MM-DD\"T\"HH24:MI\"Z\"'), count(*) FROM jobs "
            "WHERE status IN ('success', 'failed') GROUP BY 1")})
        assert sum(finished.values()) == 5
        points = ui.page.locator("#throughput-chart g.minute")
        await expect(points).to_have_count(len(finished))
        for minute, n in finished.items():
            point = ui.page.locator(f'#throughput-chart g.minute[data-minute="{minute}"]')
            await expect(point).to_have_attribute("data-finished", str(n))
        await ui.page.screenshot(path=_shot("dashboard-overview.png"), full_page=True)


async def test_failed_job_retry_runs_it_again_and_its_page_shows_the_history(
        browser: Browser, db_url: str) -> None:
    (failing,) = await enqueue(db_url, kind="fail", payload={"times": 1}, max_attempts=1)
    (computed,) = await enqueue(db_url, kind="cpu", payload={"n": 10})
    async with dashboard(browser, db_url) as ui:
        async with worker(db_url):
            await ui.status_is(failing, "failed")
            await ui.status_is(computed, "success")
        await ui.open("/ui/failed")
        row = ui.page.locator(f'#failed-jobs tr[data-job="{failing}"]')
        await expect(row.locator("td.error")).to_contain_text("attempt 1 of 1 planned failures")
        await ui.page.screenshot(path=_shot("dashboard-failed.png"), full_page=True)
        await row.locator('button[data-action="retry"]').click()
        await expect(ui.page.locator("#flash")).to_have_text(
            f"job {failing} is waiting to run again")
        assert ui.page.url.endswith("/ui/failed")
        await ui.status_is(failing, "new")
        await expect(ui.page.locator(f'#failed-jobs tr[data-job="{failing}"]')).to_have_count(0)

        async with worker(db_url):  # a worker runs the retried job: attempt 2 succeeds
            await ui.status_is(failing, "success")
        await ui.open(f"/ui/jobs/{failing}")
        attempts = ui.page.locator("#attempts tbody tr")
        await expect(attempts).to_have_count(2)
        await expect(attempts.nth(0).locator('td[data-col="outcome"]')).to_have_text("error")
        await expect(attempts.nth(0)).to_contain_text("attempt 1 of 1 planned failures")
        await expect(attempts.nth(1).locator('td[data-col="outcome"]')).to_have_text("success")

        await ui.open(f"/ui/jobs/{computed}")
        await expect(ui.page.locator("#result")).to_have_text("285")  # sum of i*i, i < 10
        await expect(ui.page.locator("#attempts tbody tr")).to_have_count(1)
        await ui.page.screenshot(path=_shot("dashboard-job.png"), full_page=True)


async def test_cancel_a_running_and_a_waiting_job(browser: Browser, db_url: str) -> None:
    (sleeping,) = await enqueue(db_url, kind="sleep", payload={"ms": 60_000})
    (waiting,) = await enqueue(db_url, queue="mail")
    async with dashboard(browser, db_url) as ui, worker(db_url, queues="default"):
        await ui.status_is(sleeping, "processing")
        await ui.open("/ui/queues/default")
        button = ui.page.locator(f'#running tr[data-job="{sleeping}"] button[data-action="cancel"]')
        await button.click()
        await expect(ui.page.locator("#flash")).to_have_text(f"job {sleeping} cancelled")
        await ui.status_is(sleeping, "cancelled")
        assert ui.page.url.endswith("/ui/queues/default")

        await ui.open(f"/ui/jobs/{waiting}")
        await ui.page.locator('.actions button[data-action="cancel"]').click()
        await expect(ui.page.locator("#flash")).to_have_text(f"job {waiting} cancelled")
        await ui.status_is(waiting, "cancelled")
        # The page it came back to shows the new state, and no more Cancel button.
        await expect(ui.page.locator("h1 .status")).to_have_text("cancelled")
        await expect(ui.page.locator('.actions button[data-action="cancel"]')).to_have_count(0)


async def test_login_with_the_token_and_refusal_without_it(browser: Browser, db_url: str) -> None:
    from tests.conftest import fast_settings

    async with dashboard(browser, db_url, fast_settings(api_token=TOKEN)) as ui:
        await ui.open("/ui/failed")
        await expect(ui.page.locator('input[name="token"]')).to_be_visible()
        assert "/ui/login" in ui.page.url
        await ui.page.fill('input[name="token"]', "not-the-token")
        await ui.page.click('button[type="submit"]:has-text("Log in")')
        await expect(ui.page.locator("#login-error")).to_have_text("That token is not accepted.")
        cookies = {c["name"] for c in await ui.page.context.cookies()}
        assert "boundq_ui_session" not in cookies

        await ui.page.fill('input[name="token"]', TOKEN)
        await ui.page.click('button[type="submit"]:has-text("Log in")')
        await expect(ui.page.locator("h1")).to_have_text("Failed jobs")  # back where it was
        assert ui.page.url.endswith("/ui/failed")
        session = next(c for c in await ui.page.context.cookies()
                       if c["name"] == "boundq_ui_session")
        assert session["httpOnly"] and session["sameSite"] == "Strict"
        assert session["path"] == "/ui"

        await ui.page.click('button:has-text("Log out")')
        await expect(ui.page.locator('input[name="token"]')).to_be_visible()
        await ui.open("/ui")
        assert "/ui/login" in ui.page.url


def _shot(name: str) -> str:
    """Screenshots land under the test session's own folder unless BOUNDQ_UI_SHOTS names
    one (docs/img is refreshed with BOUNDQ_UI_SHOTS=docs/img)."""
    import os
    import tempfile

    folder = os.environ.get("BOUNDQ_UI_SHOTS") or tempfile.gettempdir()
    return os.path.join(folder, name)
