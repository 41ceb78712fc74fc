-- The kinds the API has recorded (built in, announced by workers, or pinned by the operator's
-- kinds file) and the workers that announced themselves. JSON is TEXT; times Unix microseconds.
CREATE TABLE kinds (
    name           TEXT PRIMARY KEY,
    queue          TEXT NOT NULL,
    payload_schema TEXT NOT NULL,
    max_attempts   INTEGER,
    timeout_s      INTEGER,
    -- builtin | announced | pinned
    source         TEXT NOT NULL,
    announced_by   TEXT,
    first_seen_at  INTEGER NOT NULL,
    updated_at     INTEGER NOT NULL,
    -- Why a differing announcement was not taken; NULL when there is none.
    conflict       TEXT
);
CREATE TABLE workers (
    name         TEXT PRIMARY KEY,
    -- alive | leaving
    state        TEXT NOT NULL,
    -- The kind specs it announced (a JSON array of KindSpec).
    kinds        TEXT NOT NULL,
    queues       TEXT NOT NULL,
    in_flight    INTEGER NOT NULL,
    prefetch     INTEGER NOT NULL,
    heartbeat_s  INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    software     TEXT NOT NULL
);
