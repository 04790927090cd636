"""Long-running consumers of `sleep` jobs for the peers, the counterpart of `boundq
worker` in the predictability sweep: each runs `concurrency` jobs at a time until
SIGTERM, with its queue's recommended setup (reports/peers.py).

  pgqueuer       one QueueManager (asyncpg, its own connection), entrypoint `sleep` with
                 concurrency_limit=C (enforced by its dequeue query), batch size C,
                 continuous mode (LISTEN/NOTIFY)
  procrastinate  the psycopg connector, a worker with concurrency=C on queue `bench`,
                 LISTEN/NOTIFY on

A job sleeps payload["ms"] milliseconds, as boundq's built-in `sleep` kind does.

    python -m boundq.reports.peer_consumers {pgqueuer|procrastinate} URL --concurrency 5
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import IO

from boundq.core.children import child_env
from boundq.reports.peers import consume_pgqueuer, consume_procrastinate

SYSTEMS = ("pgqueuer", "procrastinate")


@contextlib.contextmanager
def consumer_process(system: str, url: str, concurrency: int,
                     stderr: IO[bytes] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """This module as a child process; stopped with SIGTERM (then SIGKILL) on the way out."""
    argv = [sys.executable, "-m", "boundq.reports.peer_consumers", system, url,
            "--concurrency", str(concurrency)]
    proc = subprocess.Popen(argv, env=child_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=stderr if stderr is not None else subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def main(argv: list[str] | None = None) -> int:
    import uvloop

    p = argparse.ArgumentParser(prog="python -m boundq.reports.peer_consumers")
    p.add_argument("system", choices=SYSTEMS)
    p.add_argument("url")
    p.add_argument("--concurrency", type=int, default=5)
    args = p.parse_args(argv)
    run = consume_pgqueuer if args.system == "pgqueuer" else consume_procrastinate
    uvloop.run(run(args.url, args.concurrency))
    return 0


if __name__ == "__main__":
    sys.exit(main())
