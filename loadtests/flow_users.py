"""Locust users of the flow-control scenarios (imports locust: only ever loaded by
`python -m locust`). Both speak POST /jobs with a token and a queue of their own, set by
the flood runner through the environment (loadtests/flow_scenarios.py):

  FloodQueueUser   closed-loop bulk uploads of FLOOD_BULK_SIZE jobs, back to back, into
                   FLOOD_FLOOD_QUEUE with FLOOD_FLOOD_TOKEN, of kind FLOOD_FLOOD_KIND (the
                   flooding tenant, or the rate-limited kind): far past any capacity
  SteadyQueueUser  one user, open loop: FLOOD_STEADY_RATE creates a second into
                   FLOOD_STEADY_QUEUE with FLOOD_STEADY_TOKEN, of kind FLOOD_STEADY_KIND
                   (the modest tenant, or the unlimited jobs), whatever the response times

A kind left empty is the run's job (`sleep` FLOOD_JOB_MS ms, `noop` for 0).

Requests are named by queue (`POST /jobs (b)`), so the tally tells the two apart; the
acknowledged ids and the tally go through the same Ledger as every other user.
"""

from __future__ import annotations

import json
import os
import random
import time
from typing import Any

import gevent
import gevent.pool
from locust import FastHttpUser, constant, events, task

from boundq.loadtests.users import _ID, BULK_SIZE, IN_FLIGHT, JOB_MS, LEDGER

FLOOD_QUEUE = os.environ.get("FLOOD_FLOOD_QUEUE", "default")
FLOOD_TOKEN = os.environ.get("FLOOD_FLOOD_TOKEN", "")
FLOOD_KIND = os.environ.get("FLOOD_FLOOD_KIND", "")
STEADY_QUEUE = os.environ.get("FLOOD_STEADY_QUEUE", "default")
STEADY_TOKEN = os.environ.get("FLOOD_STEADY_TOKEN", "")
STEADY_KIND = os.environ.get("FLOOD_STEADY_KIND", "")
STEADY_RATE = float(os.environ.get("FLOOD_STEADY_RATE", "0") or 0)


def _headers(token: str) -> dict[str, str]:
    out = {"Content-Type": "application/json"}
    if token:
        out["Authorization"] = f"Bearer {token}"
    return out


def _job(queue: str, kind: str = "") -> dict[str, Any]:
    if kind == "noop" or (not kind and JOB_MS <= 0):
        return {"name": f"flood-{queue}", "kind": "noop", "queue": queue}
    if kind and kind != "sleep":
        return {"name": f"flood-{queue}", "kind": kind, "queue": queue}
    return {"name": f"flood-{queue}", "kind": "sleep", "queue": queue,
            "payload": {"ms": max(JOB_MS, 0)}}


def _body(queue: str, kind: str = "") -> str:
    return json.dumps(_job(queue, kind))


class _QueueUser(FastHttpUser):
    abstract = True
    network_timeout = 30.0
    connection_timeout = 10.0
    queue = "default"
    body = ""
    headers: dict[str, str] = {}  # set per subclass, never mutated

    def create(self) -> None:
        resp = self.client.post("/jobs", data=self.body, headers=self.headers,
                                name=f"POST /jobs ({self.queue})")
        if resp.status_code in (200, 201):
            found = _ID.search(resp.content or b"")
            if found:
                LEDGER.ack([int(found.group(1))])


class FloodQueueUser(_QueueUser):
    wait_time = constant(0)
    queue = FLOOD_QUEUE
    body = json.dumps([_job(FLOOD_QUEUE, FLOOD_KIND) for _ in range(BULK_SIZE)])
    headers = _headers(FLOOD_TOKEN)

    @task
    def create_many(self) -> None:
        resp = self.client.post("/jobs/bulk", data=self.body, headers=self.headers,
                                name=f"POST /jobs/bulk x{BULK_SIZE} ({self.queue})")
        if resp.status_code == 201:
            LEDGER.ack([int(i) for i in json.loads(resp.content)["ids"]])


class SteadyQueueUser(_QueueUser):
    """Open loop at STEADY_RATE: the schedule does not wait for responses."""

    fixed_count = 1
    wait_time = constant(0)
    concurrency = IN_FLIGHT
    queue = STEADY_QUEUE
    body = _body(STEADY_QUEUE, STEADY_KIND)
    headers = _headers(STEADY_TOKEN)

    def on_start(self) -> None:
        self.pool = gevent.pool.Pool(IN_FLIGHT)
        self.interval = 1.0 / STEADY_RATE if STEADY_RATE > 0 else 1.0
        self.next_at = time.monotonic() + random.random() * self.interval

    @task
    def arrive(self) -> None:
        self.next_at += self.interval
        delay = self.next_at - time.monotonic()
        if delay > 0:
            gevent.sleep(delay)
        elif delay < -1.0:  # the load generator fell behind (CPU): count, skip
            behind = int(-delay / self.interval)
            self.next_at += behind * self.interval
            self._skip("behind", behind)
        if STEADY_RATE <= 0:
            return
        if self.pool.full():
            self._skip("dropped", 1)
            return
        self.pool.spawn(self.create)

    def _skip(self, why: str, n: int) -> None:
        events.request.fire(request_type="DROP", name=f"arrivals {why}", response_time=0,
                            response_length=n, exception=why, context={})

    def on_stop(self) -> None:
        self.pool.join(timeout=10)
