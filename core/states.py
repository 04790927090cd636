"""The job state machine, written down once.

    create ──▶ scheduled ──stager (run_at due)──▶ new
    create ──▶ new ──claim──▶ processing ──success──▶ success          (terminal)
                ▲                 │ error, attempts left, backoff > 0 ──▶ scheduled
                │                 │ error, attempts left, no backoff ───▶ new
                │                 │ error / timeout, none left ─────────▶ failed (terminal,
                │                 │                                        dead letters)
                └──reaper/release─┘ lease expired (lost; counts as an attempt) or handed back
    scheduled | new | processing ──cancel──▶ cancelled                   (terminal)
    new (run_at in the future, written by plain SQL) ──scout──▶ scheduled
    failed ──retry (API)──▶ new
    create (depends_on) ──▶ blocked ──every parent success──▶ new | scheduled (run_at ahead)
                            blocked ──a parent failed/cancelled, or cancel──▶ cancelled

Who moves a job, and the SQL block that does it (core/sql/queries.sql):

    state       enters by                                 leaves by
    blocked     a create with depends_on (job_insert_    jobs_settle_dependants (trigger of
                blocked, a bulk COPY); only from         migration 0008, in the statement
                creation                                 that finishes a parent): the last
                                                         parent in success -> new |
                                                         scheduled; a parent failed or
                                                         cancelled -> cancelled, with its
                                                         blocked descendants;
                                                         job_link_dependencies (creating
                                                         transaction, parents already
                                                         finished); job_cancel (API)
    scheduled   enqueue with a future run_at (job_insert, job_stage_due (the stager, any
                COPY), job_fail_batch with attempts left     worker), job_cancel (API)
                and a backoff, job_schedule_early (scout),
                a follow-up with a future run_at
                (job_complete_and_claim), the unblocking
                above
    new         enqueue, job_stage_due, job_fail_batch,      job_complete_and_claim (a claim
                with no backoff, job_reap_expired with       loop), job_cancel,
                attempts left, job_release_batch,            job_schedule_early
                job_retry (API), the unblocking above,
                a follow-up (job_complete_and_claim,
                with its job's success)
    processing  job_complete_and_claim                       job_complete_and_claim,
                                                             job_fail_batch (the owning
                                                             worker, fenced),
                                                             job_reap_expired (any reaper,
                                                             guarded), job_release_batch
                                                             (the owner at shutdown),
                                                             job_cancel
    success     job_complete_and_claim                       never (absorbing)
    failed      job_fail_batch / job_reap_expired with       job_retry (explicit, API)
                no attempts left
    cancelled   job_cancel, the dependency cascade           never (absorbing)

Every move out of processing writes the ended attempt's job_attempts row in the same
statement; while a job is processing, its jobs row is the running attempt (attempts,
lease_owner, started_at). started_at is set by the claim and cleared when the job goes
back to wait, so it is null exactly while a job waits.

The database enforces the shape with CHECK constraints and a transition trigger
(core/migrations); fencing (id, attempts, lease_owner, status='processing') keeps stale
owners out.
"""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    SCHEDULED = "scheduled"
    BLOCKED = "blocked"
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
# Not finished yet: the jobs that count against a dedupe_key and that cancel can stop.
ACTIVE: frozenset[JobStatus] = frozenset(
    {JobStatus.SCHEDULED, JobStatus.BLOCKED, JobStatus.NEW, JobStatus.PROCESSING}
)
# Waiting to run: not started, not finished (started_at is null exactly for these).
WAITING: frozenset[JobStatus] = frozenset(
    {JobStatus.SCHEDULED, JobStatus.BLOCKED, JobStatus.NEW})

# Every allowed (from, to) move; the invariant checker and tests read this table.
TRANSITIONS: frozenset[tuple[JobStatus, JobStatus]] = frozenset(
    {
        (JobStatus.SCHEDULED, JobStatus.NEW),
        (JobStatus.NEW, JobStatus.SCHEDULED),
        (JobStatus.NEW, JobStatus.PROCESSING),
        (JobStatus.PROCESSING, JobStatus.SUCCESS),
        (JobStatus.PROCESSING, JobStatus.SCHEDULED),
        (JobStatus.PROCESSING, JobStatus.NEW),
        (JobStatus.PROCESSING, JobStatus.FAILED),
        (JobStatus.SCHEDULED, JobStatus.CANCELLED),
        (JobStatus.NEW, JobStatus.CANCELLED),
        (JobStatus.PROCESSING, JobStatus.CANCELLED),
        (JobStatus.FAILED, JobStatus.NEW),
        (JobStatus.BLOCKED, JobStatus.NEW),
        (JobStatus.BLOCKED, JobStatus.SCHEDULED),
        (JobStatus.BLOCKED, JobStatus.CANCELLED),
    }
)
