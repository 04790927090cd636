"""summary.md tables: units in the headers, latencies in ms with enough digits, and the
predictability table marking lower bounds."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("matplotlib")

from boundq.reports.report_tables import milliseconds, points_table, predictability_table
from boundq.reports.report_writer import write_report
from tests.reports.test_figures import PREDICT, STEADY


def _cells(table: str, header: str) -> list[str]:
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()]
    col = rows[0].index(header)
    return [row[col] for row in rows[2:]]


def test_steady_latencies_in_milliseconds_with_units() -> None:
    table = points_table(STEADY)
    # boundq's 4 ms and 3 ms p50s were printed as 0.0 (seconds, one decimal, no unit)
    assert _cells(table, "enqueue->start p50 (ms)") == ["4.00", "3.00", "30.0", "20.0"]
    assert _cells(table, "enqueue->start p99 (ms)")[0] == "20.0"
    assert _cells(table, "offered jobs/s") == ["250", "1000", "250", "1000"]


@pytest.mark.parametrize(("ms", "shown"), [(0.35, "0.35"), (4.2, "4.20"), (61.03, "61.0"),
                                           (1234.4, "1,234"), (float("nan"), "")])
def test_millisecond_precision(ms: float, shown: str) -> None:
    assert milliseconds(ms) == shown


def test_predictability_table_one_row_per_load_and_lower_bounds_marked() -> None:
    table = predictability_table(PREDICT)
    assert _cells(table, "offered load") == ["0.5x bound", "2x bound", "10x bound"]
    assert _cells(table, "boundq goodput/s") == ["249", "480", "470"]
    # 9,000 of 12,000 boundq jobs still waited at 10x; 800 of 2,400 PgQueuer ones at 2x
    assert _cells(table, "boundq pickup p99 (ms)") == ["9.50", "2,100", "≥2,900"]
    assert _cells(table, "PgQueuer pickup p99 (ms)") == ["60.0", "≥2,500", "≥3,100"]


def test_report_with_only_the_predictability_phase(tmp_path: Path) -> None:
    PREDICT.to_csv(tmp_path / "points-predictability.csv", index=False)
    (tmp_path / "run.json").write_text('{"kind": "report", "options": {"jobs": 1000, '
                                       '"phases": ["predictability"], "job_ms": 10}}')
    summary = write_report(tmp_path).read_text()
    assert "![goodput and pickup p99 against offered load](predictability.png)" in summary
    assert "| 10x bound | 5,000 |" in summary
    assert (tmp_path / "predictability.png").stat().st_size > 0
    assert pd.read_csv(tmp_path / "points-predictability.csv").shape[0] == 6
