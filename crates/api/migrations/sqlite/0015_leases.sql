-- Long jobs: a worker acknowledges a long kind's delivery once the job has started and holds the
-- running attempt by a lease it renews with heartbeats. `lease_until` is when the lease lapses
-- (the API then starts the job again, as its next attempt); `heartbeat_at` the latest heartbeat.
ALTER TABLE jobs ADD COLUMN lease_until INTEGER;
ALTER TABLE jobs ADD COLUMN heartbeat_at INTEGER;
-- The reaper's look for lapsed leases reads only the running long jobs.
CREATE INDEX jobs_leased ON jobs (lease_until) WHERE lease_until IS NOT NULL;
ALTER TABLE kinds ADD COLUMN long INTEGER NOT NULL DEFAULT 0;
