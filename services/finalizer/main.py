"""Composition root of the finalizer: settings, pool, broker, relay."""

from __future__ import annotations

import asyncio
import logging

from services.finalizer import consumer
from services.finalizer.settings import FinalizerSettings
from shared.catalog import Catalog
from shared.db import create_pool, migrate
from shared.kafka import make_broker
from shared.outbox import OutboxRelay
from shared.runtime import cancel, configure_logging, wait_for_stop_signal

log = logging.getLogger("influgen.finalizer")


async def serve(settings: FinalizerSettings) -> None:
    await migrate(settings.database_url)
    pool = await create_pool(
        settings.database_url, min_size=settings.db_pool_min, max_size=settings.db_pool_max
    )
    broker = make_broker(settings.kafka_bootstrap_servers, "influgen-finalizer")
    consumer.register(broker, pool=pool, catalog=Catalog.load(settings.catalog_path),
                      group_id=settings.consumer_group,
                      fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms)
    relay = OutboxRelay(dsn=settings.database_url,
                        bootstrap_servers=settings.kafka_bootstrap_servers)
    await broker.start()
    relay_task = asyncio.create_task(relay.run(), name="outbox-relay")
    log.info("finalizer running")
    try:
        await wait_for_stop_signal()
    finally:
        log.info("finalizer stopping")
        await broker.stop()
        await cancel(relay_task)
        await pool.close()


def main() -> None:
    settings = FinalizerSettings()
    configure_logging(settings.log_level, "finalizer")
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
