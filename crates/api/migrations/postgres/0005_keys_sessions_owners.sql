-- API keys, browser sessions, and the key that submitted each job.
-- A key's token is never stored: only the hex SHA-256 of it (tokens are 256 random bits).
CREATE TABLE keys (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    token_hash  TEXT NOT NULL UNIQUE,
    -- Space-separated: submit, read, admin, metrics.
    scopes      TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ,
    revoked_at  TIMESTAMPTZ,
    -- The key's own rate limit; NULL: OFFLOAD_RATE_LIMIT_PER_S / OFFLOAD_RATE_LIMIT_BURST.
    rate_per_s  BIGINT,
    burst       BIGINT
);
-- A browser session: the hex SHA-256 of its random id (the cookie), shared by API replicas.
CREATE TABLE sessions (
    id_hash     TEXT PRIMARY KEY,
    key_id      TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);
-- The key that submitted the job; NULL for jobs from before keys, from OFFLOAD_AUTH=off, and
-- jobs first heard of through their events.
ALTER TABLE jobs ADD COLUMN owner TEXT;
CREATE INDEX jobs_by_owner ON jobs (owner, id);
