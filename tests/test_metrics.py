"""Metrics through prometheus-client in every process: `boundq worker --processes 2` on
METRICS_PORT adds up its children, one `boundq worker` serves its own, the bulk histogram
export writes what prometheus-client's own observe() would, and the API's `/metrics` under
`boundq serve` holds the workers' counters and the API's. docs/metrics.md and the Grafana
dashboard (docs/grafana/boundq.json) are checked against a real scrape."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Histogram as PromHistogram
from prometheus_client.parser import text_string_to_metric_families

from boundq.core.config import ENV_VARIABLES
from boundq.core.metrics import LATENCY_BUCKETS, MULTIPROC_ENV, SERVED_ENV, Histogram, PromHistogramFeed
from boundq.core.pgembed import free_port
from tests.conftest import PgCluster, scratch_database
from tests.helpers import REPO_ROOT, add_jobs, rows, scalar, wait_until

DOCS = REPO_ROOT / "docs" / "metrics.md"
DASHBOARD = REPO_ROOT / "docs" / "grafana" / "boundq.json"
GATE = 7_310_001  # tests/gate_handlers.py
TARGET_LABELS = {"job", "instance"}  # added by Prometheus when it scrapes


# --- scraping -------------------------------------------------------------------------------
@dataclass
class Scrape:
    text: str
    samples: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)
    families: dict[str, tuple[str, set[str]]] = field(default_factory=dict)  # type, labels

    def __post_init__(self) -> None:
        for family in text_string_to_metric_families(self.text):
            exposed = f"{family.name}_total" if family.type == "counter" else family.name
            labels: set[str] = set()
            for s in family.samples:
                self.samples.setdefault(s.name, []).append((s.labels, s.value))
                labels |= set(s.labels) - {"le"}
            self.families[exposed] = (family.type, labels)

    def value(self, name: str, **labels: str) -> float | None:
        found = [v for lab, v in self.samples.get(name, []) if lab == labels]
        return found[0] if found else None


def scrape(url: str) -> Scrape | None:
    """The metrics at `url`, or None while nothing answers there yet."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return Scrape(resp.read().decode())
    except (urllib.error.URLError, OSError):
        return None


async def scrape_until(url: str, what: str, within: float = 60, **expect: float) -> Scrape:
    """Scrape until every `name=value` of `expect` holds (the workers flush once a second)."""
    async def check() -> Scrape | None:
        got = scrape(url)
        if got is None or any(got.value(name) != value for name, value in expect.items()):
            return None
        return got

    result: Scrape = await wait_until(check, within, interval=0.2, what=what)
    return result


# --- processes ------------------------------------------------------------------------------
def _env(db_url: str, **extra: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ENV_VARIABLES and k not in (MULTIPROC_ENV, SERVED_ENV, "BOUNDQ_HANDLERS")}
    env.update({"DATABASE_URL": db_url, "LOG_FORMAT": "text", "LOG_LEVEL": "info",
                "POLL_INTERVAL_SECONDS": "0.1", "SHUTDOWN_GRACE_SECONDS": "5"})
    env.update({k.upper(): str(v) for k, v in extra.items()})
    return env


