"""Named SQL blocks from the files of core/sql (queries.sql: the jobs' statements;
stats.sql: what /stats and the dashboard read), loaded once.

A block starts with `-- name: <name>`; the comment lines that follow are its doc and
are kept in the text (PostgreSQL ignores them). `Q.job_claim` is the text of that block;
an unknown name fails at import, not at the first call in production.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import LiteralString

_NAME = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$")


def parse_blocks(text: str) -> dict[str, LiteralString]:
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        match = _NAME.match(line.strip())
        if match:
            name = match[1]
            if name in blocks:
                raise ValueError(f"duplicate SQL block name: {name}")
            current = blocks[name] = []
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines).strip() for name, lines in blocks.items()}


class _Queries:
    """Attribute access to the blocks; typed LiteralString for psycopg's query checks."""

    # The blocks come from a file in the package, never from input: they are literal SQL.
    def __init__(self, blocks: dict[str, LiteralString]) -> None:
        self._blocks = blocks

    def __getattr__(self, name: str) -> LiteralString:
        try:
            return self._blocks[name]
        except KeyError:
            raise AttributeError(f"no SQL block named {name!r}") from None

    def names(self) -> list[str]:
        return sorted(self._blocks)

    def text(self, name: str) -> LiteralString:
        return self._blocks[name]


def load_blocks() -> dict[str, LiteralString]:
    """Every block of every .sql file in core/sql; a name used twice fails at import."""
    blocks: dict[str, LiteralString] = {}
    for entry in sorted(resources.files("boundq.core.sql").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".sql"):
            for name, text in parse_blocks(entry.read_text("utf-8")).items():
                if name in blocks:
                    raise ValueError(f"duplicate SQL block name: {name} ({entry.name})")
                blocks[name] = text
    return blocks


Q = _Queries(load_blocks())
