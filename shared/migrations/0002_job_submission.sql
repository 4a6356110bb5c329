-- When a provider submission started: set before the create call, so that after a crash
-- inside that call the generator looks for the orphaned provider job before submitting again.
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS submit_started_at timestamptz;
CREATE INDEX IF NOT EXISTS jobs_to_sweep ON jobs (deadline_at)
    WHERE state IN ('queued', 'submitted', 'running');
