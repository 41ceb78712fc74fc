-- Retention deletes finished jobs by `finished_at` and idempotency keys by their age.
ALTER TABLE idempotency_keys ADD COLUMN created_at INTEGER NOT NULL DEFAULT 0;
-- A key was created with its job; a key whose job is gone counts from this upgrade.
UPDATE idempotency_keys SET created_at = COALESCE(
    (SELECT submitted_at FROM jobs WHERE jobs.id = idempotency_keys.job_id),
    CAST(unixepoch('subsec') * 1000000 AS INTEGER));
CREATE INDEX jobs_by_finished ON jobs (finished_at);
CREATE INDEX idempotency_keys_by_created ON idempotency_keys (created_at);
-- Deleting a job frees its key by job id (PostgreSQL had this index from the start).
CREATE INDEX IF NOT EXISTS idempotency_keys_by_job ON idempotency_keys (job_id);
