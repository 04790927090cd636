"""The Locust users' own tally: every answer counted once, by endpoint and status code, with
its response time, in one file per load-generator process (tally-<pid>.json).

The flood's totals all come from here: the request count, the answers by status, each
endpoint's count and percentiles, and the load's duration (first to last answer). One
source, so the total always equals the sum of its parts. (Locust's CSV is written on a
timer and lagged its final figures by a few hundred requests; it stays in the run folder
for its time series.)

Users write with `Tally.record` / `Tally.to_json` (users.py, inside Locust); the runner
reads and merges with `read_tallies`. Nothing here imports Locust.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NOT_SENT = ("dropped", "behind")  # open-loop arrivals the client did not send
TALLY_GLOB = "tally-*.json"


def bucket_ms(ms: float) -> int:
    """Response times kept at two significant digits above 100 ms (Locust's rounding):
    a histogram of a few hundred buckets however long the run."""
    if ms < 100:
        return round(ms)
    if ms < 1000:
        return int(round(ms, -1))
    if ms < 10000:
        return int(round(ms, -2))
    return int(round(ms, -3))


def percentile(hist: Counter[int], q: float) -> float:
    """The smallest bucket at or above fraction q of the answers (0 when empty)."""
    total = sum(hist.values())
    if not total:
        return 0.0
    rank = max(1, math.ceil(q * total))
    seen = 0
    for ms in sorted(hist):
        seen += hist[ms]
        if seen >= rank:
            return float(ms)
    return float(max(hist))


@dataclass
class Tally:
    # endpoint name -> status code ("201", "429", "error") -> response-time histogram
    answers: dict[str, dict[str, Counter[int]]] = field(default_factory=dict)
    not_sent: Counter[str] = field(default_factory=Counter)
    first: float | None = None  # wall clock of the first and last answer
    last: float | None = None
    processes: int = 0

    def record(self, name: str, status: str, ms: float, now: float) -> None:
        self.answers.setdefault(name, {}).setdefault(status, Counter())[bucket_ms(ms)] += 1
        self.first = now if self.first is None else min(self.first, now)
        self.last = now if self.last is None else max(self.last, now)

    def to_json(self) -> str:
        return json.dumps({
            "answers": {name: {code: {str(k): v for k, v in hist.items()}
                               for code, hist in codes.items()}
                        for name, codes in self.answers.items()},
            "not_sent": dict(self.not_sent), "first": self.first, "last": self.last})

    def merge(self, data: dict[str, Any]) -> None:
        for name, codes in data.get("answers", {}).items():
            for code, hist in codes.items():
                mine = self.answers.setdefault(name, {}).setdefault(code, Counter())
                mine.update({int(k): int(v) for k, v in hist.items()})
        self.not_sent.update({k: int(v) for k, v in data.get("not_sent", {}).items()})
        for edge, pick in (("first", min), ("last", max)):
            value = data.get(edge)
            if value is not None:
                mine_edge = getattr(self, edge)
                setattr(self, edge, value if mine_edge is None else pick(mine_edge, value))
        self.processes += 1

    # --- what the summary prints ------------------------------------------------------
    @property
    def seconds(self) -> float:
        return (self.last - self.first) if self.first is not None and self.last is not None \
            else 0.0

    def statuses(self) -> dict[str, int]:
        """Answers by status code over every endpoint, plus the arrivals not sent."""
        out: Counter[str] = Counter()
        for codes in self.answers.values():
            for code, hist in codes.items():
                out[code] += sum(hist.values())
        out.update(self.not_sent)
        return dict(sorted(out.items()))

    def requests(self) -> int:
        return sum(sum(h.values()) for codes in self.answers.values() for h in codes.values())

    def count(self, name: str, code: str | None = None) -> int:
        codes = self.answers.get(name, {})
        return sum(sum(h.values()) for c, h in codes.items() if code is None or c == code)

    def histogram(self, name: str, code: str | None = None) -> Counter[int]:
        out: Counter[int] = Counter()
        for c, hist in self.answers.get(name, {}).items():
            if code is None or c == code:
                out.update(hist)
        return out

    def endpoint(self, name: str, code: str | None = None) -> dict[str, Any]:
        hist = self.histogram(name, code)
        n = sum(hist.values())
        secs = self.seconds
        return {"requests": n, "rps": round(n / secs, 1) if secs else 0.0,
                "p50_ms": percentile(hist, 0.50), "p95_ms": percentile(hist, 0.95),
                "p99_ms": percentile(hist, 0.99), "max_ms": float(max(hist)) if hist else 0.0}


def read_tallies(out_dir: Path) -> Tally:
    tally = Tally()
    for path in sorted(out_dir.glob(TALLY_GLOB)):
        tally.merge(json.loads(path.read_text()))
    return tally
