"""The change log behind GET /events (migration 0009): on or off, for the whole database.

Off by default: the log's rows cost a drain about 1.6x the database CPU per job, so only
a deployment that streams pays for it. `boundq events on` turns it on (what the log held
before goes, and every open stream and stale Last-Event-ID is told it missed changes);
`boundq events off` stops it (open streams stay open and carry nothing). GET /events
answers 409 `events_off` while it is off.
"""

from __future__ import annotations

from typing import Any

import psycopg

from boundq.core.queries import Q

Conn = psycopg.AsyncConnection[Any]


async def events_enabled(conn: Conn) -> bool:
    cur = await conn.execute(Q.job_events_enabled_get)
    row = await cur.fetchone()
    return bool(row and row[0])


async def switch_events(conn: Conn, on: bool) -> bool:
    """Turn the log on or off (a no-op when it already is); returns `on`. Waits for the
    writes in flight on jobs to end (the switch takes the table's share row exclusive
    lock), and holds the next ones back until it commits: an instant on a live system."""
    cur = await conn.execute(Q.job_events_switch, {"on": on})
    row = await cur.fetchone()
    return bool(row and row[0])
