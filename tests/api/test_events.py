"""GET /events over real HTTP: every change of a job, filtered and scoped; a resume with
Last-Event-ID sees each change exactly once or is told it missed some; a client that
stops reading is dropped with its buffer bounded; a transaction that commits after a
later one is not skipped; bad filters and ids are 422s naming the field."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import psycopg
import pytest

from boundq.core import queue
from boundq.core.db import conninfo
from boundq.core.events_log import events_enabled, switch_events
from boundq.core.housekeeping import EventLogTrimmer
from boundq.core.lanes import Lane
from boundq.core.loops import LoopSettings
from boundq.core.queries import Q
from boundq.server.events import EventReader, EventSettings, parse_position
from tests.api.conftest import TEST_OPTIONS, Api, running_api
from tests.conftest import fast_settings
from tests.helpers import as_prepared, placeholders, plan_nodes, wait_until

OWNER = "events-test"


@pytest.fixture(autouse=True)
async def events_on(db_url: str) -> None:
    """The log is off after migrating (`boundq events on` turns it on)."""
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        assert await switch_events(conn, True)
GUARD_S = 30  # guards a test against hanging; never what a test measures


@dataclasses.dataclass
class Event:
    id: str | None
    event: str
    data: dict[str, Any]


class Stream:
    """An SSE client: parses events off a streamed response into a queue."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.status = 0
        self.opened = asyncio.Event()

    async def run(self, client: httpx.AsyncClient, params: dict[str, str],
                  headers: dict[str, str]) -> None:
        async with client.stream("GET", "/events", params=params, headers=headers,
                                 timeout=httpx.Timeout(10, read=None)) as response:
            self.status = response.status_code
            self.opened.set()
            if response.status_code != 200:
                return
            fields: dict[str, str] = {}
            async for line in response.aiter_lines():
                if line == "":
                    if "data" in fields:
                        await self.events.put(Event(fields.get("id"),
                                                    fields.get("event", "message"),
                                                    json.loads(fields["data"])))
                    fields = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")

    async def next(self) -> Event:
        return await asyncio.wait_for(self.events.get(), GUARD_S)

    async def until_job(self, job_id: int, status: str) -> list[Event]:
        """Every event up to and including the one that says job_id reached status."""
        seen: list[Event] = []
        while True:
            event = await self.next()
            seen.append(event)
            if event.event == "message" and (event.data["id"], event.data["status"]) == (
                    job_id, status):
                return seen


@contextlib.asynccontextmanager
async def streaming(api: Api, params: dict[str, str] | None = None,
                    headers: dict[str, str] | None = None) -> AsyncIterator[Stream]:
    """An open stream, registered with the API's hub before the test goes on."""
    stream = Stream()
    api.state.events.subscribed.clear()
    task = asyncio.create_task(stream.run(api.client, params or {}, headers or {}))
    try:
        await asyncio.wait_for(stream.opened.wait(), GUARD_S)
        assert stream.status == 200, stream.status
        await asyncio.wait_for(api.state.events.subscribed.wait(), GUARD_S)
        yield stream
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _create(api: Api, headers: dict[str, str] | None = None, **fields: Any) -> int:
    body = {"name": "evented", "kind": "noop", **fields}
    r = await api.client.post("/jobs", json=body, headers=headers or {})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


async def _cancel(api: Api, job_id: int, headers: dict[str, str] | None = None) -> None:
    r = await api.client.post(f"/jobs/{job_id}/cancel", headers=headers or {})
    assert r.status_code == 200, r.text


async def _db(api: Api) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(conninfo(api.db_url, "worker"),
                                                 autocommit=True)


async def _logged(api: Api, job_ids: list[int]) -> list[tuple[str, int, str, int]]:
    """What the log holds for these jobs, in delivery order: (id, job, status, attempt)."""
    rows = await api.sql("SELECT txid::text || '-' || seq, job_id, status::text, attempt "
                         "FROM job_events WHERE job_id = ANY(%s) ORDER BY txid, seq",
                         job_ids)
    return [(str(r[0]), int(r[1]), str(r[2]), int(r[3])) for r in rows]


