"""The job state machine, written down once.

    new ──claim──▶ processing ──success──▶ success        (terminal)
     ▲                │ error, attempts left: run_at = now + backoff ──▶ new
     │                │ error / timeout, no attempts left ─▶ failed    (terminal, dead letters)
     └──reaper────────┘ lease expired (attempt recorded as lost; counts as an attempt)
    new | processing ──cancel──▶ cancelled                   (terminal)
    failed ──retry (API)──▶ new

Who moves a job, and the SQL block that does it (core/sql/queries.sql):

    state       enters by                                   leaves by
    new         enqueue (job_insert, COPY), job_fail with   job_claim (worker acquirer),
                attempts left, job_reap_expired with        job_cancel (API / CLI)
                attempts left, job_retry (API)
    processing  job_claim                                   job_complete_batch, job_fail_batch
                                                            (the owning worker, fenced),
                                                            job_reap_expired (any reaper,
                                                            guarded), job_cancel
    success     job_complete_batch                          never (absorbing)
    failed      job_fail_batch / job_reap_expired with      job_retry (explicit, API)
                no attempts left
    cancelled   job_cancel                                  never (absorbing)

Every move out of processing writes the ended attempt's job_attempts row in the same
statement; while a job is processing, its jobs row is the running attempt (attempts,
lease_owner, started_at).

The database enforces the shape with CHECK constraints (core/migrations/0001_init.up.sql);
fencing (id, attempts, lease_owner, status='processing') keeps stale owners out.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    NEW = "new"
    PROCESSING = "processing"
    SUCCESS = "success"
    FAILED = "failed"
    CANCELLED = "cancelled"


class AttemptOutcome(StrEnum):
    SUCCESS = "success"
    ERROR = "error"
    TIMEOUT = "timeout"
    LOST = "lost"
    CANCELLED = "cancelled"


TERMINAL: frozenset[JobStatus] = frozenset(
    {JobStatus.SUCCESS, JobStatus.FAILED, JobStatus.CANCELLED}
)
ACTIVE: frozenset[JobStatus] = frozenset({JobStatus.NEW, JobStatus.PROCESSING})

# Every allowed (from, to) move; the invariant checker and tests read this table.
TRANSITIONS: frozenset[tuple[JobStatus, JobStatus]] = frozenset(
    {
        (JobStatus.NEW, JobStatus.PROCESSING),
        (JobStatus.PROCESSING, JobStatus.SUCCESS),
        (JobStatus.PROCESSING, JobStatus.NEW),
        (JobStatus.PROCESSING, JobStatus.FAILED),
        (JobStatus.NEW, JobStatus.CANCELLED),
        (JobStatus.PROCESSING, JobStatus.CANCELLED),
        (JobStatus.FAILED, JobStatus.NEW),
    }
)
