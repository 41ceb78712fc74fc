-- A job's priority (`normal` or `high`): the lane it is published to, kept for a republish (a
-- scheduled job's, a redrive's). A kind's default priority, when its spec names one.
ALTER TABLE jobs ADD COLUMN priority TEXT NOT NULL DEFAULT 'normal';
ALTER TABLE kinds ADD COLUMN priority TEXT;
