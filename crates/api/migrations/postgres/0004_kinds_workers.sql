-- The kinds the API has recorded (built in, announced by workers, or pinned by the operator's
-- kinds file) and the workers that announced themselves. JSON is TEXT; times TIMESTAMPTZ.
CREATE TABLE kinds (
    name           TEXT PRIMARY KEY,
    queue          TEXT NOT NULL,
    payload_schema TEXT NOT NULL,
    max_attempts   BIGINT,
    timeout_s      BIGINT,
    -- builtin | announced | pinned
    source         TEXT NOT NULL,
    announced_by   TEXT,
    first_seen_at  TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL,
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
    in_flight    BIGINT NOT NULL,
    prefetch     BIGINT NOT NULL,
    heartbeat_s  BIGINT NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL,
    last_seen_at TIMESTAMPTZ NOT NULL,
    software     TEXT NOT NULL
);
