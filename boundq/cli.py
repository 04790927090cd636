"""`boundq`: the command line, and the Makefile's engine.

Each command lives with what it runs: db, migrate, rollback, refresh, worker and enqueue
in boundq.core.cli; queues and kinds in boundq.core.flow_cli; serve in boundq.server.cli;
flood in boundq.loadtests.cli; report in boundq.reports.cli. Errors a user can fix (a bad
setting, no server binaries, an unreachable database) print one line and exit 2; no
traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from boundq.core import cli as core_cli
from boundq.core import flow_cli
from boundq.core.errors import BoundqError
from boundq.loadtests import cli as loadtests_cli
from boundq.reports import cli as reports_cli
from boundq.server import cli as server_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="boundq", description="A bounded, fenced job queue on PostgreSQL.")
    sub = parser.add_subparsers(dest="command", required=True)
    core_cli.register(sub)
    flow_cli.register(sub)
    server_cli.register(sub)
    loadtests_cli.register(sub)
    reports_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command == "report":
        args.rest = extra  # `boundq report` has its own options (reports/sweep.py)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        code: int = args.func(args)
    except BoundqError as exc:
        print(f"boundq: {exc}", file=sys.stderr)
        return 2
    except json.JSONDecodeError as exc:
        print(f"boundq: invalid JSON: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # psycopg.OperationalError is not one; handled below
        print(f"boundq: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        import psycopg

        if isinstance(exc, psycopg.OperationalError):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"boundq: cannot reach PostgreSQL: {first}", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
