"""Fixtures of the invariant suite: one PostgreSQL cluster the session owns (cloned per
example from a migrated template that carries the audit trigger), the fault-proxy
thread, the profile, and the summary printed at the end of every run:

    examples run, faults injected by kind, jobs checked, violations (must be 0), and
    whether each deliberately broken variant was detected.

Failing histories are kept as JSON files in invariants/failures/ (or in
BOUNDQ_INVARIANTS_ARTIFACTS), one per failure, to study after shrinking.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from boundq.core.faultproxy import ProxyHost
from invariants.cluster import Cluster
from invariants.harness import REPO, Context, Harness
from invariants.profile import PROFILE, STATS
from invariants.variants import BOUNDQ


@pytest.fixture(scope="session")
def ctx() -> Iterator[Context]:
    cluster = Cluster()
    cluster.start()
    proxies = ProxyHost()
    workroot = Path(tempfile.mkdtemp(prefix="boundq-inv-runs-"))
    artifacts = Path(os.environ.get("BOUNDQ_INVARIANTS_ARTIFACTS", REPO / "invariants" / "failures"))
    try:
        yield Context(cluster, proxies, PROFILE, STATS, artifacts, workroot)
    finally:
        proxies.stop()
        cluster.destroy()
        shutil.rmtree(workroot, ignore_errors=True)


@pytest.fixture
def harness(ctx: Context, request: pytest.FixtureRequest) -> Iterator[Harness]:
    """A fresh database and an empty set of workers for one scenario."""
    h = Harness(ctx, BOUNDQ, request.node.name.removeprefix("test_")[:40])
    ctx.stats.scenarios += 1
    try:
        yield h
    finally:
        h.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not (STATS.checks or STATS.examples or STATS.scenarios):
        return
    terminalreporter.write_sep("=", "boundq invariants summary")
    for line in STATS.lines(PROFILE):
        terminalreporter.write_line(line)
