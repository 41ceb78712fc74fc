-- Artifacts: files a job returned beside its JSON result, one row each, written by the artifacts
-- consumer (possibly before the job's success event arrives). Times Unix microseconds.
CREATE TABLE artifacts (
    job_id        TEXT NOT NULL,
    name          TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    size          INTEGER NOT NULL,
    -- Lowercase hex SHA-256 of data: the download's ETag.
    sha256        TEXT NOT NULL,
    data          BLOB NOT NULL,
    attempt       INTEGER NOT NULL,
    stored_at     INTEGER NOT NULL,
    PRIMARY KEY (job_id, name)
);
-- Retention finds orphans (artifacts of no job) by age.
CREATE INDEX artifacts_by_stored_at ON artifacts (stored_at);
-- The artifacts the success event listed (JSON array of {name, content_type, size, sha256}).
ALTER TABLE jobs ADD COLUMN artifacts TEXT;