class Child:
    """`python -m boundq ...` in a session of its own, its output in a log file."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = open(log, "ab")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen([sys.executable, "-m", "boundq", *argv], cwd=REPO_ROOT,
                                     env=env, stdout=self._out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    def tail(self, lines: int = 40) -> str:
        self._out.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM, and the exit code once it has drained."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self._out.close()


@pytest.fixture
def children() -> Iterator[list[Child]]:
    started: list[Child] = []
    yield started
    for child in started:
        child.close()


# --- boundq worker on METRICS_PORT ----------------------------------------------------------
@pytest.mark.slow
async def test_worker_processes_metrics_add_up_every_process(db_url, conn, tmp_path,
                                                             children) -> None:
    permits, jobs = 3, 10
    await conn.execute("SELECT pg_advisory_lock(%s)", (GATE,))  # every gate job waits
    await conn.execute("INSERT INTO jobs (name, kind) SELECT 'gate-' || g, 'gate' "
                       "FROM generate_series(1, %s) AS g", (jobs,))
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    worker = Child(["worker", "--processes", "2", "--concurrency", str(permits),
                    "--handlers", "tests.gate_handlers"],
                   _env(db_url, metrics_port=port), tmp_path / "worker.log")
    children.append(worker)

    async def both_processes_full() -> dict[str, int] | None:
        assert worker.proc.poll() is None, worker.tail()
        held = await rows(conn, "SELECT lease_owner, count(*) AS n FROM jobs "
                                "WHERE status = 'processing' GROUP BY lease_owner")
        counts = {r["lease_owner"]: r["n"] for r in held}
        return counts if sorted(counts.values()) == [permits, permits] else None

    await wait_until(both_processes_full, 60,
                     what=f"both worker processes holding {permits} jobs\n{worker.tail()}")
    # The gauges add up the live processes too (each flushes once a second).
    running = await scrape_until(url, f"in_flight {2 * permits}\n{worker.tail()}",
                                 boundq_in_flight=2 * permits)
    assert running.value("boundq_permits_high_water") == permits  # max over the processes
    await conn.execute("SELECT pg_advisory_unlock(%s)", (GATE,))

    # Every process flushes on its own clock, and a scrape may fall between two of its
    # writes: wait for the whole picture, then check how it splits.
    done = await scrape_until(url, f"succeeded {jobs}\n{worker.tail()}",
                              boundq_jobs_succeeded_total=jobs, boundq_jobs_claimed_total=jobs,
                              boundq_queue_wait_seconds_count=jobs,
                              boundq_run_seconds_count=jobs)
    by_owner = {r["owner"]: r["n"] for r in await rows(
        conn, "SELECT owner, count(*) AS n FROM job_attempts WHERE outcome = 'success' "
              "GROUP BY owner")}
    assert len(by_owner) == 2 and sum(by_owner.values()) == jobs, by_owner
    assert all(permits <= n < jobs for n in by_owner.values()), by_owner  # one alone is short
    assert not any("pid" in labels for series in done.samples.values() for labels, _ in series)
    assert worker.stop() == 0, worker.tail()


@pytest.mark.slow
async def test_single_worker_serves_its_metrics(db_url, conn, tmp_path, children) -> None:
    jobs = 20
    await add_jobs(conn, jobs)
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    worker = Child(["worker", "--processes", "1"], _env(db_url, metrics_port=port),
                   tmp_path / "worker.log")
    children.append(worker)
    # The server thread may answer while the worker's loop is mid-flush: wait for it all.
    done = await scrape_until(url, f"succeeded {jobs}\n{worker.tail()}",
                              boundq_jobs_succeeded_total=jobs, boundq_jobs_claimed_total=jobs,
                              boundq_queue_wait_seconds_count=jobs,
                              boundq_run_seconds_count=jobs)
    assert await scalar(conn, "SELECT count(*) FROM jobs WHERE status = 'success'") == jobs
    assert done.value("boundq_jobs_fenced_writes_total") == 0
    # prometheus-client's ordinary registry (no multiprocess directory): its own collectors
    assert "process_cpu_seconds_total" in done.samples
    assert "boundq_jobs_succeeded_created" in done.samples
    assert worker.stop() == 0, worker.tail()


# --- the bulk histogram export --------------------------------------------------------------
# Bucket bounds themselves (le is inclusive), zero, past the last bucket; in rounds, with
# a flush between rounds and one with nothing new.
ROUNDS = [[0.0, 0.001, 0.0011, 0.0025, 0.05, 0.05, 1.0, 2.4999],
          [],
          [301.0, 300.0, 1e6, 0.7, 0.0001, 10.0, 10.0000001],
          [5.0]]


def _series(text: str, name: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        if family.name == name:
            for s in family.samples:
                if not s.name.endswith("_created"):
                    out[(s.name.removeprefix(name), tuple(sorted(s.labels.items())))] = s.value
    return out


def _assert_same_exposition(fed: dict[Any, float], observed: dict[Any, float]) -> None:
    assert fed.keys() == observed.keys()
    assert len(fed) == len(LATENCY_BUCKETS) + 3  # every bucket, +Inf, _count, _sum
    for key, value in observed.items():
        if key[0] == "_sum":  # sums of the same numbers, added in another order
            assert fed[key] == pytest.approx(value, rel=1e-12), key
        else:
            assert fed[key] == value, key


def test_histogram_feed_exposes_what_observe_would() -> None:
    fed_registry, observed_registry = CollectorRegistry(), CollectorRegistry()
    fed = PromHistogram("t_seconds", "t", buckets=LATENCY_BUCKETS, registry=fed_registry)
    observed = PromHistogram("t_seconds", "t", buckets=LATENCY_BUCKETS,
                             registry=observed_registry)
    local = Histogram()
    feed = PromHistogramFeed(fed, local)
    for values in ROUNDS:
        for value in values:
            local.observe(value)
            observed.observe(value)
        feed.flush()
        _assert_same_exposition(_series(generate_latest(fed_registry).decode(), "t_seconds"),
                                _series(generate_latest(observed_registry).decode(),
                                        "t_seconds"))


MULTIPROCESS_SCRIPT = """
import json, sys
from prometheus_client import CollectorRegistry, Histogram, generate_latest, multiprocess
from boundq.core.metrics import LATENCY_BUCKETS, Histogram as Local, PromHistogramFeed

