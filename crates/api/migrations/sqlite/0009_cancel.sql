-- A cancelled job a worker has not yet reported as settled (acked without running, or stopped)
-- has `cancel_settled_at` NULL: the API repeats its cancel to the workers until one does.
ALTER TABLE jobs ADD COLUMN cancel_settled_at INTEGER;
CREATE INDEX jobs_unsettled_cancels ON jobs (finished_at)
    WHERE status = 'cancelled' AND cancel_settled_at IS NULL;
