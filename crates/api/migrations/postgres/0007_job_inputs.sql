-- A job's input files (multipart uploads), kept so a job whose publish is republished (or
-- redriven) carries them again. Deleted with their job (retention, forget).
CREATE TABLE job_inputs (
    job_id        UUID NOT NULL,
    -- Position in the upload: the files go out in the order they came.
    position      BIGINT NOT NULL,
    field         TEXT NOT NULL,
    filename      TEXT,
    content_type  TEXT NOT NULL,
    size          BIGINT NOT NULL,
    -- Lower-case hex SHA-256 of data.
    sha256        TEXT NOT NULL,
    data          BYTEA NOT NULL,
    PRIMARY KEY (job_id, position)
);