def _body(event: Event) -> tuple[str | None, int, str, int]:
    return event.id, event.data["id"], event.data["status"], event.data["attempt"]


async def test_a_job_s_changes_stream_in_order_with_its_result(api: Api) -> None:
    async with streaming(api) as stream:
        job_id = await _create(api)
        async with await _db(api) as worker:
            [claimed] = await queue.claim(worker, OWNER, 1, 30)
            # A heartbeat changes neither status nor attempt: no event.
            await queue.heartbeat(worker, OWNER, [(job_id, claimed.attempt)], 30)
            await queue.complete_batch(worker, OWNER, [(job_id, claimed.attempt)],
                                       {job_id: '{"answer": 42}'})
        seen = await stream.until_job(job_id, "success")
    assert [(e.data["status"], e.data["attempt"]) for e in seen] == [
        ("new", 0), ("processing", 1), ("success", 1)]
    assert seen[-1].data == {"id": job_id, "queue": "default", "kind": "noop",
                             "status": "success", "attempt": 1, "result": {"answer": 42}}
    assert all("result" not in e.data for e in seen[:-1])
    positions = [parse_position(str(e.id)) for e in seen]
    assert positions == sorted(positions) and len(set(positions)) == 3
    assert [_body(e) for e in seen] == await _logged(api, [job_id])


async def test_filters_pass_only_matching_jobs(api: Api) -> None:
    other_queue = await _create(api, queue="b", kind="noop")
    other_kind = await _create(api, queue="a", kind="echo", payload={"value": 1})
    async with streaming(api, {"queue": "a", "kind": "noop"}) as by_queue_kind, \
            streaming(api, {"ids": f"{other_kind},999999"}) as by_ids:
        skipped = [await _create(api, queue="b"),
                   await _create(api, queue="a", kind="echo", payload={"value": 2})]
        await _cancel(api, other_queue)
        await _cancel(api, other_kind)
        marker = await _create(api, queue="a", kind="noop")
        seen = await by_queue_kind.until_job(marker, "new")
        assert [(e.data["id"], e.data["queue"], e.data["kind"]) for e in seen] == [
            (marker, "a", "noop")]
        seen_ids = await by_ids.until_job(other_kind, "cancelled")
        assert [e.data["id"] for e in seen_ids] == [other_kind]
    assert skipped  # created while both streams were open, matched by neither


async def test_a_scoped_token_never_sees_another_queue_s_job(db_url: str) -> None:
    settings = fast_settings(API_TOKENS='{"tok-a": ["a"], "tok-b": ["b"]}')
    a = {"Authorization": "Bearer tok-a"}
    b = {"Authorization": "Bearer tok-b"}
    async with running_api(db_url, settings) as api:
        r = await api.client.get("/events")
        assert r.status_code == 401
        r = await api.client.get("/events", params={"queue": "b"}, headers=a)
        assert (r.status_code, r.json()["error"]["field"]) == (404, "queue")
        theirs = await _create(api, b, queue="b")
        async with streaming(api, headers=a) as everything_of_a, \
                streaming(api, {"ids": str(theirs)}, headers=a) as their_id:
            await _cancel(api, theirs, b)
            mine = await _create(api, a, queue="a")
            seen = await everything_of_a.until_job(mine, "new")
            assert [e.data["id"] for e in seen] == [mine]
            # Their job's id asked for by name: nothing, and no error that confirms it.
            api.state.events.reader.read_round.clear()
            await asyncio.wait_for(api.state.events.reader.read_round.wait(), GUARD_S)
            assert their_id.events.empty()


