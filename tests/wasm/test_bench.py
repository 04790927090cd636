"""The overhead benchmark stays runnable (its numbers belong in reports, not here)."""

from __future__ import annotations

import pytest

from boundq.core.wasm.bench import main


def test_the_benchmark_reports_each_kind(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--calls", "20", "--repeats", "1", "--concurrency", "1,2"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [(r[0], r[1]) for r in rows] == [("noop", "1"), ("wasm", "1"), ("inline", "1"),
                                            ("noop", "2"), ("wasm", "2"), ("inline", "2")]
    assert all(float(r[2]) > 0 and float(r[3]) >= 0 for r in rows)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(SystemExit):
        main(["--concurrency", "x"])
