-- An unresolved job (recorded, its publish not confirmed yet: `queued` while the publish is in
-- flight, `pending` once overdue) carries `resolve_at`, when it is due to be republished; NULL
-- once resolved.
ALTER TABLE jobs ADD COLUMN resolve_at TIMESTAMPTZ;
CREATE INDEX jobs_unresolved ON jobs (resolve_at) WHERE resolve_at IS NOT NULL;
