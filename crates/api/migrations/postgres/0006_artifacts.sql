-- Artifacts: files a job returned beside its JSON result, one row each, written by the artifacts
-- consumer (possibly before the job's success event arrives).
CREATE TABLE artifacts (
    job_id        UUID NOT NULL,
    name          TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    size          BIGINT NOT NULL,
    -- Lowercase hex SHA-256 of data: the download's ETag.
    sha256        TEXT NOT NULL,
    data          BYTEA NOT NULL,
    attempt       BIGINT NOT NULL,
    stored_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (job_id, name)
);
-- Retention finds orphans (artifacts of no job) by age.
CREATE INDEX artifacts_by_stored_at ON artifacts (stored_at);
-- The artifacts the success event listed (JSON array of {name, content_type, size, sha256}).
ALTER TABLE jobs ADD COLUMN artifacts TEXT;
