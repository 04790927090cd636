"""notebooks/runs.ipynb executed headlessly on a small run folder: every cell runs and the
figures come out as images."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from tests.helpers import REPO_ROOT  # noqa: E402
from tests.reports.test_figures import HISTORY, PEERS, PREDICT, SAMPLES, STEADY, SWEEP  # noqa: E402

pytestmark = pytest.mark.slow


def small_runs(root: Path) -> None:
    flood = root / "20260101T000000Z"
    flood.mkdir(parents=True)
    SAMPLES.to_csv(flood / "server_samples.csv", index=False)
    history = HISTORY.rename(columns={"t": "Timestamp", "users": "User Count",
                                      "requests_per_s": "Requests/s",
                                      "failures_per_s": "Failures/s",
                                      "p50": "50%", "p95": "95%", "p99": "99%"})
    history.insert(2, "Name", "Aggregated")
    history.to_csv(flood / "locust_stats_history.csv", index=False)
    (flood / "run.json").write_text(json.dumps({
        "kind": "flood", "postgres": {"fsync": "on"}, "machine": {"cores": 2},
        "result": {"scenario": "mixed", "users": 4, "job_ms": 0, "requests_per_s": 500.0,
                   "jobs_offered_per_s": 900.0, "jobs_accepted_per_s": 700.0,
                   "jobs_processed_per_s_during_load": 650.0, "peak_rss_mb": 48.0,
                   "peak_connections": 11, "connection_budget": 15, "passed": True,
                   "statuses": {"201": 700, "429": 200}},
        "verdict": {"lost": 0}}))
    report = root / "20260101T000100Z"
    report.mkdir()
    SWEEP.to_csv(report / "points-concurrency.csv", index=False)
    SWEEP.to_csv(report / "points-pool.csv", index=False)
    STEADY.to_csv(report / "points-steady.csv", index=False)
    PEERS.to_csv(report / "points-peers.csv", index=False)
    PREDICT.to_csv(report / "points-predictability.csv", index=False)
    (report / "run.json").write_text(json.dumps({"kind": "report"}))


def test_notebook_runs_headless_on_a_small_run(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    small_runs(tmp_path / "runs")
    monkeypatch.setenv("BOUNDQ_RUNS", str(tmp_path / "runs"))
    path = REPO_ROOT / "notebooks" / "runs.ipynb"
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute(env={**os.environ})
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 8, f"{len(images)} figures rendered"
    text = "".join(o.get("text", "") for o in outputs)
    assert "1 flood runs, 1 report runs" in text
    tables = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert "| 10x bound | 5,000 |" in tables
