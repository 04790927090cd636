"""Reads from a streaming replica while it is close behind the primary.

With REPLICA_DATABASE_URL set, `GET /jobs/{id}`, `GET /jobs` and `/stats` read through
`ReadRouter.read()`: from the replica's pool while the replica is in use, else from the
primary's. Writes never come here.

How far behind the replica is, measured without trusting any clock but this process's:
every half second the router notes the primary's WAL insert position P at time t (every
commit visible on the primary at t lies at or before P), then asks the replica how far it
has replayed (R). The newest sample with P <= R says the replica holds everything
committed before its t, so `now - t` bounds the replica's staleness from above (in steps
of the sampling interval). `now() - pg_last_xact_replay_timestamp()` is not used: on an
idle primary that timestamp stops moving and a caught-up replica would look ever later.

The replica is in use while that bound is at most REPLICA_MAX_LAG_SECONDS; past it, when
the replica cannot be reached, when it is not a standby, or before a first measurement,
reads go to the primary. A read that fails on the replica for any reason, or a job the
replica does not have (yet), is answered by the primary: a client that just created a job
reads it back. A replica connection that broke marks the replica down at once; the next
probe that reaches it again replaces its pool (as the primary's is after an outage).

/metrics: boundq_api_reads_total{pool}, boundq_api_replica_fallbacks_total{reason},
boundq_api_replica_lag_seconds (-1 while unknown) and boundq_api_replica_in_use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import psycopg
from psycopg_pool import PoolClosed, PoolTimeout, TooManyRequests

from boundq.core.db import Connection, conninfo
from boundq.core.errors import JobNotFound
from boundq.core.metrics import counter, gauge
from boundq.core.queries import Q
from boundq.server.errors import ApiError
from boundq.server.pool import ApiPool, Conn

log = logging.getLogger("boundq.api")

T = TypeVar("T")

PROBE_INTERVAL_S = 0.5
PROBE_TIMEOUT_S = 2.0
MIN_HISTORY_S = 10.0

# Why a read went to the primary although a replica is configured.
LAG, UNREACHABLE, NOT_STANDBY, UNMEASURED = "lag", "unreachable", "not_standby", "unmeasured"
NOT_FOUND, ERROR = "not_found", "error"
_BROKEN = (psycopg.OperationalError, psycopg.InterfaceError, PoolClosed)


class ReplicaReadFailed(ApiError):
    """A read on the replica failed; `read()` asks the primary instead. Raised out of
    `connection_for_read()` only, so a caller that does not fall back answers 503."""

    def __init__(self, reason: str, cause: BaseException) -> None:
        super().__init__(503, "replica_unavailable", f"the read replica failed: {cause}",
                         headers={"Retry-After": "1"})
        self.reason = reason


class LagMeter:
    """Samples of the primary's position over the last `keep_s` seconds; the staleness
    bound of a replica that replayed up to a position."""

    def __init__(self, keep_s: float) -> None:
        self.keep_s = keep_s
        self._samples: deque[tuple[float, int]] = deque()

    def add(self, at: float, position: int) -> None:
        self._samples.append((at, position))
        while self._samples and at - self._samples[0][0] > self.keep_s:
            self._samples.popleft()

    def lag(self, replayed: int, now: float) -> float | None:
        """`now` minus the time of the newest sample at or below `replayed`; None when no
        kept sample is (the replica is further behind than the history, or there is no
        history yet)."""
        for at, position in reversed(self._samples):
            if position <= replayed:
                return max(0.0, now - at)
        return None


class ReadRouter:
    def __init__(self, primary: ApiPool, replica: ApiPool | None, max_lag_s: float,
                 interval_s: float = PROBE_INTERVAL_S,
                 probe_timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self.primary = primary
        self.replica = replica
        self.max_lag_s = max_lag_s
        self.interval_s = interval_s
        self.probe_timeout_s = probe_timeout_s
        self.meter = LagMeter(max(4 * max_lag_s, MIN_HISTORY_S))
        self.in_use = False  # reads go to the replica
        self.lag_s: float | None = None
        self.why_not = UNMEASURED  # while not in use: the reason
        self.served: Counter[str] = Counter()  # reads by the pool that answered
        self.fallbacks: Counter[str] = Counter()  # reads the primary took, by reason
        self._pool_broken = False  # a replica connection broke: replace the pool
        self._probe: Connection | None = None
        self._wake = asyncio.Event()
        self._exported: dict[str, Counter[str]] = {"served": Counter(), "fallbacks": Counter()}

    @property
    def configured(self) -> bool:
        return self.replica is not None

    # --- reads ---------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def connection_for_read(self, replica: bool | None = None) -> AsyncIterator[Conn]:
        """The connection a read should use now: the replica's while it is in use (or as
        `replica` says). A failure on the replica marks it down when its connection broke
        and comes out as ReplicaReadFailed (a 503 unless the caller falls back)."""
        on_replica = self.in_use if replica is None else replica
        if not on_replica or self.replica is None:
            async with self.primary.connection() as conn:
                yield conn
            self.served["primary"] += 1
            return
        try:
            async with self.replica.connection() as conn:
                yield conn
        except JobNotFound:
            raise
        except _BROKEN as exc:
            self.mark_replica_down(exc)
            raise ReplicaReadFailed(UNREACHABLE, exc) from exc
        except Exception as exc:  # busy, a query cancelled by a conflict with recovery...
            raise ReplicaReadFailed(ERROR, exc) from exc
        self.served["replica"] += 1

    async def read(self, fn: Callable[[Conn], Awaitable[T]]) -> T:
        """fn(connection) on the replica while it is in use; on the primary otherwise, or
        when the replica failed or did not have the job."""
        if self.in_use:
            try:
                async with self.connection_for_read(replica=True) as conn:
                    return await fn(conn)
            except JobNotFound:
                self.fallbacks[NOT_FOUND] += 1
            except ReplicaReadFailed as failed:
                self.fallbacks[failed.reason] += 1
        elif self.configured:
            self.fallbacks[self.why_not] += 1
        async with self.connection_for_read(replica=False) as conn:
            return await fn(conn)

    def mark_replica_down(self, exc: BaseException) -> None:
        if self.in_use:
            log.warning("read replica unreachable, reads go to the primary: %s",
                        str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))
        self.in_use = False
        self.why_not = UNREACHABLE
        self._pool_broken = True
        self._wake.set()

    # --- measuring ------------------------------------------------------------------------
    async def _sample_primary(self) -> None:
        """Note the primary's position; a round without a sample only lets the bound grow."""
        at = time.monotonic()  # before the query: the position covers every commit until then
        try:
            async with asyncio.timeout(self.probe_timeout_s):
                async with self.primary.connection() as conn:
                    cur = await conn.execute(Q.replica_primary_position)
                    row = await cur.fetchone()
        except (psycopg.Error, PoolClosed, PoolTimeout, TooManyRequests, TimeoutError, OSError):
            return  # down, busy or slow: no sample this round
        if row is not None and row[0] is not None:
            self.meter.add(at, int(row[0]))

    async def _replay_position(self) -> tuple[bool, int | None]:
        """(is a standby, replayed position), on a connection of the probe's own: a busy
        replica pool must not read as a replica that is down."""
        assert self.replica is not None
        async with asyncio.timeout(self.probe_timeout_s):
            if self._probe is None or self._probe.closed:
                self._probe = await Connection.connect(
                    conninfo(self.replica.url, "api-replica-probe",
                             connect_timeout=max(1, int(self.probe_timeout_s))),
                    autocommit=True)
            cur = await self._probe.execute(Q.replica_replay_position)
            row = await cur.fetchone()
        if row is None:
            return False, None
        return bool(row[0]), None if row[1] is None else int(row[1])

    async def _close_probe(self) -> None:
        probe, self._probe = self._probe, None
        if probe is not None:
            with contextlib.suppress(Exception):
                await probe.close()

    def _set(self, in_use: bool, lag_s: float | None, why_not: str) -> None:
        if in_use != self.in_use:
            if in_use:
                log.info("read replica in use (lag %.2f s)", lag_s or 0.0)
            else:
                log.warning("reads go to the primary: replica %s (lag %s, limit %.1f s)",
                            why_not, "unknown" if lag_s is None else f"{lag_s:.2f} s",
                            self.max_lag_s)
        self.in_use, self.lag_s = in_use, lag_s
        if not in_use:
            self.why_not = why_not

    async def run_once(self) -> None:
        """One measurement: the primary's position, the replica's, and the decision."""
        if self.replica is None:
            return
        await self._sample_primary()
        try:
            standby, replayed = await self._replay_position()
        except (psycopg.Error, OSError, TimeoutError) as exc:
            await self._close_probe()
            self._pool_broken = True
            self._set(False, None, UNREACHABLE)
            log.debug("replica probe failed: %s", exc)
            return
        if not standby or replayed is None:
            self._set(False, None, NOT_STANDBY)
            return
        if self._pool_broken:
            await self.replica.replace()
            self._pool_broken = False
        lag = self.meter.lag(replayed, time.monotonic())
        if lag is None:
            self._set(False, None, UNMEASURED)
        else:
            self._set(lag <= self.max_lag_s, lag, LAG)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await self.run_once()
            except Exception:  # a bug here must not end the router's loop
                log.exception("read router: unexpected error")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await self._wake.wait()

    # --- lifecycle and metrics ---------------------------------------------------------------
    async def open(self) -> None:
        if self.replica is not None:
            await self.replica.open()
            await self.run_once()

    async def close(self) -> None:
        await self._close_probe()
        if self.replica is not None:
            await self.replica.close()

    def export(self) -> None:
        """Move the counts into prometheus-client (before a scrape)."""
        families = {
            "served": counter("boundq_api_reads", "reads (GET /jobs, /jobs/{id}, /stats) by "
                              "the pool that answered them", ("pool",)),
            "fallbacks": counter("boundq_api_replica_fallbacks", "reads the primary answered "
                                 "although a replica is configured, by reason", ("reason",)),
        }
        for name, family in families.items():
            counts: Counter[str] = getattr(self, name)
            sent = self._exported[name]
            for label, n in counts.items():
                if n != sent[label]:
                    family.labels(label).inc(n - sent[label])
                    sent[label] = n
        if self.configured:
            gauge("boundq_api_replica_lag_seconds", "upper bound of the read replica's "
                  "staleness (-1 while unknown)", "livemax").set(
                      -1 if self.lag_s is None else round(self.lag_s, 3))
            gauge("boundq_api_replica_in_use", "1 while reads go to the replica",
                  "livemin").set(int(self.in_use))
