-- A job submitted to run later (`run_at` or `delay_s`) is recorded `scheduled` with `run_at`, its
-- time, and `resolve_at` set to it: the reconciler publishes it when it is due, so it never
-- waits in the broker. NULL for a job that ran at once.
ALTER TABLE jobs ADD COLUMN run_at TIMESTAMPTZ;
