-- The first PostgreSQL schema this project shipped (6cbcead), statement for statement.
-- Timestamps are TIMESTAMPTZ (microseconds, like the SQLite store's integers); JSON is kept as
-- TEXT so it round-trips byte for byte (JSONB would reorder keys and rejects \u0000).
CREATE TABLE IF NOT EXISTS jobs (
    id           UUID PRIMARY KEY,
    kind         TEXT NOT NULL,
    status       TEXT NOT NULL,
    progress     BIGINT NOT NULL,
    attempt      BIGINT NOT NULL,
    max_attempts BIGINT NOT NULL,
    timeout_ms   BIGINT NOT NULL,
    budget       BIGINT NOT NULL,
    runs         BIGINT NOT NULL DEFAULT 0,
    worker       TEXT,
    submitted_at TIMESTAMPTZ NOT NULL,
    started_at   TIMESTAMPTZ,
    finished_at  TIMESTAMPTZ,
    payload      TEXT NOT NULL,
    result       TEXT,
    error        TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, id);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key         TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    job_id      UUID NOT NULL
);
-- `Write::Delete` frees a job's key by job id.
CREATE INDEX IF NOT EXISTS idempotency_keys_by_job ON idempotency_keys (job_id);
