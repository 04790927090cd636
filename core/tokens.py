"""API_TOKENS: bearer tokens scoped to queues, parsed and checked once at start.

The value is a JSON object mapping a token to the queues it may use, `"*"` meaning all:

    API_TOKENS='{"tok-a": ["a"], "tok-b": ["b", "shared"], "ops": ["*"]}'

Errors name an entry by its position (`token #2`) and never repeat a token: the message
ends up in logs and on terminals.
"""

from __future__ import annotations

import json
from typing import Any

ALL_QUEUES = "*"
MAX_TOKEN = 1000

# (token, queues) per entry, in the order given; queues == ("*",) for an all-queues token.
TokenScopes = tuple[tuple[str, tuple[str, ...]], ...]


class TokensInvalid(ValueError):
    """One line saying what is wrong, without the secret."""


class _Object(list[tuple[str, Any]]):
    """A JSON object as its (key, value) pairs: json.loads would keep the last of two
    equal keys without a word."""


def _json_type(value: Any) -> str:
    if isinstance(value, _Object):
        return "an object"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "null"


def _check_token(position: int, token: str, seen: dict[str, int]) -> None:
    where = f"token #{position}"
    if not token:
        raise TokensInvalid(f"{where} is empty: each token must be 1..{MAX_TOKEN} visible "
                            "ASCII characters")
    if len(token) > MAX_TOKEN or not all("!" <= ch <= "~" for ch in token):
        raise TokensInvalid(f"{where} must be 1..{MAX_TOKEN} visible ASCII characters "
                            "(no spaces or control characters)")
    if token in seen:
        raise TokensInvalid(f"{where} must differ from token #{seen[token]}: it is the same")
    seen[token] = position


def _check_queues(position: int, value: Any) -> tuple[str, ...]:
    from boundq.core.errors import JobValidationError
    from boundq.core.validation import QUEUE_RULE, check_queue_name

    where = f"token #{position}"
    if not isinstance(value, list) or isinstance(value, _Object):
        raise TokensInvalid(f"{where} must map to a list of queue names, not "
                            f"{_json_type(value)}")
    if not value:
        raise TokensInvalid(f"{where} must list at least one queue (or \"*\" for all)")
    if ALL_QUEUES in value:
        if len(value) > 1:
            raise TokensInvalid(f"{where} must list \"*\" alone: it already means every queue")
        return (ALL_QUEUES,)
    for name in value:
        try:
            check_queue_name(name)
        except JobValidationError:
            shown = json.dumps(name)[:120]
            raise TokensInvalid(f"{where}: queue {shown} must be {QUEUE_RULE}, "
                                "or \"*\" for all") from None
    return tuple(dict.fromkeys(value))


def parse_api_tokens(text: str) -> TokenScopes:
    """The variable's value -> ((token, queues), ...); raises TokensInvalid."""
    try:
        decoded = json.loads(text, object_pairs_hook=_Object)
    except json.JSONDecodeError as exc:
        raise TokensInvalid(f"must be a JSON object mapping tokens to lists of queue names "
                            f"(invalid JSON at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(decoded, _Object):
        raise TokensInvalid(f"must be a JSON object mapping tokens to lists of queue names, "
                            f'e.g. {{"tok-a": ["a"], "ops": ["*"]}}, not {_json_type(decoded)}')
    seen: dict[str, int] = {}
    scopes: list[tuple[str, tuple[str, ...]]] = []
    for position, (token, queues) in enumerate(decoded, start=1):
        _check_token(position, token, seen)
        scopes.append((token, _check_queues(position, queues)))
    return tuple(scopes)


def check_against_admin(scopes: TokenScopes, admin_token: str | None) -> None:
    """API_TOKEN is the all-queues token: the same string cannot also be a narrower one
    (which scope would a request carrying it get?)."""
    for position, (token, queues) in enumerate(scopes, start=1):
        if admin_token is not None and token == admin_token and queues != (ALL_QUEUES,):
            raise TokensInvalid(f"token #{position} must differ from API_TOKEN, which may use "
                                "every queue: give it [\"*\"] or another token")


def describe_scopes(scopes: TokenScopes) -> list[list[str]]:
    """The scopes without the tokens, for logs."""
    return [list(queues) for _, queues in scopes]