async def test_a_resume_sees_every_change_exactly_once(api: Api) -> None:
    async with streaming(api) as first:
        ids = [await _create(api) for _ in range(3)]
        await _cancel(api, ids[0])
        seen = await first.until_job(ids[0], "cancelled")
    last_id = str(seen[-1].id)
    # Changes while nobody listens, then more while the second stream catches up.
    await _cancel(api, ids[1])
    more = [await _create(api) for _ in range(3)]
    writer = asyncio.create_task(_cancel_all(api, [ids[2], *more]))
    async with streaming(api, headers={"Last-Event-ID": last_id}) as second:
        await writer
        marker = await _create(api)
        resumed = await second.until_job(marker, "new")
    every = await _logged(api, [*ids, *more, marker])
    delivered = [_body(e) for e in [*seen, *resumed]]
    assert delivered == every  # each change once, in order: none missed, none twice
    assert all(e.event == "message" for e in resumed)


async def test_a_resume_ahead_of_this_process_s_reader_gets_nothing_twice(
        db_url: str) -> None:
    """Two API processes: a client resumes on the one whose reader is behind its
    Last-Event-ID; what that reader reads up to it is not sent again."""
    slow = dataclasses.replace(TEST_OPTIONS, events=EventSettings(poll_s=60))
    # The first stream on `behind` keeps its slow reader at its start position.
    async with running_api(db_url, options=slow) as behind, running_api(db_url) as ahead, \
            streaming(behind):
        reader, listener = behind.state.events.reader, behind.state.events.listener
        assert listener is not None
        await asyncio.wait_for(reader.ready.wait(), GUARD_S)
        # Listening, the listener woke the reader once; once the reader sleeps with no
        # wake-up pending, only a NOTIFY (or the 60 s poll) wakes it.
        await asyncio.wait_for(listener.listening.wait(), GUARD_S)
        await wait_until(_idle(reader), GUARD_S, what="the slow reader's idle sleep")
        async with streaming(ahead) as fresh:
            rounds = reader.rounds
            job_id = await _create(ahead)
            # The create's NOTIFY wakes the slow reader, and nothing else does until
            # `marker`: once it has read, the cancel stays ahead of it.
            await _rounds_past(reader, rounds)
            await _cancel(ahead, job_id)
            seen = await fresh.until_job(job_id, "cancelled")
        assert behind.state.events.reader.position is not None
        assert behind.state.events.reader.position < parse_position(str(seen[-1].id))
        async with streaming(behind, headers={"Last-Event-ID": str(seen[-1].id)}) as late:
            marker = await _create(behind)  # its NOTIFY wakes the slow reader
            got = await late.until_job(marker, "new")
    assert [(e.data["id"], e.data["status"]) for e in got] == [(marker, "new")]


def _idle(reader: EventReader) -> Callable[[], Awaitable[bool]]:
    async def idle() -> bool:
        return reader.idle and not reader.wake.is_set()
    return idle


async def _rounds_past(reader: EventReader, rounds: int) -> None:
    """Until the reader has read the log more than `rounds` times."""
    while True:
        reader.read_round.clear()
        if reader.rounds > rounds:
            return
        await asyncio.wait_for(reader.read_round.wait(), GUARD_S)


async def _cancel_all(api: Api, job_ids: list[int]) -> None:
    for job_id in job_ids:
        await _cancel(api, job_id)


async def test_a_resume_older_than_retention_is_told_it_missed_changes(api: Api) -> None:
    job_id = await _create(api)
    async with streaming(api) as first:
        await _cancel(api, job_id)
        seen = await first.until_job(job_id, "cancelled")
    old_id = str(seen[-1].id)
    later = await _create(api)
    trimmer = EventLogTrimmer(LoopSettings(5.0), Lane(api.db_url, "maintenance"),
                              keep_s=1e-6)
    assert await trimmer.run_once() >= 2  # everything so far is "older" than 1 µs
    [(horizon,)] = await api.sql("SELECT txid::text || '-' || seq FROM job_events_horizon")
    marker = await _create(api)
    async with streaming(api, headers={"Last-Event-ID": old_id}) as resumed:
        missed = await resumed.next()
        assert (missed.event, missed.id) == ("missed", horizon)
        assert missed.data == {"after": old_id, "resumed_from": horizon}
        nxt = await resumed.until_job(marker, "new")
    assert [e.data["id"] for e in nxt] == [marker]  # `later`'s insert was deleted
    assert later not in [e.data["id"] for e in nxt]


