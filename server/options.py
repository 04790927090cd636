"""Limits of the HTTP layer. The defaults suit `boundq serve`; tests shrink them."""

from __future__ import annotations

from dataclasses import dataclass, field

from boundq.server.events import EventSettings
from boundq.server.waits import WaitSettings


@dataclass(frozen=True, slots=True)
class ApiOptions:
    pool_size: int | None = None  # None: API_POOL_BUFFER (at least 2)
    pool_wait_s: float = 1.0  # a request waits this long for a connection, then 503
    pool_max_waiting: int = 1024  # more requests than this queued for a connection: 503 now
    body_timeout_s: float = 10.0  # a single create's body must arrive within this
    bulk_body_timeout_s: float = 60.0
    depth_refresh_s: float = 1.0  # how stale the cached waiting count (and readiness) may be
    probe_interval_s: float = 0.5  # while the database is down: how often to try it
    stats_cache_s: float = 1.0
    max_multipart_parts: int = 8
    group_commit: bool = True  # concurrent single creates share one INSERT statement
    group_flushers: int | None = None  # statements in flight at once; None: 2 (see batcher)
    group_max_batch: int = 256
    group_max_pending: int = 10_000
    protect_reads: bool = False  # with API_TOKEN: also require it on GET endpoints
    page_max: int = 500
    list_scan_max: int = 10_000  # a filtered GET /jobs page reads at most this many rows
    retry_after_s: int = 1
    # The door (server/admission.py): creates in flight beyond this are refused at once
    # (429), and while the event loop runs late by more than shed_lag_s, creates are
    # refused and other work waits its turn.
    max_creates_in_flight: int = 512
    shed_lag_s: float = 0.05
    waits: WaitSettings = field(default_factory=WaitSettings)  # GET /jobs/{id}?wait=S
    events: EventSettings = field(default_factory=EventSettings)  # GET /events
