"""Locust users for boundq (imports locust: only ever loaded by `python -m locust`).

Every user speaks the public HTTP API with Locust's fast client (geventhttpclient):

  CreateUser   single creates, POST /jobs, back to back
  BulkUser     bulk uploads, POST /jobs/bulk with FLOOD_BULK_SIZE jobs a request
  MixedUser    reads and writes: creates, a bulk now and then, GET /jobs/{id},
               GET /jobs?status=new, GET /stats
  ArrivalUser  open loop: creates at a fixed arrival rate (FLOOD_RATE per second over
               all users), whatever the response times; at most FLOOD_IN_FLIGHT requests
               of a user are open, and an arrival that finds them all busy is counted
               as `dropped` (client side), never queued

Every job id the API acknowledged (a 2xx naming it) is written to FLOOD_OUT_DIR
(acked-<pid>.txt) and every answer is tallied by endpoint, status code and response time
(tally-<pid>.json, see tally.py), once a second and when the test stops, by every Locust
process (one file each when Locust runs distributed): the flood runner checks from the
database that no acknowledged job was lost, and takes all its totals from the tallies.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from pathlib import Path
from typing import Any

import gevent
import gevent.pool
from locust import FastHttpUser, between, constant, events, task

from boundq.loadtests.tally import Tally

OUT_DIR = Path(os.environ["FLOOD_OUT_DIR"]) if os.environ.get("FLOOD_OUT_DIR") else None
JOB_MS = int(os.environ.get("FLOOD_JOB_MS", "0"))
BULK_SIZE = int(os.environ.get("FLOOD_BULK_SIZE", "100"))
RATE = float(os.environ.get("FLOOD_RATE", "0") or 0)
USERS = max(1, int(os.environ.get("FLOOD_USERS", "1")))
IN_FLIGHT = int(os.environ.get("FLOOD_IN_FLIGHT", "256"))
TOKEN = os.environ.get("API_TOKEN") or ""

HEADERS = {"Content-Type": "application/json"}
if TOKEN:
    HEADERS["Authorization"] = f"Bearer {TOKEN}"
_ID = re.compile(rb'"id":(\d+)')


def job_body(name: str = "flood") -> dict[str, Any]:
    if JOB_MS > 0:
        return {"name": name, "kind": "sleep", "payload": {"ms": JOB_MS}}
    return {"name": name, "kind": "noop"}


SINGLE = json.dumps(job_body())
BULK = json.dumps([job_body("flood-bulk") for _ in range(BULK_SIZE)])


class Ledger:
    """Acknowledged ids and the tally of answers of this process, flushed to FLOOD_OUT_DIR
    once a second (so a load generator that is killed loses at most a second of them) and
    when the test stops."""

    FLUSH_EVERY_S = 1.0

    def __init__(self) -> None:
        self.acked: list[int] = []
        self.tally = Tally()
        self.recent: list[int] = []  # for reads of existing jobs
        self.flushed_at = time.monotonic()

    def ack(self, ids: list[int]) -> None:
        self.acked.extend(ids)
        if ids:
            self.recent.append(ids[-1])
            if len(self.recent) > 5000:
                del self.recent[:2500]

    def maybe_flush(self) -> None:
        if time.monotonic() - self.flushed_at >= self.FLUSH_EVERY_S:
            self.flush()

    def flush(self) -> None:
        self.flushed_at = time.monotonic()
        if OUT_DIR is None:  # run by hand, not by the flood runner: nothing to hand over
            return
        if self.tally.first is None and not self.tally.not_sent and not self.acked:
            return  # a Locust master, or a process that never sent anything
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        pid = os.getpid()
        if self.acked:
            with open(OUT_DIR / f"acked-{pid}.txt", "a", encoding="ascii") as handle:
                handle.write("\n".join(map(str, self.acked)) + "\n")
            self.acked.clear()
        # the tally is rewritten whole; a rename, so the runner never reads half of it
        part = OUT_DIR / f".tally-{pid}.json.part"
        part.write_text(self.tally.to_json())
        part.replace(OUT_DIR / f"tally-{pid}.json")


LEDGER = Ledger()


@events.request.add_listener
def _tally(request_type: str, name: str = "", response_time: float = 0.0, response: Any = None,
           exception: Any = None, response_length: int = 0, **_: Any) -> None:
    if request_type == "DROP":  # arrivals never sent; response_length carries how many
        LEDGER.tally.not_sent[str(exception)] += response_length
    else:
        code = getattr(response, "status_code", 0) or 0
        LEDGER.tally.record(name, str(code) if code else "error", response_time or 0.0,
                            time.time())
    LEDGER.maybe_flush()


@events.test_stop.add_listener
def _on_stop(**_: Any) -> None:
    LEDGER.flush()


@events.quitting.add_listener
def _on_quit(**_: Any) -> None:
    LEDGER.flush()


class BoundqUser(FastHttpUser):
    abstract = True
    network_timeout = 30.0
    connection_timeout = 10.0

    def create(self) -> None:
        resp = self.client.post("/jobs", data=SINGLE, headers=HEADERS, name="POST /jobs")
        if resp.status_code in (200, 201):
            found = _ID.search(resp.content or b"")
            if found:
                LEDGER.ack([int(found.group(1))])

    def bulk(self) -> None:
        resp = self.client.post("/jobs/bulk", data=BULK, headers=HEADERS,
                                name=f"POST /jobs/bulk x{BULK_SIZE}")
        if resp.status_code == 201:
            LEDGER.ack([int(i) for i in json.loads(resp.content)["ids"]])

    def read_one(self) -> None:
        if LEDGER.recent:
            job_id = random.choice(LEDGER.recent)
            self.client.get(f"/jobs/{job_id}", headers=HEADERS, name="GET /jobs/{id}")

    def list_waiting(self) -> None:
        self.client.get("/jobs?status=new&limit=20", headers=HEADERS, name="GET /jobs?status=new")

    def stats(self) -> None:
        self.client.get("/stats", headers=HEADERS, name="GET /stats")


class CreateUser(BoundqUser):
    wait_time = constant(0)

    @task
    def create_one(self) -> None:
        self.create()


class BulkUser(BoundqUser):
    wait_time = between(0.05, 0.15)

    @task
    def create_many(self) -> None:
        self.bulk()


class MixedUser(BoundqUser):
    wait_time = between(0.0, 0.02)

    @task(12)
    def create_one(self) -> None:
        self.create()

    @task(1)
    def create_many(self) -> None:
        self.bulk()

    @task(4)
    def get_one(self) -> None:
        self.read_one()

    @task(1)
    def list_new(self) -> None:
        self.list_waiting()

    @task(1)
    def get_stats(self) -> None:
        self.stats()


class ArrivalUser(BoundqUser):
    """Open-loop arrivals: the schedule does not wait for responses."""

    wait_time = constant(0)
    concurrency = IN_FLIGHT  # the fast client's connection pool of this user

    def on_start(self) -> None:
        self.pool = gevent.pool.Pool(IN_FLIGHT)
        self.interval = USERS / RATE if RATE > 0 else 1.0
        self.next_at = time.monotonic() + random.random() * self.interval

    @task
    def arrive(self) -> None:
        self.next_at += self.interval
        delay = self.next_at - time.monotonic()
        if delay > 0:
            gevent.sleep(delay)
        elif delay < -1.0:  # this process fell behind its schedule (CPU): count, skip
            behind = int(-delay / self.interval)
            self.next_at += behind * self.interval
            self.skip("behind", behind)
        if RATE <= 0:
            return
        if self.pool.full():  # FLOOD_IN_FLIGHT requests of this user are open already
            self.skip("dropped", 1)
            return
        self.pool.spawn(self.create)

    def skip(self, why: str, n: int) -> None:
        """Arrivals that were due but not sent: `dropped` at the in-flight cap, or `behind`
        when the load generator itself could not keep its schedule."""
        events.request.fire(request_type="DROP", name=f"arrivals {why}", response_time=0,
                            response_length=n, exception=why, context={})

    def on_stop(self) -> None:
        self.pool.join(timeout=10)
