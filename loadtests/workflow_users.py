"""The Locust user of the workflow scenario (imports locust: only ever loaded by `python
-m locust`), set by the flood runner through the environment
(loadtests/workflow_scenario.py):

  WorkflowUser  one user: every 1/FLOOD_STEADY_RATE seconds, one fan-out/fan-in graph
                (a root, FLOOD_FAN_OUT children, a sink) as ONE atomic bulk upload into
                FLOOD_STEADY_QUEUE; an upload refused with 429 or 503 (admission is
                global: the flood may fill MAX_QUEUE_DEPTH) is sent again until it is
                accepted or its slot is over, so a graph's latency, measured from its
                root's created_at, starts when it was admitted

Every job is the run's job (`sleep` FLOOD_JOB_MS ms, `noop` for 0). The acknowledged ids
and the tally go through the same Ledger as every other user.
"""

from __future__ import annotations

import json
import os
import time

import gevent
from locust import FastHttpUser, constant_pacing, task

from boundq.loadtests.users import LEDGER, job_body
from boundq.loadtests.workflow_scenario import DEFAULT_FAN_OUT, WORKFLOW_QUEUE, graph_items

QUEUE = os.environ.get("FLOOD_STEADY_QUEUE") or WORKFLOW_QUEUE
TOKEN = os.environ.get("FLOOD_STEADY_TOKEN", "")
RATE = float(os.environ.get("FLOOD_STEADY_RATE", "0") or 0) or 1.0
FAN_OUT = int(os.environ.get("FLOOD_FAN_OUT", "0") or DEFAULT_FAN_OUT)
RETRY_AFTER_S = 0.1  # a refused upload is sent again this soon (within its slot)

_job = job_body()
_job.pop("name")
BODY = json.dumps(graph_items(QUEUE, FAN_OUT, _job))
HEADERS = {"Content-Type": "application/json"}
if TOKEN:
    HEADERS["Authorization"] = f"Bearer {TOKEN}"


class WorkflowUser(FastHttpUser):
    fixed_count = 1
    wait_time = constant_pacing(1.0 / RATE)
    network_timeout = 30.0
    connection_timeout = 10.0

    @task
    def submit_graph(self) -> None:
        slot_end = time.monotonic() + 1.0 / RATE
        while True:
            resp = self.client.post("/jobs/bulk?atomic=true", data=BODY, headers=HEADERS,
                                    name=f"POST /jobs/bulk?atomic=true (graph 1-{FAN_OUT}-1)")
            if resp.status_code == 201:
                LEDGER.ack([int(i) for i in json.loads(resp.content)["ids"]])
                return
            if resp.status_code not in (429, 503) or time.monotonic() + RETRY_AFTER_S > slot_end:
                return
            gevent.sleep(RETRY_AFTER_S)