async def test_a_transaction_that_commits_last_is_not_skipped(api: Api) -> None:
    """The lower seq commits after the higher one: the reader waits for it."""
    reader = api.state.events.reader
    async with streaming(api) as stream, await _db(api) as early, await _db(api) as late:
        async with early.transaction():
            [(first,)] = await (await early.execute(
                "INSERT INTO jobs (name) VALUES ('early') RETURNING id")).fetchall()
            [(second,)] = await (await late.execute(
                "INSERT INTO jobs (name) VALUES ('late') RETURNING id")).fetchall()
            [(seq_first,)] = await api.sql("SELECT count(*) FROM job_events WHERE job_id = %s",
                                           first)
            assert seq_first == 0  # not committed yet
            for _ in range(2):  # two full reads of the log while `early` is open
                reader.read_round.clear()
                await asyncio.wait_for(reader.read_round.wait(), GUARD_S)
            assert stream.events.empty()  # `late` committed, but waits behind `early`
        got = [await stream.next(), await stream.next()]
    assert [e.data["id"] for e in got] == [first, second]
    assert [_body(e) for e in got] == await _logged(api, [first, second])


async def test_a_client_that_stops_reading_is_dropped_and_its_buffer_bounded(
        db_url: str) -> None:
    buffer = 50
    options = dataclasses.replace(TEST_OPTIONS, events=EventSettings(
        poll_s=0.05, client_buffer=buffer, batch=500, send_timeout_s=2))
    async with running_api(db_url, options=options) as api:
        hub = api.state.events
        hub.subscribed.clear()
        stalled = socket.create_connection(("127.0.0.1", api.port))
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            stalled.sendall(b"GET /events HTTP/1.1\r\nHost: test\r\n\r\n")
            await asyncio.wait_for(hub.subscribed.wait(), GUARD_S)
            [slow] = list(hub.clients)
            async with streaming(api, {"queue": "elsewhere"}) as reading:
                for _ in range(100):  # bounded: each round adds 2000 changes
                    if hub.dropped.is_set():
                        break
                    await api.sql("INSERT INTO jobs (name, payload) SELECT 'flood', "
                                  "jsonb_build_object('pad', repeat('x', 200)) "
                                  "FROM generate_series(1, 2000)")
                    reader_round = hub.reader.read_round
                    reader_round.clear()
                    await asyncio.wait_for(reader_round.wait(), GUARD_S)
                assert hub.dropped.is_set()
                assert slow.dropped and slow not in hub.clients
                assert slow.most_queued <= buffer and slow.queue.qsize() <= 1
                assert api.state.metrics.events_dropped == 1
                # The reading client is still served.
                marker = await _create(api, queue="elsewhere")
                assert [e.data["id"] for e in await reading.until_job(marker, "new")] == [
                    marker]
            api.state.flush_metrics()
            r = await api.client.get("/metrics")
            assert "boundq_api_events_dropped_total 1.0" in r.text
        finally:
            stalled.close()


async def test_streams_are_bounded_per_process(db_url: str) -> None:
    options = dataclasses.replace(TEST_OPTIONS, events=EventSettings(max_clients=1))
    async with running_api(db_url, options=options) as api, streaming(api):
        r = await api.client.get("/events")
        assert r.status_code == 429 and "Retry-After" in r.headers


