"""The harness's self-test: the same machine, run against deliberately broken queues
(invariants/broken_worker.py), must find each bug. A harness that cannot fail proves
nothing. Shrinking is off here: finding the bug once is the point."""

from __future__ import annotations

import pytest
from hypothesis.errors import HypothesisException

from invariants.harness import Context
from invariants.machine import run_machine
from invariants.profile import PROFILE
from invariants.variants import BROKEN, Variant


@pytest.mark.timeout(PROFILE.timeout_s)
@pytest.mark.parametrize("variant", BROKEN, ids=[v.name for v in BROKEN])
def test_harness_detects_broken_variant(ctx: Context, variant: Variant) -> None:
    ctx.stats.detected.setdefault(variant.name, set())
    failure: BaseException | None = None
    try:
        run_machine(ctx, variant, examples=PROFILE.selftest_examples,
                    steps=PROFILE.selftest_steps, shrink=False)
    except (AssertionError, ExceptionGroup, HypothesisException) as exc:
        # The violation, possibly reported as Flaky: real processes do not replay exactly.
        failure = exc
    found = ctx.stats.detected[variant.name]
    assert found & variant.expected, (
        f"{variant.name} ({variant.description}) went undetected in "
        f"{PROFILE.selftest_examples} examples; invariants reported: {sorted(found)}; "
        f"other violations seen: {sorted(ctx.stats.incidental.get(variant.name, ()))}; "
        f"last error: {failure!r}")
