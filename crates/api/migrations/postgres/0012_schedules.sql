-- Cron schedules: each tick makes one job from `job` (a POST /jobs body without run_at).
-- `next_run_at` NULL when the expression never matches again.
CREATE TABLE schedules (
    name         TEXT PRIMARY KEY,
    cron         TEXT NOT NULL,
    timezone     TEXT NOT NULL,
    -- skip | allow: whether a tick makes a job while the previous one has not finished.
    overlap      TEXT NOT NULL,
    job          TEXT NOT NULL,
    paused       BIGINT NOT NULL DEFAULT 0,
    next_run_at  TIMESTAMPTZ,
    last_run_at  TIMESTAMPTZ,
    last_job_id  TEXT,
    runs         BIGINT NOT NULL DEFAULT 0,
    skipped      BIGINT NOT NULL DEFAULT 0,
    last_error   TEXT,
    owner        TEXT,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX schedules_due ON schedules (next_run_at);
