-- What 1b40f27 (retries, redrive, idempotent submit, listing) added by editing the CREATE TABLE,
-- which never reached a database created before it.
-- Rows older than this had no timeout of their own stored: 300 s was the default then.
ALTER TABLE jobs ADD COLUMN timeout_ms INTEGER NOT NULL DEFAULT 300000;
-- A redrive grants `budget` more attempts: what the job was submitted with.
ALTER TABLE jobs ADD COLUMN budget INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET budget = max_attempts;
-- Starts of a job; an older row that was started counts at least its attempts.
ALTER TABLE jobs ADD COLUMN runs INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET runs = attempt WHERE started_at IS NOT NULL;
-- A database of the first schema opened once by a later build already has these two.
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, id);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    key         TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    job_id      TEXT NOT NULL
);
