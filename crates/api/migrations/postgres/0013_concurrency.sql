-- Concurrency limits: a job of a `concurrency_key` (at most `concurrency_limit` of the key
-- running at once) or of a kind with `max_running` is `held` (status scheduled, no resolve_at)
-- until a slot frees, then `released` (counted against the limits until it finishes).
ALTER TABLE jobs ADD COLUMN concurrency_key TEXT;
ALTER TABLE jobs ADD COLUMN concurrency_limit BIGINT;
ALTER TABLE jobs ADD COLUMN gate TEXT;
-- The jobs the limits count, and the ones waiting: a finished job leaves the index.
CREATE INDEX jobs_gated ON jobs (gate, concurrency_key)
    WHERE gate IS NOT NULL AND status NOT IN ('succeeded', 'failed', 'dead', 'cancelled');
ALTER TABLE kinds ADD COLUMN max_running BIGINT;
