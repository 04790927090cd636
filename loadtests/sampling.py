"""Once a second during a flood: the server's /metrics, its memory, its connections.

The server is watched from outside, as an operator would: GET /metrics (Prometheus
text: the API's answers by status), the process tree's resident memory (psutil),
pg_stat_activity for the connections to the flood's database, and the jobs table for
the queue and what was processed. Jobs processed come from the database, never from
/metrics: the workers need not run in the process that serves /metrics. Each sample is
one row of server_samples.csv and one progress line.
"""

from __future__ import annotations

import re
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

import psutil
import psycopg

_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$')
_STATUS = re.compile(r'status="(\d+)"')


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text -> {name or name{labels}: value}; comments skipped."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        match = _LINE.match(line.strip())
        if match:
            name, labels, value = match.groups()
            try:
                out[name + (labels or "")] = float(value)
            except ValueError:
                continue
    return out


def status_counts(metrics: dict[str, float]) -> dict[str, int]:
    """boundq_http_requests_total summed by status code."""
    counts: dict[str, int] = {}
    for key, value in metrics.items():
        if key.startswith("boundq_http_requests_total{"):
            found = _STATUS.search(key)
            if found:
                counts[found.group(1)] = counts.get(found.group(1), 0) + int(value)
    return counts


def fetch_metrics(base: str, timeout: float = 2.0, token: str | None = None) -> str | None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        req = urllib.request.Request(f"{base}/metrics", headers=headers)
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return str(resp.read().decode())
    except (urllib.error.URLError, OSError, TimeoutError):
        return None


@dataclass
class Sample:
    t: float
    phase: str
    rss_mb: float
    connections: int
    waiting: int
    processing: int
    succeeded: int  # jobs in status success, from the database
    created: int
    requests: int
    status_2xx: int
    status_429: int
    status_503: int
    status_other: int
    api_pool_size: float = 0.0
    worker_pool_size: float = 0.0
    in_flight: float = 0.0
    finished: int = 0  # jobs with finished_at set (any terminal status), from the database
    raw: dict[str, float] = field(default_factory=dict, repr=False)

    def row(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("raw")
        return out


class Sampler:
    """Reads the server's state; keeps the samples and the last metrics text."""

    def __init__(self, base: str, db_url: str, server_pid: int, token: str | None = None
                 ) -> None:
        self.base = base
        self.token = token  # /metrics needs a token of every queue when tokens are set
        self.db_url = db_url
        self.process = psutil.Process(server_pid)
        self.conn = psycopg.connect(db_url, autocommit=True,
                                    application_name="boundq-flood-sampler")
        self.started = time.monotonic()
        self.samples: list[Sample] = []
        self.last_metrics = ""
        self.peak_rss_mb = 0.0
        self.peak_connections = 0

    def close(self) -> None:
        self.conn.close()

    def rss_mb(self) -> float:
        try:
            procs = [self.process, *self.process.children(recursive=True)]
            return sum(p.memory_info().rss for p in procs if p.is_running()) / 2**20
        except psutil.Error:
            return 0.0

    def db_state(self) -> tuple[int, int, int, int, int]:
        """(connections to the flood database but ours, waiting, processing, succeeded,
        finished jobs)."""
        conns = self.conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()").fetchone()
        jobs = self.conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'new'), "
            "count(*) FILTER (WHERE status = 'processing'), "
            "count(*) FILTER (WHERE status = 'success'), "
            "count(*) FILTER (WHERE finished_at IS NOT NULL) FROM jobs").fetchone()
        assert conns is not None and jobs is not None
        return int(conns[0]), int(jobs[0]), int(jobs[1]), int(jobs[2]), int(jobs[3])

    def sample(self, phase: str) -> Sample:
        text = fetch_metrics(self.base, token=self.token)
        if text:
            self.last_metrics = text
        metrics = parse_metrics(self.last_metrics)
        codes = status_counts(metrics)
        ok = sum(n for c, n in codes.items() if c.startswith("2"))
        other = sum(n for c, n in codes.items() if not c.startswith("2") and c not in
                    ("429", "503"))
        conns, waiting, processing, succeeded, finished = self.db_state()
        sample = Sample(
            t=round(time.monotonic() - self.started, 2), phase=phase, rss_mb=self.rss_mb(),
            connections=conns, waiting=waiting, processing=processing,
            succeeded=succeeded, finished=finished,
            created=int(metrics.get("boundq_api_jobs_created_total", 0)),
            requests=sum(codes.values()), status_2xx=ok, status_429=codes.get("429", 0),
            status_503=codes.get("503", 0), status_other=other,
            api_pool_size=metrics.get("boundq_api_pool_pool_size", 0.0),
            worker_pool_size=metrics.get("boundq_pool_size", 0.0),
            in_flight=metrics.get("boundq_in_flight", 0.0), raw=metrics)
        self.peak_rss_mb = max(self.peak_rss_mb, sample.rss_mb)
        self.peak_connections = max(self.peak_connections, sample.connections)
        self.samples.append(sample)
        return sample


class Progress:
    """One live line a second: overwritten on a terminal, every `every` s otherwise."""

    def __init__(self, total_s: float | None, stream: TextIO | None = None,
                 every: float = 5.0) -> None:
        self.total_s = total_s
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty()
        self.every = 1.0 if self.tty else every
        self.last_print = -1e9
        self.prev: Sample | None = None

    def line(self, s: Sample) -> str:
        prev = self.prev
        dt = (s.t - prev.t) if prev else 0.0
        rps = (s.requests - prev.requests) / dt if prev and dt > 0 else 0.0
        done = (s.finished - prev.finished) / dt if prev and dt > 0 else 0.0
        refused = s.status_429 + s.status_503 + s.status_other
        total = f"/{self.total_s:.0f}s" if self.total_s and s.phase == "load" else "s"
        return (f"[{s.phase:<5} {s.t:5.0f}{total}] req/s {rps:7,.0f}  2xx {s.status_2xx:,}  "
                f"429 {s.status_429:,}  503 {s.status_503:,}  other {s.status_other:,}  "
                f"non-2xx {100 * refused / max(1, s.requests):4.1f}%  queue {s.waiting:,}  "
                f"done/s {done:6,.0f}  rss {s.rss_mb:5.0f} MiB  conns {s.connections}")

    def show(self, s: Sample, force: bool = False) -> None:
        text = self.line(s)
        new_phase = self.prev is not None and self.prev.phase != s.phase
        self.prev = s
        if not force and not new_phase and s.t - self.last_print < self.every - 0.05:
            return
        self.last_print = s.t
        if self.tty:
            self.stream.write("\r\x1b[2K" + text)
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def end(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
