-- Cron schedules: each tick makes one job from `job` (a POST /jobs body without run_at). Times
-- Unix microseconds; `next_run_at` NULL when the expression never matches again.
CREATE TABLE schedules (
    name         TEXT PRIMARY KEY,
    cron         TEXT NOT NULL,
    timezone     TEXT NOT NULL,
    -- skip | allow: whether a tick makes a job while the previous one has not finished.
    overlap      TEXT NOT NULL,
    job          TEXT NOT NULL,
    paused       INTEGER NOT NULL DEFAULT 0,
    next_run_at  INTEGER,
    last_run_at  INTEGER,
    last_job_id  TEXT,
    runs         INTEGER NOT NULL DEFAULT 0,
    skipped      INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    owner        TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX schedules_due ON schedules (next_run_at);
