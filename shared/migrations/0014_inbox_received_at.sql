-- The inbox is purged of rows older than the longest a record stays in a topic (api
-- setting INFLUGEN_INBOX_RETENTION_DAYS): it grew by a row per consumed event for ever.
-- A BRIN index finds the old rows without a full scan and costs the inserts next to nothing
-- (rows arrive in time order; a btree would be updated by every insert of the hot path).
CREATE INDEX IF NOT EXISTS inbox_received_at ON inbox USING brin (received_at);
