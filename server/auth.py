"""Bearer tokens and the queues they may use: the one place a request becomes a Scope.

- API_TOKEN is the single admin token: every queue, every endpoint.
- API_TOKENS maps more tokens to their queues (`"*"` = all, like API_TOKEN).
- Writes need a token as soon as any token is configured. Reads stay open (as every
  queue) unless ApiOptions.protect_reads, or unless a token with fewer than all queues
  exists: an open read would show every tenant's jobs, so then reads need a token too.
- Nothing configured: everything is open, as every queue.

Every route calls `Authorizer.check(request, write=..., admin=...)` and acts within the
Scope it returns: jobs of other queues answer exactly as jobs that do not exist.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from starlette.requests import Request

from boundq.core.config import Settings
from boundq.core.tokens import ALL_QUEUES
from boundq.server.errors import ApiError

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="boundq"'}


def _digest(text: str) -> bytes:
    # Comparing fixed-size digests keeps the comparison constant-time in the length too.
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True, slots=True)
class Scope:
    """The queues a caller may use; `queues is None` = every queue."""

    queues: frozenset[str] | None = None

    @property
    def everything(self) -> bool:
        return self.queues is None

    def allows(self, queue: str) -> bool:
        return self.queues is None or queue in self.queues

    def queue_list(self) -> list[str] | None:
        """For SQL `queue = ANY(%(queues)s::text[])`; None = every queue (no filter)."""
        return None if self.queues is None else sorted(self.queues)

    def require_queue(self, queue: str) -> None:
        """A create into a queue outside the scope: 403 naming the field. A create reveals
        no existing job, so it may say why it is refused."""
        if not self.allows(queue):
            raise ApiError(403, "forbidden", f"this token may not use queue {queue!r}",
                           "queue")


ALL = Scope()


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    """What a configuration asks of callers (also what /openapi.json declares)."""

    writes_need_token: bool
    reads_need_token: bool
    scoped: bool  # some token may use fewer than all queues

    @classmethod
    def of(cls, settings: Settings, protect_reads: bool) -> AuthPolicy:
        any_token = bool(settings.api_token) or bool(settings.api_tokens)
        scoped = any(queues != (ALL_QUEUES,) for _, queues in settings.api_tokens)
        return cls(writes_need_token=any_token,
                   reads_need_token=any_token and (protect_reads or scoped),
                   scoped=scoped)


class Authorizer:
    def __init__(self, settings: Settings, protect_reads: bool) -> None:
        self.policy = AuthPolicy.of(settings, protect_reads)
        entries: list[tuple[bytes, Scope]] = []
        if settings.api_token:
            entries.append((_digest(settings.api_token), ALL))
        for token, queues in settings.api_tokens:
            scope = ALL if queues == (ALL_QUEUES,) else Scope(frozenset(queues))
            entries.append((_digest(token), scope))
        self._entries = tuple(entries)
        self._known = frozenset(digest for digest, _ in entries)
        self._queues_of = {digest: scope.queues for digest, scope in entries}

    def caller(self, authorization: bytes | None) -> bytes | None:
        """Who the door counts creates in flight for (server/fairshare.py): the digest of
        a configured token; None for everything else (no token, a wrong one, or nothing
        configured), so the callers counted are at most the tokens plus one. Not an
        authorization: the route still checks the token. A set lookup by digest is fine
        here: its timing says nothing usable about a token."""
        if not self._known or authorization is None:
            return None
        scheme, _, given = authorization.decode("latin-1").partition(" ")
        if scheme.lower() != "bearer":
            return None
        digest = _digest(given.strip())
        return digest if digest in self._known else None

    def queues_of(self, caller: object) -> frozenset[str] | None:
        """The queues a caller (from `caller`) may write; None: any queue, or unknown."""
        return self._queues_of.get(caller) if isinstance(caller, bytes) else None

    def may_create(self, caller: object) -> bool:
        """Whether the route's token check lets this caller create: a configured token, or
        no token needed for writes."""
        return isinstance(caller, bytes) or not self.policy.writes_need_token

    def check(self, request: Request, *, write: bool, admin: bool = False) -> Scope:
        """The caller's Scope, or 401 (no or a wrong token where one is needed), or 403
        (`admin`: an endpoint about every queue, for a token of fewer queues)."""
        needed = self.policy.writes_need_token if write else self.policy.reads_need_token
        scope = self._scope_of(request) if needed else ALL
        if scope is None:
            raise ApiError(401, "unauthorized",
                           "this endpoint needs the header Authorization: Bearer <token>",
                           headers=_CHALLENGE)
        if admin and not scope.everything:
            raise ApiError(403, "forbidden", "this endpoint is about every queue: it needs "
                           "API_TOKEN or a token of API_TOKENS with [\"*\"]")
        return scope

    def _scope_of(self, request: Request) -> Scope | None:
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        presented = _digest(given.strip())
        found: Scope | None = None
        for digest, scope in self._entries:  # every entry, whichever matches: no early exit
            if hmac.compare_digest(presented, digest):
                found = scope
        return found if scheme.lower() == "bearer" else None
