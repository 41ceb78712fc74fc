-- A job's history: its row holds only the latest of each field, so every start and end of each
-- of its attempts is also kept here, one row a step (as a worker reported it, or as the API
-- decided it: a lease that lapsed, a redrive), for the job page's timeline. Rows live as long
-- as their job. The key makes a step recorded twice (a redelivered event message) one row.
CREATE TABLE job_steps (
    job_id     UUID NOT NULL,
    at         TIMESTAMPTZ NOT NULL,
    attempt    BIGINT NOT NULL,
    status     TEXT NOT NULL,
    worker     TEXT,
    started_at TIMESTAMPTZ,
    run_ms     BIGINT,
    error      TEXT,
    PRIMARY KEY (job_id, at, attempt, status)
);
