"""Flow settings a drain runs under (`python -m boundq.reports.drain --flow ...`), set with
`boundq queues` / `boundq kinds` on the fresh database before the worker starts:

  none      no settings: every claim is the cycle's one statement
  queue     a concurrency limit on an unrelated, empty queue: the cycle's statement must
            leave that queue out (the fast path with a limited queue beside it)
  kind      a rate limit on an unrelated kind: while a kind has a limit every queue is
            claimed by boundq_claim_limited (the limited path, with nothing to hold back)
  generous  a concurrency limit on the drained queue far above the permits: the limited
            path on the queue itself, never binding
"""

from __future__ import annotations

import subprocess
import sys

from boundq.core.children import child_env

FLOW_VARIANTS: dict[str, list[tuple[str, str, list[str]]]] = {
    "none": [],
    "queue": [("queues", "unrelated", ["--concurrency", "5"])],
    "kind": [("kinds", "unrelated-kind", ["--rate", "1000", "--burst", "1000"])],
    "generous": [("queues", "default", ["--concurrency", "100000"])],
}


def apply_flow(url: str, variant: str) -> None:
    env = child_env({"DATABASE_URL": url})
    for command, name, flags in FLOW_VARIANTS[variant]:
        subprocess.run([sys.executable, "-m", "boundq", command, name, *flags], env=env,
                       check=True, capture_output=True, timeout=60)
