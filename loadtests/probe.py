"""The door probe: what one newcomer's creates meet while the flood runs.

Locust's own percentiles describe the flood as its users lived it, and on a small machine
those users are part of the problem: 50 gevent users in one process share a core with
everything else, so a reply that left the server in a millisecond can wait many more in
the load generator before it is timed. The probe is the other view: a thread of the
runner (which otherwise sleeps through the load) sends `POST /jobs` on one keep-alive
connection at a fixed, low rate (20/s by default: a few percent of the capacity bound)
and times each answer with a monotonic clock around the socket calls alone. Its 429 and
201 percentiles are the latency of the door itself under the flood, the figures the
targets speak of: a refusal answered in p99 <= 5 ms, an accepted create in p99 < 50 ms.

The probe's 201s are acknowledged jobs like any other (acked-probe.txt, checked by the
verification); its jobs are of the flood's kind, in the default queue.
"""

from __future__ import annotations

import http.client
import json
import math
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_RATE = 20.0  # creates/s
PROBE_NAME = "door-probe"


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..1) of a non-empty list, as the tally's (ranks
    alike) but on the exact values: the probe's answers are a few milliseconds, where the
    tally's one-millisecond buckets would hide the target."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q * len(ordered))))
    return ordered[rank - 1]


@dataclass
class ProbeResult:
    rate_per_s: float
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)  # by status
    errors: int = 0  # transport errors (reconnected)
    missed_ticks: int = 0  # ticks skipped because an answer took longer than the period

    def stats(self, status: str) -> dict[str, float] | None:
        values = self.latencies_ms.get(status)
        if not values:
            return None
        return {"n": len(values), "p50_ms": round(percentile(values, 0.5), 2),
                "p99_ms": round(percentile(values, 0.99), 2),
                "max_ms": round(max(values), 2)}

    def as_dict(self) -> dict[str, Any]:
        return {"rate_per_s": self.rate_per_s, "errors": self.errors,
                "missed_ticks": self.missed_ticks,
                "by_status": {code: self.stats(code) for code in sorted(self.latencies_ms)}}

    def line(self, refusal_target_ms: float, accepted_target_ms: float) -> str:
        parts = []
        for code, target in (("429", refusal_target_ms), ("201", accepted_target_ms)):
            s = self.stats(code)
            if s is None:
                parts.append(f"{code}: none")
                continue
            judged = f" (target {target:g} ms)" if target > 0 else ""
            parts.append(f"{code} p50 {s['p50_ms']:.1f} ms p99 {s['p99_ms']:.1f} ms"
                         f"{judged}, {s['n']:,.0f} answers")
        other = {c: len(v) for c, v in self.latencies_ms.items() if c not in ("429", "201")}
        extra = "".join(f"; {c}: {n:,}" for c, n in sorted(other.items()))
        return (f"door probe (one client, {self.rate_per_s:g} creates/s, timed at the socket): "
                + "; ".join(parts) + extra
                + (f"; {self.errors} transport errors" if self.errors else ""))

    def failures(self, refusal_target_ms: float, accepted_target_ms: float) -> list[str]:
        out = []
        for code, target, what in (("429", refusal_target_ms, "refusals"),
                                   ("201", accepted_target_ms, "accepted creates")):
            s = self.stats(code)
            if target > 0 and s is not None and s["p99_ms"] > target:
                out.append(f"the door probe's {what} ({code}) took p99 {s['p99_ms']:.1f} ms, "
                           f"over {target:g} ms")
        return out


class DoorProbe:
    """Start it when the load starts and stop it when the load stops."""

    def __init__(self, base_url: str, out_dir: Path, payload: dict[str, Any], kind: str,
                 rate: float = DEFAULT_RATE, token: str | None = None) -> None:
        if rate <= 0:
            raise ValueError("the probe's rate must be positive")
        url = urlsplit(base_url)
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.out_dir = out_dir
        self.body = json.dumps({"name": PROBE_NAME, "kind": kind, "payload": payload}).encode()
        self.headers = {"Content-Type": "application/json"}
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.result = ProbeResult(rate)
        self.acked: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="door-probe", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> ProbeResult:
        self._stop.set()
        self._thread.join(timeout=30)
        if self.acked:
            (self.out_dir / "acked-probe.txt").write_text(
                "".join(f"{job_id}\n" for job_id in self.acked), "ascii")
        return self.result

    def _run(self) -> None:
        period = 1.0 / self.result.rate_per_s
        conn: http.client.HTTPConnection | None = None
        due = time.monotonic()
        while not self._stop.is_set():
            if conn is None:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
            try:
                self._one(conn)
            except (OSError, http.client.HTTPException):
                self.result.errors += 1
                conn.close()
                conn = None
            due += period
            now = time.monotonic()
            if now > due:  # an answer took longer than a period: skip, do not bunch up
                skipped = int((now - due) / period) + 1
                self.result.missed_ticks += skipped
                due += skipped * period
            self._stop.wait(max(0.0, due - time.monotonic()))
        if conn is not None:
            conn.close()

    def _one(self, conn: http.client.HTTPConnection) -> None:
        started = time.perf_counter()
        conn.request("POST", "/jobs", body=self.body, headers=self.headers)
        response = conn.getresponse()
        data = response.read()
        elapsed_ms = (time.perf_counter() - started) * 1000
        code = str(response.status)
        self.result.latencies_ms.setdefault(code, []).append(elapsed_ms)
        if response.status == 201:
            self.acked.append(int(json.loads(data)["id"]))
