-- Rows a service publishes itself right after its commit (`shared.outbox.Publisher`): the
-- relay leaves them alone for a grace period, and takes over those the publisher has not
-- deleted by then (its process died, or Kafka was away).
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS eager boolean NOT NULL DEFAULT false;
