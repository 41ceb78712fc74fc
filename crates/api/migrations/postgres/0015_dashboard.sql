-- The dashboard: its jobs page filters by kind and by worker, newest first (keyset pages on id),
-- every action taken through it or an admin route is kept in the audit list, and an operator may
-- pause a work queue (its workers stop consuming it).
CREATE INDEX jobs_by_kind ON jobs (kind, id);
CREATE INDEX jobs_by_worker ON jobs (worker, id) WHERE worker IS NOT NULL;
CREATE TABLE queue_pauses (
    queue     TEXT PRIMARY KEY,
    paused_at TIMESTAMPTZ NOT NULL,
    paused_by TEXT NOT NULL
);
CREATE TABLE audit (
    seq      BIGSERIAL PRIMARY KEY,
    at       TIMESTAMPTZ NOT NULL,
    key_id   TEXT,
    key_name TEXT NOT NULL,
    action   TEXT NOT NULL,
    target   TEXT NOT NULL,
    detail   TEXT
);
-- A JSON path search reads payloads and results (kept as TEXT, byte for byte) as jsonb. Text
-- that jsonb refuses (a \u0000, a number past numeric's range) is no match, not an error that
-- would fail every search.
CREATE FUNCTION offload_jsonb(doc TEXT) RETURNS jsonb LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RETURN doc::jsonb;
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$$;
