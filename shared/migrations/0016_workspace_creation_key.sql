-- A workspace created with an Idempotency-Key keeps it: a creation retried after a lost
-- answer finds the workspace instead of making a second one (its API key, shown once and
-- stored hashed, cannot be shown again: the retry is told to replace it).
ALTER TABLE workspaces ADD COLUMN IF NOT EXISTS creation_key text;
ALTER TABLE workspaces ADD COLUMN IF NOT EXISTS creation_hash bytea;
CREATE UNIQUE INDEX IF NOT EXISTS workspaces_creation_key ON workspaces (creation_key)
    WHERE creation_key IS NOT NULL;
