"""The flow-control scenarios of `boundq flood`: what the runner configures, the phase of
the steady queue alone, what it changes when the load ends, and the verdict's inputs.

  tenants      two tenants, each with its own token (API_TOKENS) and queue: tenant A
               (queue `a`) floods far past capacity with closed-loop users, tenant B
               (queue `b`) sends a modest steady load (--rate creates/s, open loop).
               Both queues get weight 1 (PUT /queues). Judged: B's pickup p99 and
               completions per second while A floods against B alone.
  ratelimited  the kind `noop` limited to --limit-rate jobs/s with --limit-burst (PUT
               /kinds/noop), flooded by closed-loop users into a queue of its own
               (`limited`, as docs/design.md advises for a backlog that runs ahead of its
               rate), beside unlimited `sleep` jobs at a steady --rate into `default`.
               Judged: every window of the limited kind's starts against burst + rate x w,
               and the unlimited jobs' pickup p99 and completions per second against
               theirs alone (they keep flowing). When the load
               stops the limit is lifted (PUT /kinds/noop with no limit) so the backlog
               drains in seconds; the window check covers every start before the lift.

Both run the steady user alone first (--alone-seconds), then the flood beside it, through
the same server, the same Locust files and the same verification (lost = 0). The workflow
scenario (loadtests/workflow_scenario.py) is a FlowPlan too, with its own steady user,
alone-phase settling and verdict.
"""

from __future__ import annotations

import json
import secrets
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import psycopg

from boundq.loadtests import flow_verdict as fv
from boundq.loadtests.flow_sql import FQ

FLOW_SCENARIOS = ("tenants", "ratelimited")
LIMITED_KIND = "noop"
DEFAULT_STEADY_RATE = 20.0  # creates/s of the steady queue when --rate is not given


class ScenarioVerdict(Protocol):
    """What the runner reads of a scenario's verdict."""

    def failures(self) -> list[str]: ...

    def lines(self) -> list[str]: ...

    def as_dict(self) -> dict[str, Any]: ...


@dataclass
class FlowPlan:
    scenario: str
    steady_rate: float
    limit_rate: float = 20.0
    limit_burst: int = 10
    threshold: float = 2.0
    flow_threshold: float = 0.5
    default_rate: float = DEFAULT_STEADY_RATE  # the steady user's rate without --rate
    steady_class: str = "SteadyQueueUser"  # the Locust user of the alone phase
    rate_unit: str = "creates/s"
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(16))
    tenant_tokens: dict[str, str] = field(default_factory=lambda: {
        "a": secrets.token_urlsafe(12), "b": secrets.token_urlsafe(12)})

    @property
    def flood_queue(self) -> str:
        return "a" if self.scenario == "tenants" else "limited"

    @property
    def steady_queue(self) -> str:
        return "b" if self.scenario == "tenants" else "default"

    def server_env(self) -> dict[str, str]:
        env = {"API_TOKEN": self.admin_token}
        if self.scenario == "tenants":
            env["API_TOKENS"] = json.dumps({tok: [q] for q, tok in self.tenant_tokens.items()})
        return env

    def locust_env(self) -> dict[str, str]:
        tenants = self.scenario == "tenants"
        return {
            "FLOOD_FLOOD_QUEUE": self.flood_queue, "FLOOD_STEADY_QUEUE": self.steady_queue,
            "FLOOD_FLOOD_TOKEN": self.tenant_tokens["a"] if tenants else self.admin_token,
            "FLOOD_STEADY_TOKEN": self.tenant_tokens["b"] if tenants else self.admin_token,
            "FLOOD_FLOOD_KIND": "" if tenants else LIMITED_KIND,
            "FLOOD_STEADY_KIND": "" if tenants else "sleep",
            "FLOOD_STEADY_RATE": str(self.steady_rate)}

    def describe(self) -> str:
        if self.scenario == "tenants":
            return (f"tenant A floods queue 'a' (its own token), tenant B sends "
                    f"{self.steady_rate:g} creates/s to queue 'b' (its own token); weights 1:1")
        return (f"kind '{LIMITED_KIND}' limited to {self.limit_rate:g}/s burst "
                f"{self.limit_burst}, flooded into queue 'limited'; unlimited jobs at "
                f"{self.steady_rate:g}/s into queue 'default'")

    # --- through the API, with the admin token --------------------------------------
    def _put(self, base: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        req = urllib.request.Request(f"{base}{path}", data=json.dumps(body).encode(),
                                     method="PUT", headers={
                                         "Content-Type": "application/json",
                                         "Authorization": f"Bearer {self.admin_token}"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            answer: dict[str, Any] = json.loads(resp.read())
        return answer

    def configure(self, base: str) -> list[str]:
        """The settings of the scenario, before any load; one line each."""
        if self.scenario == "tenants":
            return [f"PUT /queues/{q}: {self._put(base, f'/queues/{q}', {'weight': 1})}"
                    for q in ("a", "b")]
        body = {"rate_per_s": self.limit_rate, "burst": self.limit_burst}
        return [f"PUT /kinds/{LIMITED_KIND}: {self._put(base, f'/kinds/{LIMITED_KIND}', body)}"]

    def after_load(self, base: str) -> str | None:
        """Lift the kind's rate limit so the backlog drains (ratelimited)."""
        if self.scenario != "ratelimited":
            return None
        self._put(base, f"/kinds/{LIMITED_KIND}", {})
        return (f"the load stopped: kind '{LIMITED_KIND}' limit lifted so its backlog drains "
                "(the window check covers every start before the lift)")

    def settled(self, conn: psycopg.Connection[Any]) -> bool:
        """Whether the alone phase's work is over once its user stopped (it is here: each
        job is measured at its pickup)."""
        return True

    # --- the verdict ------------------------------------------------------------------
    def measure(self, db_url: str, alone: tuple[datetime, datetime] | None,
                load_start: datetime, load_end: datetime) -> ScenarioVerdict:
        verdict = fv.FlowVerdict(self.scenario, self.steady_queue, self.flood_queue,
                                 self.threshold, self.flow_threshold)
        with psycopg.connect(db_url, autocommit=True,
                             application_name="boundq-flood-verify") as conn:
            if alone is not None:
                verdict.alone = fv.pickup(conn, self.steady_queue,
                                         fv.alone_window(conn, self.steady_queue, *alone))
            window = fv.flood_window(conn, self.flood_queue, load_start, load_end)
            if window is None:
                verdict.notes.append(f"queue {self.flood_queue!r} got no job: no flood")
            else:
                verdict.flooded = fv.pickup(conn, self.steady_queue, window)
            if self.scenario == "ratelimited":
                lifted = fv.limit_lifted_at(conn, LIMITED_KIND) or load_end
                verdict.rate = fv.rate_bound(conn, LIMITED_KIND, self.limit_rate,
                                             self.limit_burst, lifted)
        return verdict


def served_for(conn: psycopg.Connection[Any], queue: str, since: datetime) -> float:
    """Seconds since the workers first started one of the queue's jobs (0 before)."""
    row = conn.execute(FQ.flow_served_for, {"queue": queue, "since": since}).fetchone()
    return float(row[0]) if row is not None and row[0] is not None else 0.0


def completions_per_second(db_url: str, origin: datetime, exclude: str | None
                           ) -> list[dict[str, Any]]:
    """Rows (second since `origin`, queue, finished) for the per-queue figure."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute(FQ.flow_completions_per_second,
                            {"origin": origin, "exclude": exclude}).fetchall()
    return [{"second": int(s), "queue": str(q), "finished": int(n)} for s, q, n in rows]
