"""`boundq queues` and `boundq kinds`: the flow settings from the command line, straight to
the database (DATABASE_URL), with the same rules and answers as PUT/GET /queues and /kinds.

    boundq queues                       every queue, as JSON lines
    boundq queues NAME                  one queue
    boundq queues NAME --concurrency 5 --rate 10 --burst 20 --weight 3 --pause
    boundq kinds NAME --rate 2          (kinds take the same flags but --weight)

`set` changes only the flags given (the rest keep their saved values); `none` clears a
limit: `--concurrency none`.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from boundq.core import flow
from boundq.core.cli import database_url, run, settings_from
from boundq.core.errors import BoundqError


def _limit(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float | None:
        if text.lower() in ("none", "null", "off"):
            return None
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number or 'none': {text!r}") from None
    return parse


def _changes(args: argparse.Namespace, weighted: bool) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for flag, field in (("concurrency", "concurrency"), ("rate", "rate_per_s"),
                        ("burst", "burst"), ("weight", "weight")):
        value = getattr(args, flag, argparse.SUPPRESS)
        if value is not argparse.SUPPRESS and (weighted or field != "weight"):
            changes[field] = value
    if args.pause is not None:
        changes["paused"] = args.pause
    return changes


def cmd_flow(args: argparse.Namespace) -> int:
    import psycopg

    from boundq.core.migrate import migrate

    weighted = args.command == "queues"
    changes = _changes(args, weighted)
    if changes and not args.name:
        raise BoundqError(f"name the {args.command[:-1]} to change")

    async def go() -> list[dict[str, Any]]:
        url = database_url(settings_from(args))
        await migrate(url)
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            listing = flow.list_queues if weighted else flow.list_kinds
            if not changes:
                return await listing(conn, args.name)
            name = args.name
            current = (await listing(conn, name))[0]
            body = {f: current[f] for f in flow.FIELDS if f in current} | changes
            if not weighted:
                body.pop("weight", None)
            settings = flow.parse_settings(body, weighted=weighted)
            put = flow.put_queue if weighted else flow.put_kind
            row, _ = await put(conn, name, settings)
            return [row]

    for row in run(go()):
        print(json.dumps(row, default=lambda v: v.isoformat()))
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for plural, weighted in (("queues", True), ("kinds", False)):
        p = sub.add_parser(plural, help=f"show or set the limits of {plural} (flow control)",
                           argument_default=argparse.SUPPRESS)
        p.add_argument("name", nargs="?", default=None, help=f"the {plural[:-1]}; none: list all")
        p.add_argument("--concurrency", type=_limit(int),
                       help="jobs processing at once across every host ('none': no limit)")
        p.add_argument("--rate", type=_limit(float),
                       help="jobs started per second, token bucket ('none': no limit)")
        p.add_argument("--burst", type=int, help="token bucket size (default 1)")
        if weighted:
            p.add_argument("--weight", type=int, help="share of the workers, 1-100")
        pause = p.add_mutually_exclusive_group()
        pause.add_argument("--pause", dest="pause", action="store_const", const=True,
                           default=None, help="claim nothing from it")
        pause.add_argument("--resume", dest="pause", action="store_const", const=False)
        p.set_defaults(func=cmd_flow)
