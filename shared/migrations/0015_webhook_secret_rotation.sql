-- An endpoint's secret can be replaced (POST /v1/webhooks/{id}/secret). For a while after,
-- deliveries are signed with the new secret and the previous one, so that a receiver can
-- switch its verification over without rejecting a delivery in between.
ALTER TABLE webhook_endpoints ADD COLUMN IF NOT EXISTS previous_secret text;
ALTER TABLE webhook_endpoints ADD COLUMN IF NOT EXISTS previous_secret_expires_at timestamptz;
