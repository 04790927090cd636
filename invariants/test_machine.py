"""`pytest invariants/`'s headline: boundq keeps every invariant of docs/design.md while the
fault machine kills, stops, partitions and restarts everything around it."""

from __future__ import annotations

import pytest

from invariants.harness import Context
from invariants.machine import run_machine
from invariants.profile import PROFILE
from invariants.variants import BOUNDQ


@pytest.mark.timeout(PROFILE.timeout_s)
def test_boundq_keeps_its_invariants_under_faults(ctx: Context) -> None:
    run_machine(ctx, BOUNDQ, examples=PROFILE.examples, steps=PROFILE.steps)
    assert not ctx.stats.violations
