"""The flood runner's named SQL blocks (loadtests/sql/*.sql), loaded once, in the same
form as the core's (core/queries.py): `FQ.flow_pickup` is the text of that block."""

from __future__ import annotations

from importlib import resources
from typing import LiteralString

from boundq.core.queries import _Queries, parse_blocks


def _load() -> dict[str, LiteralString]:
    blocks: dict[str, LiteralString] = {}
    for entry in sorted(resources.files("boundq.loadtests.sql").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            blocks.update(parse_blocks(entry.read_text("utf-8")))
    return blocks


FQ = _Queries(_load())
