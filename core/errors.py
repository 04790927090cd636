"""Typed errors: each is raised where it is detected and handled where it can be acted on."""

from __future__ import annotations


class BoundqError(Exception):
    """Base of every error boundq raises on purpose."""


class ConfigError(BoundqError):
    """A setting is invalid; the message is one line naming the variable."""


class EmbeddedPostgresError(BoundqError):
    """The embedded cluster could not be found, created or started."""


class MigrationError(BoundqError):
    """The schema could not be moved to the requested version."""


class JobValidationError(BoundqError):
    """Bad input for a job: nothing was written. `field` names the offending input."""

    def __init__(self, field: str, message: str, index: int | None = None) -> None:
        super().__init__(f"{field}: {message}" if index is None else f"[{index}].{field}: {message}")
        self.field = field
        self.message = message
        self.index = index


class JobNotFound(BoundqError):
    def __init__(self, job_id: int) -> None:
        super().__init__(f"job {job_id} not found")
        self.job_id = job_id


class InvalidTransition(BoundqError):
    """The requested state change is not allowed from the job's current state."""

    def __init__(self, job_id: int, status: str, action: str) -> None:
        super().__init__(f"job {job_id} is {status}: cannot {action}")
        self.job_id = job_id
        self.status = status
        self.action = action


class DedupeKeyTaken(BoundqError):
    """A job cannot become active again: a live job holds its dedupe_key."""

    def __init__(self, job_id: int, dedupe_key: str, holder: int | None) -> None:
        held = f" (job {holder})" if holder is not None else ""
        super().__init__(f"job {job_id} cannot run again: its dedupe_key {dedupe_key!r} is "
                         f"held by a live job{held}")
        self.job_id = job_id
        self.dedupe_key = dedupe_key
        self.holder = holder


class ClaimAlreadyFinished(BoundqError):
    """A Claim was finished twice: ownership of a job is consumed by its first finish."""
