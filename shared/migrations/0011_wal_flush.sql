-- The row `shared.db.flush_wal` updates: a write committed synchronously flushes the WAL up
-- to its commit record, and with it every commit before it that did not wait for the disk
-- (`shared.db.NO_FLUSH_WAIT`: the generator's accept and success statements). The generator
-- flushes so before it commits the Kafka offsets of the job events it accepted.
CREATE TABLE wal_flush (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO wal_flush DEFAULT VALUES;
