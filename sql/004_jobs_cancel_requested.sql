-- 004: the archive keeps whether a cancel was requested, as Redis showed it
-- (cancelRequested in a job's JSON must not change when the job moves to the archive).
ALTER TABLE jobs ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false;
