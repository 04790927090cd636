"""Settings from the environment (and `.env`), validated once at start.

Every variable is documented in `.env.example`. A bad value raises `ConfigError`
whose message is one line naming the variable, so `boundq` can print it and exit.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from boundq.core.cpus import parse_cpu_list
from boundq.core.errors import ConfigError
from boundq.core.tokens import (
    TokenScopes,
    TokensInvalid,
    check_against_admin,
    describe_scopes,
    parse_api_tokens,
)


def read_dotenv(path: Path) -> dict[str, str]:
    """Parse KEY=VALUE lines; `#` comments and surrounding quotes are allowed."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


def _int(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return value

    return parse


def _float(lo: float, hi: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = float(text)
        if not lo <= value <= hi:  # also rejects nan
            raise ValueError(f"must be between {lo} and {hi}")
        return value

    return parse


def _choice(*options: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value

    return parse


def _text(text: str) -> str:
    return text


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _postgres_url(text: str) -> str:
    """A libpq URL or key=value string; checked for its form only (no connection)."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(text)
    except ProgrammingError:
        raise ValueError("must be a PostgreSQL connection URL (postgresql://...)") from None
    return text


def _queue_list(text: str) -> tuple[str, ...]:
    from boundq.core.errors import JobValidationError
    from boundq.core.validation import check_queue_name

    names = [part.strip() for part in text.split(",") if part.strip()]
    try:
        return tuple(dict.fromkeys(check_queue_name(name) for name in names))
    except JobValidationError as exc:
        raise ValueError(f"each queue name must be {exc.message.removeprefix('must be ')}"
                         ) from None


CLAIM_BATCH_FLOOR = 100
CLAIM_BATCH_AUTO_CAP = 1000


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str | None = None
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    num_workers: int = 3
    max_concurrent_jobs: int = 5
    worker_processes: int = 1
    max_db_connections: int = 0  # 0 = the pool formula, see pool_size
    api_pool_buffer: int = 7
    lease_seconds: float = 30.0
    heartbeat_seconds: float = 5.0
    default_max_attempts: int = 5
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 300.0
    max_bulk_bytes: int = 10 * 1024 * 1024
    max_queue_depth: int = 1_000_000
    api_token: str | None = None
    api_tokens: TokenScopes = ()  # API_TOKENS: (token, queues) pairs; ("*",) = all queues
    log_format: str = "text"
    log_level: str = "info"
    reap_interval_seconds: float = 1.0
    poll_interval_seconds: float = 1.0
    shutdown_grace_seconds: float = 10.0
    claim_batch_max: int = 0  # 0 = automatic, see claim_batch
    handler_modules: str = ""
    retention_seconds: float | None = None  # success and cancelled jobs; None = forever
    failed_retention_seconds: float | None = None  # dead letters; None = forever
    queues: tuple[str, ...] = ()  # serve only these queues; () = all
    api_nice: int = 10  # `boundq serve`: the API process's lower CPU priority
    api_cpus: str = "all"  # `boundq serve`: the API process's CPUs (core/cpus.py; make run: auto)
    api_group_commit: bool = True  # concurrent single creates share one INSERT
    api_shed_lag_seconds: float = 0.05  # creates get 429 while the API's loop is this late
    metrics_port: int = 0  # `boundq worker` and `boundq serve`: /metrics here (0 = off)
    replica_database_url: str | None = None  # reads of the API go here when set
    replica_max_lag_seconds: float = 5.0  # past this, reads go to the primary
    events_retention_seconds: float = 600.0  # GET /events: how long changes stay resumable
    events_poll_seconds: float = 0.25  # how often an API process reads them while streaming
    events_max_clients: int = 1000  # event streams one API process holds at once
    events_client_buffer: int = 1000  # changes queued per stream before it is dropped
    claim_floor_pin_seconds: float = 5.0  # a snapshot this old: claims start at floors
    claim_floor_margin_seconds: float = 1.0  # floors stay this far below the last row taken
    claim_floor_rescan_seconds: float = 1.0  # while floored, a full walk this often
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def pool_formula(self) -> int:
        """The seed's formula: one connection per acquirer and per permit, plus API room."""
        return self.num_workers + self.max_concurrent_jobs + self.api_pool_buffer

    @property
    def claim_batch(self) -> int:
        """Most jobs one claim statement takes. By default an acquirer's share of the
        permits, but at least 100 (all of them when there are fewer). Per-statement cost
        dominates small claims: a drain at 500 permits went from ~13.6k to ~17-20k jobs/s
        when 3 acquirers claimed 167 rather than 100, and at the seed's 5 permits claims of
        5 beat claims of 2 (~1.1k vs ~0.87k jobs/s). Claims much larger than a share starve
        the other acquirers (250 each at 500 permits: ~13.8k)."""
        share = -(-self.max_concurrent_jobs // self.num_workers)
        floor = min(self.max_concurrent_jobs, CLAIM_BATCH_FLOOR)
        return self.claim_batch_max or min(CLAIM_BATCH_AUTO_CAP, max(share, floor))

    @property
    def db_connections(self) -> int:
        """Connections one process may open in all (pool + its LISTEN connection)."""
        return self.max_db_connections or self.pool_formula

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)


# variable name -> (field, parser); the parsers raise ValueError with a reason.
_VARIABLES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "DATABASE_URL": ("database_url", _text),
    "HTTP_HOST": ("http_host", _text),
    "HTTP_PORT": ("http_port", _int(0, 65535)),
    "NUM_WORKERS": ("num_workers", _int(1, 256)),
    "MAX_CONCURRENT_JOBS": ("max_concurrent_jobs", _int(1, 100_000)),
    "WORKER_PROCESSES": ("worker_processes", _int(1, 256)),
    "MAX_DB_CONNECTIONS": ("max_db_connections", _int(3, 10_000)),
    "API_POOL_BUFFER": ("api_pool_buffer", _int(0, 10_000)),
    "LEASE_SECONDS": ("lease_seconds", _float(0.2, 86_400)),
    "HEARTBEAT_SECONDS": ("heartbeat_seconds", _float(0.05, 3_600)),
    "DEFAULT_MAX_ATTEMPTS": ("default_max_attempts", _int(1, 1000)),
    "RETRY_BASE_SECONDS": ("retry_base_seconds", _float(0, 86_400)),
    "RETRY_MAX_SECONDS": ("retry_max_seconds", _float(0, 30 * 86_400)),
    "MAX_BULK_BYTES": ("max_bulk_bytes", _int(1024, 1024**3)),
    "MAX_QUEUE_DEPTH": ("max_queue_depth", _int(1, 10**12)),
    "API_TOKEN": ("api_token", _text),
    "API_TOKENS": ("api_tokens", parse_api_tokens),
    "LOG_FORMAT": ("log_format", _choice("json", "text")),
    "LOG_LEVEL": ("log_level", _choice("debug", "info", "warning", "error")),
    "REAP_INTERVAL_SECONDS": ("reap_interval_seconds", _float(0.05, 3_600)),
    "POLL_INTERVAL_SECONDS": ("poll_interval_seconds", _float(0.01, 3_600)),
    "SHUTDOWN_GRACE_SECONDS": ("shutdown_grace_seconds", _float(0, 86_400)),
    "CLAIM_BATCH_MAX": ("claim_batch_max", _int(0, 10_000)),
    "BOUNDQ_HANDLERS": ("handler_modules", _text),
    "RETENTION_SECONDS": ("retention_seconds", _float(1, 100 * 365 * 86_400)),
    "FAILED_RETENTION_SECONDS": ("failed_retention_seconds", _float(1, 100 * 365 * 86_400)),
    "QUEUES": ("queues", _queue_list),
    "API_NICE": ("api_nice", _int(0, 19)),
    "API_CPUS": ("api_cpus", parse_cpu_list),
    "API_GROUP_COMMIT": ("api_group_commit", _bool),
    "API_SHED_LAG_SECONDS": ("api_shed_lag_seconds", _float(0.001, 86_400)),
    "METRICS_PORT": ("metrics_port", _int(0, 65535)),
    "REPLICA_DATABASE_URL": ("replica_database_url", _postgres_url),
    "REPLICA_MAX_LAG_SECONDS": ("replica_max_lag_seconds", _float(1, 86_400)),
    "EVENTS_RETENTION_SECONDS": ("events_retention_seconds", _float(10, 30 * 86_400)),
    "EVENTS_POLL_SECONDS": ("events_poll_seconds", _float(0.01, 60)),
    "EVENTS_MAX_CLIENTS": ("events_max_clients", _int(1, 1_000_000)),
    "EVENTS_CLIENT_BUFFER": ("events_client_buffer", _int(1, 1_000_000)),
    "CLAIM_FLOOR_PIN_SECONDS": ("claim_floor_pin_seconds", _float(0.1, 86_400)),
    "CLAIM_FLOOR_MARGIN_SECONDS": ("claim_floor_margin_seconds", _float(0, 3_600)),
    "CLAIM_FLOOR_RESCAN_SECONDS": ("claim_floor_rescan_seconds", _float(0.01, 3_600)),
}

ENV_VARIABLES = tuple(_VARIABLES)
# Never repeated in an error message: the value is a secret.
_SECRETS = frozenset({"API_TOKEN", "API_TOKENS"})


def load_settings(
    environ: Mapping[str, str] | None = None, dotenv: Path | None = Path(".env")
) -> Settings:
    """Build Settings; real environment variables win over `.env`."""
    merged: dict[str, str] = read_dotenv(dotenv) if dotenv is not None else {}
    merged.update(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    for name, (attr, parse) in _VARIABLES.items():
        raw = merged.get(name)
        if raw is None or raw.strip() == "":
            continue
        try:
            values[attr] = parse(raw.strip())
        except ValueError as exc:
            reason = str(exc) if "must" in str(exc) else "is not a valid number"
            shown = name if name in _SECRETS else f"{name}={raw!r}"
            raise ConfigError(f"{shown}: {reason}") from None
    settings = Settings(**values)
    return validate(settings)


def validate(settings: Settings) -> Settings:
    """Cross-field rules that single parsers cannot see."""
    # A third leaves room for two missed beats before the lease runs out (PgQueuer #430).
    if settings.heartbeat_seconds * 3 > settings.lease_seconds + 1e-9:
        raise ConfigError(
            f"HEARTBEAT_SECONDS={settings.heartbeat_seconds}: must be at most a third of "
            f"LEASE_SECONDS={settings.lease_seconds} so a lease survives two missed beats"
        )
    if settings.retry_max_seconds < settings.retry_base_seconds:
        raise ConfigError(
            f"RETRY_MAX_SECONDS={settings.retry_max_seconds}: must be at least "
            f"RETRY_BASE_SECONDS={settings.retry_base_seconds}"
        )
    if settings.max_db_connections and settings.max_db_connections < 3:
        raise ConfigError("MAX_DB_CONNECTIONS: must be at least 3")
    try:
        check_against_admin(settings.api_tokens, settings.api_token)
    except TokensInvalid as exc:
        raise ConfigError(f"API_TOKENS: {exc}") from None
    return settings


def describe(settings: Settings) -> dict[str, Any]:
    """Settings as a plain dict for logs and reports, with the token hidden."""
    out = {f.name: getattr(settings, f.name) for f in fields(settings) if f.name != "extra"}
    if out.get("api_token"):
        out["api_token"] = "***"
    out["api_tokens"] = describe_scopes(settings.api_tokens)
    out["db_connections"] = settings.db_connections
    return out
