"""Bearer-token auth: with API_TOKEN set, every mutating endpoint needs
`Authorization: Bearer <token>`. Reads stay open unless ApiOptions.protect_reads."""

from __future__ import annotations

import hashlib
import hmac

from starlette.requests import Request

from boundq.server.errors import ApiError

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="boundq"'}


def _digest(text: str) -> bytes:
    # Comparing fixed-size digests keeps the comparison constant-time in the length too.
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).digest()


class Authorizer:
    def __init__(self, token: str | None, protect_reads: bool) -> None:
        self._token = _digest(token) if token else None
        self.protect_reads = protect_reads

    def check(self, request: Request, *, write: bool) -> None:
        if self._token is None or not (write or self.protect_reads):
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        ok = hmac.compare_digest(_digest(given.strip()), self._token)
        if scheme.lower() != "bearer" or not ok:
            raise ApiError(401, "unauthorized",
                           "this endpoint needs the header Authorization: Bearer <API_TOKEN>",
                           headers=_CHALLENGE)
