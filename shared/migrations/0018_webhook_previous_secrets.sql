-- Replacing an endpoint's secret a second time within the overlap dropped the first
-- replaced secret at once, so a receiver still verifying with it rejected deliveries.
-- Every replaced secret is now kept until its own expiry (the newest few), and deliveries
-- are signed with each of them beside the current one.
ALTER TABLE webhook_endpoints
    ADD COLUMN IF NOT EXISTS previous_secrets jsonb NOT NULL DEFAULT '[]';
UPDATE webhook_endpoints
   SET previous_secrets = jsonb_build_array(jsonb_build_object(
           'secret', previous_secret, 'expires_at', previous_secret_expires_at))
 WHERE previous_secret IS NOT NULL AND previous_secret_expires_at > now();
ALTER TABLE webhook_endpoints DROP COLUMN IF EXISTS previous_secret;
ALTER TABLE webhook_endpoints DROP COLUMN IF EXISTS previous_secret_expires_at;