@pytest.mark.parametrize(("params", "headers", "field"), [
    ({"queue": "no spaces"}, {}, "queue"),
    ({"kind": ""}, {}, "kind"),
    ({"ids": "1,x"}, {}, "ids"),
    ({"ids": ""}, {}, "ids"),
    ({"ids": "0"}, {}, "ids"),
    ({"ids": "9" * 20}, {}, "ids"),
    ({"ids": ",".join(["1"] * 1001)}, {}, "ids"),
    ({}, {"Last-Event-ID": "12"}, "Last-Event-ID"),
    ({}, {"Last-Event-ID": "a-b"}, "Last-Event-ID"),
    ({}, {"Last-Event-ID": "1-2-3"}, "Last-Event-ID"),
    ({}, {"Last-Event-ID": "99999999999999999999-1"}, "Last-Event-ID"),
    ({}, {"Last-Event-ID": "1-99999999999999999999"}, "Last-Event-ID"),
])
async def test_bad_input_is_a_422_naming_the_field(api: Api, params: dict[str, str],
                                                   headers: dict[str, str],
                                                   field: str) -> None:
    r = await api.client.get("/events", params=params, headers=headers)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field
    assert not api.state.events.clients


async def test_the_reader_s_query_walks_the_log_index(conn: psycopg.AsyncConnection[Any]
                                                      ) -> None:
    await conn.execute("INSERT INTO jobs (name) SELECT 'j' FROM generate_series(1, 20000)")
    await conn.execute("ANALYZE job_events")
    values = {"txid": "'0'", "seq": "0", "upto_txid": "NULL", "upto_seq": "NULL",
              "limit": "100", "queues": "NULL", "kind": "NULL", "ids": "NULL"}
    args = ", ".join(values[name] for name in placeholders(Q.job_events_page))
    await conn.execute(f"PREPARE page AS {as_prepared(Q.job_events_page)}".encode())
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    cur = await conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE page({args})".encode())
    [(plan,)] = await cur.fetchall()
    nodes = list(plan_nodes(plan[0]["Plan"]))
    scans = [n for n in nodes if n.get("Relation Name") == "job_events"]
    assert scans and all(n["Node Type"] == "Index Scan" for n in scans), plan
    assert {n["Index Name"] for n in scans} == {"job_events_pkey"}
    assert sum(n["Actual Rows"] * n["Actual Loops"] for n in scans) == 100


async def test_off_the_stream_is_a_409_and_back_on_every_stream_hears_it_missed(api: Api
                                                                                ) -> None:
    async with streaming(api) as stream:
        before = await _create(api)
        [first] = await stream.until_job(before, "new")
        async with await _db(api) as admin:
            assert not await switch_events(admin, False)
            assert not await events_enabled(admin)
            r = await api.client.get("/events")
            assert r.status_code == 409 and r.json()["error"]["code"] == "events_off", r.text
            unseen = await _create(api)  # while off: logged nowhere
            assert await _logged(api, [unseen]) == []
            assert await switch_events(admin, True)
            assert await switch_events(admin, True)  # on again: nothing changes
            assert await events_enabled(admin)
        missed = await stream.next()
        assert missed.event == "missed", missed
        after = await _create(api)
        seen = await stream.until_job(after, "new")
        assert [e.data["id"] for e in seen] == [after]
    # A Last-Event-ID from before the log went off is told it missed changes.
    async with streaming(api, headers={"Last-Event-ID": str(first.id)}) as resumed:
        told = await resumed.next()
        assert told.event == "missed" and told.data["after"] == first.id, told
        assert [e.data["id"] for e in await resumed.until_job(after, "new")] == [after]


async def test_boundq_events_command(db_url: str) -> None:
    import os
    import sys

    env = {**os.environ, "DATABASE_URL": db_url}

    async def boundq(*args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "boundq", "events", *args, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        out, _ = await proc.communicate()
        assert proc.returncode == 0, out.decode()
        return out.decode().strip()

    assert await boundq("status") == "the change log (GET /events) is on"  # events_on
    assert await boundq("off") == "the change log (GET /events) is off"
    assert await boundq("status") == "the change log (GET /events) is off"
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await conn.execute("INSERT INTO jobs (name) VALUES ('quiet')")
        assert (await (await conn.execute("SELECT count(*) FROM job_events")).fetchone()) == (0,)
    assert await boundq("on") == "the change log (GET /events) is on"
