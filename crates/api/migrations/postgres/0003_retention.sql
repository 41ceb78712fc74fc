-- Retention deletes finished jobs by `finished_at` and idempotency keys by their age.
-- The default keeps replicas of the previous build (which do not set it) working during a
-- rolling upgrade.
ALTER TABLE idempotency_keys ADD COLUMN created_at TIMESTAMPTZ NOT NULL DEFAULT now();
-- A key was created with its job; a key whose job is gone counts from this upgrade.
UPDATE idempotency_keys AS k SET created_at = j.submitted_at FROM jobs j WHERE j.id = k.job_id;
CREATE INDEX jobs_by_finished ON jobs (finished_at);
CREATE INDEX idempotency_keys_by_created ON idempotency_keys (created_at);
