"""Job kinds: the registry, the decorator users register with, and the built-in kinds.

A handler is `async def handler(job: JobContext) -> None`. Returning is success; raising
is a recorded failure (retried with backoff until max_attempts). A handler may give a
payload validator so bad payloads are refused at enqueue, before anything is written.

    from boundq.core.handlers import handler

    @handler("send_email", validate=lambda p: require_keys(p, "to"))
    async def send_email(job: JobContext) -> None: ...

A handler may create follow-up jobs with `job.enqueue(name, kind=..., payload=...,
**fields)` (the fields of `POST /jobs`). Each is validated at the call, as `POST /jobs`
validates (a bad one raises JobValidationError there, which fails the attempt unless the
handler catches it), and they are written with the attempt's success, in the same fenced
statement: they exist if and only if the success commits (docs/workflows.md, chaining).

Modules holding handlers are imported from BOUNDQ_HANDLERS (comma-separated import paths)
or `--handlers` on the command line.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import psycopg

from boundq.core.errors import JobValidationError

if TYPE_CHECKING:
    from boundq.core.validation import JobSpec

Connect = Callable[[], AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]]
# Validates one job given as the fields of a `POST /jobs` body (core/validation.py).
MakeJob = Callable[[Mapping[str, Any]], "JobSpec"]
# Most follow-up jobs one attempt may create.
MAX_FOLLOWUPS = 100


@dataclass(slots=True)
class JobContext:
    """What a handler sees of its job. Holds no connection while the handler runs unless
    it asks for one (`async with job.connection() as conn`), from a small pool the worker
    opens on first use. The times are the database's: when the job was created, when it
    was due (run_at), and when this attempt claimed it."""

    id: int
    attempt: int
    kind: str
    payload: Any
    owner: str
    queue: str = "default"
    created_at: datetime | None = None
    run_at: datetime | None = None
    claimed_at: datetime | None = None
    timeout_s: float | None = None  # the job's own timeout per attempt, if it has one
    connect: Connect | None = field(default=None, repr=False)
    make_job: MakeJob | None = field(default=None, repr=False)
    # The follow-up jobs this attempt created (enqueue), written with its success.
    followups: list[JobSpec] = field(default_factory=list)

    def enqueue(self, name: str, *, kind: str = "noop",
                payload: Mapping[str, Any] | None = None, **fields: Any) -> None:
        """Create a follow-up job (fields as in `POST /jobs`: queue, priority, run_at, delay,
        max_attempts, timeout, dedupe_key). Validated now: a bad one raises
        JobValidationError naming `followup.<field>`. Nothing is written yet: the
        follow-ups go into the statement that writes this attempt's success, so they exist
        if and only if that success commits (never from a fenced attempt, once after a
        lost answer). A follow-up whose dedupe_key a live job holds is skipped."""
        if self.make_job is None:
            raise RuntimeError("this job's worker takes no follow-up jobs")
        if len(self.followups) >= MAX_FOLLOWUPS:
            raise JobValidationError("followup", f"at most {MAX_FOLLOWUPS} follow-up jobs per "
                                                 f"attempt")
        item = {"name": name, "kind": kind, "payload": {} if payload is None else payload,
                **fields}
        try:
            spec = self.make_job(item)
        except JobValidationError as exc:
            raise JobValidationError(f"followup.{exc.field}", exc.message) from None
        self.followups.append(spec)

    def connection(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]:
        """A database connection for the block (autocommit; returned to the pool after)."""
        if self.connect is None:
            raise RuntimeError("this job's worker gives its handlers no database connections")
        return self.connect()


HandlerFn = Callable[[JobContext], Awaitable[Any]]
PayloadValidator = Callable[[Any], object]  # raises JobValidationError; result ignored


@dataclass(frozen=True, slots=True)
class Handler:
    kind: str
    run: HandlerFn
    validate: PayloadValidator | None = None


class PermanentJobError(Exception):
    """Raise from a handler to dead-letter the job now, without further retries."""


@dataclass
class Registry:
    handlers: dict[str, Handler] = field(default_factory=dict)

    def register(self, kind: str, run: HandlerFn, validate: PayloadValidator | None = None) -> None:
        if not kind or len(kind) > 100:
            raise ValueError("a job kind is 1..100 characters")
        self.handlers[kind] = Handler(kind, run, validate)

    def handler(
        self, kind: str, validate: PayloadValidator | None = None
    ) -> Callable[[HandlerFn], HandlerFn]:
        def decorate(run: HandlerFn) -> HandlerFn:
            self.register(kind, run, validate)
            return run

        return decorate

    def get(self, kind: str) -> Handler | None:
        return self.handlers.get(kind)

    def kinds(self) -> list[str]:
        return sorted(self.handlers)

    def check_payload(self, kind: str, payload: Any) -> None:
        found = self.handlers.get(kind)
        if found is None:
            known = ", ".join(self.kinds())
            raise JobValidationError("kind", f"unknown job kind {kind!r}; known kinds: {known}")
        if found.validate is not None:
            found.validate(payload)


def _int_field(payload: Any, key: str, lo: int, hi: int, required: bool = True) -> int:
    if not isinstance(payload, Mapping):
        raise JobValidationError("payload", "must be a JSON object")
    value = payload.get(key)
    if value is None and not required:
        return lo
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise JobValidationError(f"payload.{key}", f"must be an integer between {lo} and {hi}")
    return value


# --- built-in kinds -----------------------------------------------------------------------
async def _noop(job: JobContext) -> None:
    return None


async def _sleep(job: JobContext) -> None:
    await asyncio.sleep(int(job.payload.get("ms", 0)) / 1000)


async def _cpu(job: JobContext) -> int:
    # Deliberately on the event loop: it is the CPU-bound job (and the stall scenario).
    n = int(job.payload.get("n", 0))
    total = 0
    for i in range(n):
        total += i * i
    return total


async def _fail(job: JobContext) -> None:
    times = int(job.payload.get("times", 1)) if isinstance(job.payload, Mapping) else 1
    if job.attempt <= times:
        raise RuntimeError(f"fail kind: attempt {job.attempt} of {times} planned failures")


async def _echo(job: JobContext) -> Any:
    """{value, then?}: returns `value` as the result; `then` (a job: the fields of
    `POST /jobs`, `name` optional) becomes a follow-up written with the success."""
    then = job.payload.get("then")
    if then is not None:
        fields = dict(then)
        name = fields.pop("name", None) or f"then of job {job.id}"
        job.enqueue(name, **fields)
    return job.payload.get("value")


def validate_echo(payload: Any, registry: Registry) -> None:
    """`value` is required (any JSON); `then`, when given, must be a job POST /jobs would
    take (its errors name `payload.then.<field>`)."""
    if not isinstance(payload, Mapping):
        raise JobValidationError("payload", "must be a JSON object")
    if "value" not in payload:
        raise JobValidationError("payload.value", "is required (any JSON value)")
    then = payload.get("then")
    if then is None:
        return
    if not isinstance(then, Mapping):
        raise JobValidationError("payload.then", "must be a job: an object with the fields "
                                                 "of POST /jobs (name optional)")
    from boundq.core.validation import check_template  # validation imports this module

    try:
        check_template({**then, "name": then.get("name") or "then"}, registry)
    except JobValidationError as exc:
        raise JobValidationError(f"payload.then.{exc.field}", exc.message) from None


async def _effect(job: JobContext) -> None:
    # The effect row itself is written by the fenced completion (job_complete_batch).
    return None


def register_builtins(registry: Registry) -> None:
    from boundq.core.wasm.kind import run_wasm, validate_payload  # loads no wasmtime yet

    registry.register("noop", _noop)
    registry.register("sleep", _sleep, lambda p: _int_field(p, "ms", 0, 86_400_000))
    registry.register("cpu", _cpu, lambda p: _int_field(p, "n", 0, 1_000_000_000))
    registry.register("fail", _fail, lambda p: _int_field(p, "times", 0, 1000, required=False))
    registry.register("effect", _effect)
    registry.register("echo", _echo, lambda p: validate_echo(p, registry))
    registry.register("wasm", run_wasm, validate_payload)


default_registry = Registry()
register_builtins(default_registry)
handler = default_registry.handler


def import_handler_modules(spec: str) -> list[str]:
    """Import comma-separated modules so their @handler decorators register kinds."""
    loaded = []
    for name in (part.strip() for part in spec.split(",")):
        if name:
            importlib.import_module(name)
            loaded.append(name)
    return loaded
