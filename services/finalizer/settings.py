from __future__ import annotations

from shared.settings import CommonSettings


class FinalizerSettings(CommonSettings):
    consumer_group: str = "influgen-finalizer"
    webhooks_consumer_group: str = "influgen-webhooks"
    #: Deliveries are retried with exponential backoff (base, cap) for this many hours.
    webhook_retry_base_seconds: float = 5.0
    webhook_retry_cap_seconds: float = 3600.0
    webhook_max_age_hours: float = 24.0
    webhook_timeout_seconds: float = 10.0
