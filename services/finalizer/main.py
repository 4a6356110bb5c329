"""Composition root of the finalizer: settings, pool, broker, relay, publisher."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import asyncpg

from services.finalizer import consumer
from services.finalizer.settings import FinalizerSettings
from services.finalizer.webhooks import WebhookConfig, WebhookSender, http_session
from shared.catalog import Catalog
from shared.consumer import stop_broker
from shared.db import create_pool, migrate
from shared.kafka import make_broker
from shared.outbox import OutboxRelay, Publisher
from shared.runtime import cancel, configure_logging, run, serve_until_stopped

log = logging.getLogger("influgen.finalizer")


async def open_pool(settings: FinalizerSettings) -> asyncpg.Pool:
    """The service's pool. Its statements look rows up by key; without generic plans
    PostgreSQL planned its read of a batch's jobs anew on most calls in some runs
    (`shared.db.GENERIC_PLANS`)."""
    return await create_pool(settings.database_url, min_size=settings.db_pool_min,
                             max_size=settings.db_pool_max, generic_plans=True)


async def serve(settings: FinalizerSettings) -> None:
    await migrate(settings.database_url)
    pool = await open_pool(settings)
    broker = make_broker(settings.kafka_bootstrap_servers, "influgen-finalizer")
    publisher = Publisher(pool=pool, bootstrap_servers=settings.kafka_bootstrap_servers)
    consumer.register(broker, pool=pool, catalog=Catalog.load(settings.catalog_path),
                      group_id=settings.consumer_group,
                      fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
                      instance_id=settings.instance_id, publisher=publisher)
    webhook_cfg = WebhookConfig(
        retry_base_seconds=settings.webhook_retry_base_seconds,
        retry_cap_seconds=settings.webhook_retry_cap_seconds,
        max_age=timedelta(hours=settings.webhook_max_age_hours),
        timeout_seconds=settings.webhook_timeout_seconds,
        allow_private=settings.webhook_allow_private)
    http = http_session(webhook_cfg)
    sender = WebhookSender(pool, http, webhook_cfg)
    consumer.register_webhooks(broker, pool=pool, sender=sender,
                               group_id=settings.webhooks_consumer_group,
                               fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
                               instance_id=settings.instance_id)
    relay = OutboxRelay(dsn=settings.database_url,
                        bootstrap_servers=settings.kafka_bootstrap_servers)
    await broker.start()
    tasks = [asyncio.create_task(relay.run(), name="outbox-relay"),
             asyncio.create_task(publisher.run(), name="outbox-publisher"),
             asyncio.create_task(sender.run(), name="webhook-sender")]
    log.info("finalizer running")
    try:
        await serve_until_stopped(tasks, settings.ready_file)
    finally:
        log.info("finalizer stopping")
        await stop_broker(broker)
        await cancel(*tasks)
        await http.close()
        await pool.close()


def main() -> None:
    settings = FinalizerSettings()
    configure_logging(settings.log_level, "finalizer")
    run(serve(settings))


if __name__ == "__main__":
    main()
