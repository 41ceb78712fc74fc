-- How far a running attempt has got, as its handler last reported (`ctx.progress`): the fraction
-- in parts per million, a few words, and when. Cleared when an attempt starts.
ALTER TABLE jobs ADD COLUMN progress_ppm BIGINT;
ALTER TABLE jobs ADD COLUMN progress_message TEXT;
ALTER TABLE jobs ADD COLUMN progress_at TIMESTAMPTZ;
