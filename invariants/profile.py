"""Run profiles (BOUNDQ_INVARIANTS_PROFILE=ci|soak, default ci) and the session's tallies.

ci: the whole `pytest invariants/` in about five minutes on two cores. soak (`make soak`):
many more examples, longer runs, bigger scenario loads. Both print the same summary.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Profile:
    name: str
    examples: int  # state-machine examples against boundq
    steps: int  # rules per example (Hypothesis stateful_step_count)
    selftest_examples: int  # most examples per broken variant before it counts as missed
    selftest_steps: int
    drain_s: float  # recovery bound: after every fault healed, all jobs terminal within this
    scenario_jobs: int  # load in the scenarios that want one
    timeout_s: int  # pytest-timeout for the long tests


# A variant's search stops at its first detection, so the limit costs time only when a
# detection comes late. The variants whose bug the draws reached only sometimes open
# every example with what it needs (variants.py), and are found in the first; the
# others needed at most 8 (fetch_then_update_reaper) in recent runs. 20 keeps a late one
# from failing the suite.
# The drain waits only until every job is terminal, so its bound, too, costs time only
# when a drain is slow: poison jobs kill their workers, each kill costs its neighbours a
# lease and the drain a new process, and on a slowed machine 30 s once ran out with the
# drain still moving (24 jobs back in `new` from expired leases, workers still finishing
# jobs in the last second).
PROFILES = {
    "ci": Profile("ci", examples=8, steps=25, selftest_examples=20, selftest_steps=20,
                  drain_s=60, scenario_jobs=150, timeout_s=900),
    "soak": Profile("soak", examples=40, steps=50, selftest_examples=20, selftest_steps=40,
                    drain_s=60, scenario_jobs=1500, timeout_s=4 * 3600),
}


def current() -> Profile:
    name = os.environ.get("BOUNDQ_INVARIANTS_PROFILE", "ci").strip().lower() or "ci"
    if name not in PROFILES:
        choices = ", ".join(PROFILES)
        raise SystemExit(f"BOUNDQ_INVARIANTS_PROFILE={name!r}: must be one of {choices}")
    return PROFILES[name]


PROFILE = current()

# Worker settings for every run: short leases so expiry and recovery happen within a test.
WORKER_ENV = {
    "LEASE_SECONDS": "1.2",
    "HEARTBEAT_SECONDS": "0.3",
    "REAP_INTERVAL_SECONDS": "0.1",
    "POLL_INTERVAL_SECONDS": "0.2",
    "SHUTDOWN_GRACE_SECONDS": "1",
    "RETRY_BASE_SECONDS": "0.05",
    "RETRY_MAX_SECONDS": "0.2",
    "NUM_WORKERS": "2",
    "API_POOL_BUFFER": "1",
    "DEFAULT_MAX_ATTEMPTS": "3",
    "LOG_FORMAT": "json",
    "LOG_LEVEL": "warning",
    # a held snapshot (the hold_snapshot rule) turns claim floors on within a scout poll;
    # a job made runnable below a floor is then taken by the next walk from the head
    "CLAIM_FLOOR_PIN_SECONDS": "0.1",
    "CLAIM_FLOOR_RESCAN_SECONDS": "0.5",
}
LEASE_S = float(WORKER_ENV["LEASE_SECONDS"])


@dataclass
class Stats:
    examples: Counter[str] = field(default_factory=Counter)  # by variant
    scenarios: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    jobs_checked: int = 0
    checks: int = 0
    schedules_checked: int = 0  # cron schedules judged by one_job_per_tick (final checks)
    ticks_checked: int = 0  # their tick rows
    chains_checked: int = 0  # jobs with a follow-up judged by exactly_once_chain (final)
    violations: Counter[str] = field(default_factory=Counter)  # boundq itself: must stay 0
    fenced: Counter[str] = field(default_factory=Counter)  # lease_lost / write_fenced reports
    detected: dict[str, set[str]] = field(default_factory=dict)  # broken variant -> invariants
    # broken variant -> violations seen that are none of those it must be caught by
    incidental: dict[str, set[str]] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)

    def lines(self, profile: Profile) -> list[str]:
        faults = ", ".join(f"{k}={v}" for k, v in sorted(self.faults.items())) or "none"
        runs = ", ".join(f"{k}={v}" for k, v in sorted(self.examples.items())) or "none"
        out = [
            f"profile: {profile.name} (BOUNDQ_INVARIANTS_PROFILE)",
            f"examples run: {sum(self.examples.values())} ({runs}); scenarios: {self.scenarios}",
            f"faults injected: {sum(self.faults.values())} ({faults})",
            f"jobs checked: {self.jobs_checked} in {self.checks} final checks; stale owners "
            f"told their lease was lost / write fenced: {self.fenced['lease_lost']} / "
            f"{self.fenced['write_fenced']}",
            f"cron: {self.ticks_checked} ticks of {self.schedules_checked} schedules checked "
            f"(one_job_per_tick)",
            f"chains: {self.chains_checked} follow-ups of echo jobs checked (exactly_once_chain)",
            f"violations: {sum(self.violations.values())}"
            + (f" ({', '.join(f'{k}={v}' for k, v in sorted(self.violations.items()))})"
               if self.violations else ""),
        ]
        for variant, found in sorted(self.detected.items()):
            also = sorted(self.incidental.get(variant, ()))
            out.append(f"broken variant {variant}: "
                       + (f"DETECTED ({', '.join(sorted(found))})" if found else "not detected")
                       + (f"; also seen: {', '.join(also)}" if also else ""))
        out += [f"failing history kept: {path}" for path in self.artifacts[:10]]
        return out


STATS = Stats()
