-- Autovacuum for the tables every job rewrites. PostgreSQL's defaults vacuum a table once a
-- fifth of it is dead (plus 50 rows); the outbox's live rows are a few hundred while
-- thousands are deleted each second, and each job updates its jobs and videos rows several
-- times (the partial indexes on jobs.state make those updates non-HOT). Measured at 200
-- jobs/s before this: 20,000 dead outbox rows (19 MB for ~200 live ones) and 14,000 dead
-- jobs rows before the first autovacuum, with the generator's accept statement three times
-- slower and the finalizer's read five times slower than after it. So: the outbox is
-- vacuumed after a fixed number of dead rows, without the cost-based sleep (it is small:
-- its vacuums are short); jobs and videos after a small fraction, throttled as usual (they
-- grow without bound). Settings every supported PostgreSQL accepts; how often autovacuum
-- looks is the server's `autovacuum_naptime` (5 s for the local server, devstack/postgres.py).
ALTER TABLE outbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 1000,
                        autovacuum_vacuum_cost_delay = 0);
ALTER TABLE jobs SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 1000);
ALTER TABLE videos SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 1000);
