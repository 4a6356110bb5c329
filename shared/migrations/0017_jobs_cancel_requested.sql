-- The sweeper ends the unleased jobs that are past their deadline (found by jobs_to_sweep,
-- deadline_at <= now()) or canceled: those by this index, which holds only the few jobs
-- with a cancel request not yet ended. One condition over both scanned every unfinished
-- job, every second, while none was due: 9 ms a sweep with 17,000 jobs queued.
CREATE INDEX IF NOT EXISTS jobs_cancel_requested ON jobs (deadline_at)
    WHERE cancel_requested AND state IN ('queued', 'submitted', 'running');
