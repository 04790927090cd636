-- boundq schema, version 6: cron schedules (core/cron.py, core/schedules.py, docs/cron.md).
-- A schedule makes one job per tick of its cron expression in its time zone. The
-- watermark next_tick_at is the first tick not yet handled; the statement that handles
-- due ticks (schedule_fire) moves it forward only from the value it read, and writes the
-- tick rows and their jobs in that same statement, so each tick makes one job or none.

CREATE TABLE job_schedules (
    name             text             PRIMARY KEY,
    cron             text             NOT NULL,
    timezone         text             NOT NULL,
    job              jsonb            NOT NULL,  -- the template as given (GET answers it)
    catch_up         integer          NOT NULL DEFAULT 1,
    -- The template, validated and normalized at PUT: what each tick's job is made of.
    job_kind         text             NOT NULL,
    job_queue        text             NOT NULL,
    job_payload      jsonb            NOT NULL,
    job_priority     smallint         NOT NULL,
    job_max_attempts integer          NOT NULL,
    job_timeout_s    double precision,
    job_delay_s      double precision NOT NULL DEFAULT 0,
    -- Raised by every PUT: a statement that read an older version changes nothing.
    version          bigint           NOT NULL DEFAULT 1,
    first_tick_at    timestamptz      NOT NULL,  -- the first tick of this expression
    next_tick_at     timestamptz      NOT NULL,  -- the watermark: first tick not handled
    created_at       timestamptz      NOT NULL DEFAULT now(),
    updated_at       timestamptz      NOT NULL DEFAULT now(),

    -- Like queue names (core/validation.py QUEUE_NAME): they appear in URLs.
    CONSTRAINT job_schedules_name_valid CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$'),
    CONSTRAINT job_schedules_cron_valid CHECK (length(cron) BETWEEN 1 AND 200),
    CONSTRAINT job_schedules_timezone_valid CHECK (length(timezone) BETWEEN 1 AND 100),
    CONSTRAINT job_schedules_catch_up_range CHECK (catch_up BETWEEN 1 AND 100),
    CONSTRAINT job_schedules_watermark CHECK (next_tick_at >= first_tick_at)
);
-- The scheduler's read: schedules whose watermark is due, earliest first.
CREATE INDEX job_schedules_due_idx ON job_schedules (next_tick_at);

-- One row per tick that made a job, kept for the last ticks of each schedule (a window,
-- pruned by schedule_fire). The primary key refuses a second row for a tick; the job's
-- id is drawn in the statement that inserts the row, and the job is inserted only for rows
-- that were. Ticks in [window_start, tick_at) with no row of their own were skipped by
-- the catch-up rule. No foreign key to jobs: retention deletes old jobs, the row stays.
CREATE TABLE job_schedule_ticks (
    schedule     text        NOT NULL REFERENCES job_schedules (name) ON DELETE CASCADE,
    tick_at      timestamptz NOT NULL,
    job_id       bigint      NOT NULL,
    window_start timestamptz NOT NULL,  -- the watermark the statement that made it read
    fired_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule, tick_at),
    CONSTRAINT job_schedule_ticks_window CHECK (window_start <= tick_at)
);

COMMENT ON TABLE job_schedules IS
    'Cron schedules: each tick of cron (in timezone) makes one job from the template. '
    'next_tick_at is the first tick not yet handled.';
COMMENT ON TABLE job_schedule_ticks IS
    'The last ticks of each schedule and the job each made; ticks in [window_start, tick_at) '
    'without a row were skipped (catch_up).';
