-- Generators claim queued jobs per provider (each provider has its own concurrency limit),
-- oldest first: an index that serves that scan directly.
CREATE INDEX IF NOT EXISTS jobs_queued_by_provider ON jobs (provider, created_at)
    WHERE state = 'queued';
DROP INDEX IF EXISTS jobs_queued;
