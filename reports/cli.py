"""The reports' command: `boundq report` (benchmark sweeps, figures and a summary; needs
the `report` extra, and `peers` for PgQueuer and procrastinate)."""

from __future__ import annotations

import argparse
import sys


def cmd_report(args: argparse.Namespace) -> int:
    try:
        from boundq.reports import sweep
    except ImportError as exc:
        print(f"boundq report: {exc}; install the extras: pip install 'boundq[report,peers]' "
              "(make report does)", file=sys.stderr)
        return 2
    return sweep.main(args.rest)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rep = sub.add_parser("report", help="benchmark sweeps, figures and a summary (options: "
                         "boundq report --help)", add_help=False)
    rep.set_defaults(func=cmd_report, rest=[])