fed = Histogram("fed_seconds", "t", buckets=LATENCY_BUCKETS, registry=None)
observed = Histogram("observed_seconds", "t", buckets=LATENCY_BUCKETS, registry=None)
local = Local()
feed = PromHistogramFeed(fed, local)
for values in json.loads(sys.argv[1]):
    for value in values:
        local.observe(value)
        observed.observe(value)
    feed.flush()
registry = CollectorRegistry()
multiprocess.MultiProcessCollector(registry)
sys.stdout.write(generate_latest(registry).decode())
"""


def test_histogram_feed_in_multiprocess_mode(tmp_path) -> None:
    """The same in prometheus-client's multiprocess mode (chosen when it is imported, so in
    a process of its own), where the per-bucket values are the ones in the shared files."""
    env = {**os.environ, MULTIPROC_ENV: str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", MULTIPROCESS_SCRIPT, json.dumps(ROUNDS)],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    fed = _series(done.stdout, "fed_seconds")
    observed = _series(done.stdout, "observed_seconds")
    _assert_same_exposition({(k[0].replace("fed", ""), k[1]): v for k, v in fed.items()},
                            {(k[0].replace("observed", ""), k[1]): v
                             for k, v in observed.items()})
    assert observed[("_count", ())] == sum(len(values) for values in ROUNDS)


# --- boundq serve: the API's /metrics -------------------------------------------------------
CREATED = 5


def _ready(base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base}/readyz", timeout=5) as resp:
            return int(resp.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def _post(base: str, body: dict[str, Any]) -> int:
    request = urllib.request.Request(f"{base}/jobs", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


@dataclass
class Served:
    scrape: Scrape
    refused: int  # 429s on the way (the door sheds while a busy machine runs the API late)
    metrics_port_url: str  # METRICS_PORT's /metrics, served by serve's parent
    tail: Callable[[], str]


def _create(base: str, body: dict[str, Any], refused: list[int]) -> int:
    """POST /jobs again after each 429, as a client should; the 429s are counted."""
    deadline = time.monotonic() + 60
    while (status := _post(base, body)) == 429 and time.monotonic() < deadline:
        refused.append(status)
        time.sleep(0.2)
    return status


@pytest.fixture(scope="module")
def served(pg_cluster: PgCluster, template_url: str, tmp_path_factory) -> Iterator[Served]:
    """`boundq serve` with two worker processes and METRICS_PORT set, after CREATED creates
    and one refused create have gone through: its /metrics once every job has succeeded."""
    port, metrics_port = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    with scratch_database(pg_cluster, "metrics") as url:
        server = Child(["serve"], _env(url, http_port=port, worker_processes=2,
                                       metrics_port=metrics_port),
                       tmp_path_factory.mktemp("serve") / "serve.log")
        try:
            deadline = time.monotonic() + 90
            while not _ready(base):
                assert server.proc.poll() is None, server.tail()
                assert time.monotonic() < deadline, server.tail()
                time.sleep(0.2)
            refused: list[int] = []
            assert [_create(base, {"name": f"m-{i}", "kind": "noop"}, refused)
                    for i in range(CREATED)] == [201] * CREATED
            assert _create(base, {"name": "bad", "kind": "no-such-kind"}, refused) == 422
            deadline = time.monotonic() + 60
            while True:
                got = scrape(f"{base}/metrics")
                # every process flushes on its own clock: wait for all of their counts
                if got is not None and all(got.value(name) == CREATED for name in (
                        "boundq_jobs_succeeded_total", "boundq_jobs_claimed_total",
                        "boundq_run_seconds_count", "boundq_api_jobs_created_total")):
                    break
                assert time.monotonic() < deadline, server.tail()
                time.sleep(0.2)
            yield Served(got, len(refused), f"http://127.0.0.1:{metrics_port}/metrics",
                         server.tail)
            assert server.stop() == 0, server.tail()
        finally:
            server.close()


@pytest.mark.slow
def test_serve_metrics_hold_the_workers_and_the_api(served: Served) -> None:
    got = served.scrape
    assert got.value("boundq_jobs_claimed_total") == CREATED
    assert got.value("boundq_run_seconds_count") == CREATED
    assert got.value("boundq_api_jobs_created_total") == CREATED
    assert got.value("boundq_http_requests_total", method="POST", status="201") == CREATED
    assert got.value("boundq_http_requests_total", method="POST", status="422") == 1
    assert (got.value("boundq_http_requests_total", method="POST", status="429") or 0
            ) == served.refused
    assert got.value("boundq_api_shed_total") == served.refused  # the queue was never full
    assert (got.value("boundq_http_request_seconds_count") or 0) >= CREATED + 1
    assert got.value("boundq_api_database_up") == 1
    assert got.value("boundq_in_flight") == 0
    assert not any("pid" in labels for series in got.samples.values() for labels, _ in series)


@pytest.mark.slow
async def test_serve_metrics_port_is_the_parents_and_holds_every_process(served: Served
                                                                        ) -> None:
    """METRICS_PORT under `boundq serve`: the parent serves it (its worker children used to
    bind it too, and the second one's failure stopped serve), with the workers' counts and
    the API's (flushed once a second), the same totals as the API's own /metrics."""
    api = served.scrape
    got = await scrape_until(served.metrics_port_url, f"METRICS_PORT\n{served.tail()}",
                             boundq_jobs_succeeded_total=CREATED,
                             boundq_api_jobs_created_total=CREATED)
    for name, labels in (("boundq_jobs_claimed_total", {}), ("boundq_run_seconds_count", {}),
                         ("boundq_http_requests_total", {"method": "POST", "status": "201"}),
                         ("boundq_http_requests_total", {"method": "POST", "status": "422"})):
        assert got.value(name, **labels) == api.value(name, **labels), (name, labels)
    assert got.value("boundq_in_flight") == 0
    assert not any("pid" in labels for series in got.samples.values() for labels, _ in series)
    assert "boundq serve: API on" in served.tail(400)
    assert "Address already in use" not in served.tail(400)


def _documented() -> dict[str, tuple[str, set[str]]]:
    """docs/metrics.md's tables: metric -> (type, labels)."""
    out = {}
    for line in DOCS.read_text().splitlines():
        if line.startswith("| `boundq_"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            out[cells[0].strip("`")] = (cells[1], set(re.findall(r"`(\w+)`", cells[2])))
    return out


@pytest.mark.slow
def test_docs_list_every_metric_with_its_type_and_labels(served: Served) -> None:
    documented = _documented()
    patterns = {name.split("<")[0]: kind for name, kind in documented.items() if "<" in name}
    assert patterns == {"boundq_api_pool_": ("gauge", set())}
    exposed = {name: kind for name, kind in served.scrape.families.items()
               if name.startswith("boundq_")}
    for name, (kind, labels) in exposed.items():
        prefix = next((p for p in patterns if name.startswith(p)), None)
        want = documented.get(name) or (patterns[prefix] if prefix else None)
        assert want is not None, f"{name} is exposed but not in docs/metrics.md"
        assert (kind, labels) == want, name
    for name in documented:
        if "<" in name:
            assert any(e.startswith(name.split("<")[0]) for e in exposed), name
        else:
            assert name in exposed, f"docs/metrics.md lists {name}, the scrape has no such metric"


def _dashboard_panels() -> list[dict[str, Any]]:
    out = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


@pytest.mark.slow
def test_dashboard_queries_name_metrics_and_labels_of_a_real_scrape(served: Served) -> None:
    samples = served.scrape.samples
    dashboard = json.loads(DASHBOARD.read_text())
    panels = _dashboard_panels()
    assert len({p["id"] for p in panels}) == len(panels)
    graphs = [p for p in panels if p["type"] != "row"]
    assert len(graphs) >= 12
    queries = [t["expr"] for p in graphs for t in p["targets"]]
    assert all(p["targets"] and p["datasource"]["uid"] == "${datasource}" for p in graphs)
    queries += [v["query"]["query"] for v in dashboard["templating"]["list"]
                if v["type"] == "query"]
    named: set[str] = set()
    for query in queries:
        names = set(re.findall(r"\bboundq_\w+", query))
        assert names, query
        named |= names
        for name in names:
            assert name in samples, f"{name} (in {query!r}) is not in a real scrape"
        labels = {lab for name in names for series in samples[name] for lab in series[0]}
        for name, selector in re.findall(r"\b(boundq_\w+)\{([^}]*)\}", query):
            used = set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)", selector)) - TARGET_LABELS
            have = {lab for series in samples[name] for lab in series[0]}
            assert used <= have, (name, used, have)
        for grouping in re.findall(r"\bby \(([^)]*)\)", query):
            by = {g.strip() for g in grouping.split(",")} - TARGET_LABELS
            assert by <= labels, (query, by, labels)
    for wanted in ("boundq_jobs_succeeded_total", "boundq_jobs_failed_total",
                   "boundq_jobs_retried_total", "boundq_in_flight", "boundq_permits_in_use",
                   "boundq_queue_wait_seconds_bucket", "boundq_run_seconds_bucket",
                   "boundq_http_requests_total", "boundq_api_event_loop_lag_seconds",
                   "boundq_jobs_db_errors_total", "boundq_jobs_fenced_writes_total",
                   "boundq_jobs_lost_leases_total"):
        assert wanted in named, wanted
