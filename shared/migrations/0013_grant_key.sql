-- An admin's credit grant may carry an Idempotency-Key: a grant retried after a lost answer
-- (a timeout, a dropped connection) must not grant twice. The key is the grant's identity
-- in the ledger, unique per workspace and kept as long as the ledger row (not 24 hours).
ALTER TABLE credit_ledger ADD COLUMN IF NOT EXISTS grant_key text;
CREATE UNIQUE INDEX IF NOT EXISTS credit_ledger_grant_key
    ON credit_ledger (workspace_id, grant_key) WHERE grant_key IS NOT NULL;
