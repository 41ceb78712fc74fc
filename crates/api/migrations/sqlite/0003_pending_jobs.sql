-- A `pending` job (recorded, publish not confirmed yet) is resolved once `resolve_at` (Unix
-- microseconds, like the other times) has passed; NULL for every other status.
ALTER TABLE jobs ADD COLUMN resolve_at INTEGER;
CREATE INDEX jobs_unresolved ON jobs (resolve_at) WHERE status = 'pending';
