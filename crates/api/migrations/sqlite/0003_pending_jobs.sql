-- An unresolved job (recorded, its publish not confirmed yet: `queued` while the publish is in
-- flight, `pending` once overdue) carries `resolve_at` (Unix microseconds, like the other
-- times), when it is due to be republished; NULL once resolved.
ALTER TABLE jobs ADD COLUMN resolve_at INTEGER;
CREATE INDEX jobs_unresolved ON jobs (resolve_at) WHERE resolve_at IS NOT NULL;
