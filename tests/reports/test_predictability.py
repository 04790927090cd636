"""The predictability phase of `boundq report`: a --quick run on the test cluster gives a
point for boundq at every offered load, with goodput that never beats the capacity bound
(MAX_CONCURRENT_JOBS x 1000 / job ms), and the figure."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("matplotlib")

from boundq.core.pgembed import EmbeddedPostgres
from boundq.reports import sweep
from boundq.reports.predictability import QUICK_LOADS, LoadPlan, measure_point

pytestmark = pytest.mark.slow

# The bound is exact for a window of W seconds up to the jobs running at its edges
# (5 / W per second), and finish times are commit times: a tenth covers both.
TOLERANCE = 0.10


def test_quick_report_phase_keeps_goodput_within_the_bound(
        pg_cluster: EmbeddedPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DATABASE_URL", pg_cluster.url("postgres"))
    assert sweep.main(["--quick", "--phases", "predictability", "--no-peers",
                       "--out", str(tmp_path)]) == 0
    (run_dir,) = tmp_path.iterdir()
    points = pd.read_csv(run_dir / "points-predictability.csv")
    boundq = points[points["system"] == "boundq"].set_index("load_x")
    assert sorted(boundq.index) == sorted(QUICK_LOADS)
    assert (boundq["goodput_per_s"] > 0).all()
    bound = 5 * 1000 / 10
    assert (boundq["capacity_per_s"] == bound).all()
    overload = boundq[boundq.index > 1]
    assert (overload["goodput_per_s"] <= bound * (1 + TOLERANCE)).all(), overload
    # what was offered reached the database (the producer kept its schedule, roughly)
    assert (boundq["sent_per_s"] > 0.5 * boundq["offered_per_s"]).all()
    assert (run_dir / "predictability.png").stat().st_size > 10_000
    summary = (run_dir / "summary.md").read_text()
    assert "| 10x bound | 5,000 |" in summary
    out = capsys.readouterr().out
    assert out.count("boundq 10x bound") == 1 and "pickup p99" in out


@pytest.mark.parametrize("system", ["pgqueuer", "procrastinate"])
def test_peer_point_from_its_own_records(pg_cluster: EmbeddedPostgres, system: str) -> None:
    if importlib.util.find_spec(system) is None:
        pytest.skip(f"{system} is not installed (the peers extra)")
    row = measure_point(pg_cluster.url("postgres"), system, 0.2, LoadPlan(seconds=2.0,
                                                                           tail_s=1.0))
    assert row["system"] == system and row["arrived"] > 0
    assert 0 < row["goodput_per_s"] <= 500 * (1 + TOLERANCE)
    assert row["pickup_p99_ms"] >= row["pickup_p50_ms"] > 0


def test_a_missing_peer_is_named_and_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    from boundq.reports import predictability

    monkeypatch.setattr(predictability, "pgqueuer_available", lambda: False)
    monkeypatch.setattr(predictability, "procrastinate_available", lambda: True)
    said: list[str] = []
    assert predictability.systems(True, said.append) == ["boundq", "procrastinate"]
    assert len(said) == 1 and "pgqueuer is not installed" in said[0]
    assert predictability.systems(False, said.append) == ["boundq"]
