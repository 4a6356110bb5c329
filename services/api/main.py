"""Composition root of the intake service: settings, pool, broker, relay, HTTP app."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import asyncpg
from aiohttp import web
from faststream.kafka import KafkaBroker

from services.api import consumer, idempotency, live
from services.api.auth import KeyCache
from services.api.browser import browser_headers
from services.api.event_hub import VideoEventHub
from services.api.files import ASSET_NAME, MEDIA_NAME, file_routes
from services.api.handlers import IntakeDeps, video_writer
from services.api.keys import (
    BROKER,
    DEPS,
    HUB,
    KEY_CACHE,
    LIMITER,
    POOL,
    SETTINGS,
    VIDEO_WRITER,
)
from services.api.live import routes as live_routes
from services.api.metrics import METRICS, ApiMetrics
from services.api.metrics import routes as metrics_routes
from services.api.ratelimit import RateLimiter
from services.api.routes import STATIC, errors_and_auth, routes
from services.api.settings import ApiSettings
from services.api.tracing import add_request_id
from services.api.video_routes import routes as video_routes
from services.api.webhook_routes import routes as webhook_routes
from shared import inbox
from shared.catalog import Catalog
from shared.consumer import stop_broker
from shared.db import DATABASE_ERRORS, create_pool, migrate
from shared.kafka import make_broker
from shared.outbox import OutboxRelay, Publisher
from shared.runtime import cancel, configure_logging, run, serve_until_stopped

log = logging.getLogger("influgen.api")


def intake_deps(settings: ApiSettings, pool: asyncpg.Pool,
                publisher: Publisher | None = None) -> IntakeDeps:
    return IntakeDeps(
        pool=pool,
        catalog=Catalog.load(settings.catalog_path),
        job_deadline=timedelta(seconds=settings.job_deadline_seconds),
        publisher=publisher,
    )


def build_app(settings: ApiSettings, pool: asyncpg.Pool, broker: KafkaBroker,
              deps: IntakeDeps | None = None, hub: VideoEventHub | None = None
              ) -> web.Application:
    """The aiohttp application; resources are opened by the caller and handed in."""
    api_metrics = ApiMetrics()
    app = web.Application(
        middlewares=[api_metrics.middleware(), errors_and_auth],
        client_max_size=settings.max_body_bytes,
    )
    app.on_response_prepare.append(add_request_id)
    app.on_response_prepare.append(browser_headers(settings.public_url))
    app[METRICS] = api_metrics
    app[SETTINGS] = settings
    app[POOL] = pool
    app[BROKER] = broker
    app[DEPS] = deps = deps or intake_deps(settings, pool)
    app[VIDEO_WRITER] = video_writer(deps, max_batch=settings.intake_batch_max,
                                     max_concurrent=settings.intake_batch_concurrency)
    app[LIMITER] = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
    app[KEY_CACHE] = KeyCache()
    app[HUB] = hub or VideoEventHub(settings.database_url)
    app.add_routes(routes)
    app.add_routes(video_routes)
    app.add_routes(live_routes)
    app.add_routes(webhook_routes)
    app.add_routes(metrics_routes)
    settings.media_dir.mkdir(parents=True, exist_ok=True)
    app.add_routes(file_routes("/media/", settings.media_dir, MEDIA_NAME,
                               "A video or thumbnail of the media store"))
    app.add_routes(file_routes("/static/", STATIC, ASSET_NAME, "The web page's assets"))
    return app


async def housekeeping(pool: asyncpg.Pool, inbox_retention: timedelta,
                       events_retention: timedelta, every: float = 3600) -> None:
    """Hourly: forget idempotency keys older than 24 hours, inbox rows older than
    `inbox_retention`, and the live-status history of videos that are over older than
    `events_retention` (every api process does it; they only delete)."""
    while True:
        try:
            async with pool.acquire() as conn:
                await idempotency.purge_expired(conn)
                deleted = await inbox.purge(conn, older_than=inbox_retention)
                history = await live.purge(conn, older_than=events_retention)
            if deleted or history:
                log.info("purged %d inbox rows older than %s, %d video events older than %s",
                         deleted, inbox_retention, history, events_retention)
        except DATABASE_ERRORS as exc:
            log.warning("housekeeping failed: %r", exc)
        await asyncio.sleep(every)


async def serve(settings: ApiSettings) -> None:
    await migrate(settings.database_url)
    pool = await create_pool(
        settings.database_url, min_size=settings.db_pool_min, max_size=settings.db_pool_max
    )
    publisher = Publisher(pool=pool, bootstrap_servers=settings.kafka_bootstrap_servers)
    deps = intake_deps(settings, pool, publisher)
    broker = make_broker(settings.kafka_bootstrap_servers, "influgen-api")
    consumer.register(broker, deps=deps, group_id=settings.consumer_group,
                      fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
                      instance_id=settings.instance_id)
    await broker.start()
    relay = OutboxRelay(
        dsn=settings.database_url, bootstrap_servers=settings.kafka_bootstrap_servers
    )
    hub = VideoEventHub(settings.database_url)
    tasks = [asyncio.create_task(relay.run(), name="outbox-relay"),
             asyncio.create_task(publisher.run(), name="outbox-publisher"),
             asyncio.create_task(housekeeping(
                 pool, timedelta(days=settings.inbox_retention_days),
                 timedelta(days=settings.video_events_retention_days)), name="housekeeping"),
             asyncio.create_task(hub.run(), name="video-events")]
    app = build_app(settings, pool, broker, deps, hub)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.api_host, settings.api_port, reuse_address=True)
    await site.start()
    log.info("api listening on http://%s:%d", settings.api_host, settings.api_port)
    try:
        await serve_until_stopped(tasks, settings.ready_file)
    finally:
        log.info("api stopping")
        await runner.cleanup()
        await app[VIDEO_WRITER].close()
        await stop_broker(broker)
        await cancel(*tasks)
        await pool.close()


def main() -> None:
    settings = ApiSettings()
    configure_logging(settings.log_level, "api")
    run(serve(settings))


if __name__ == "__main__":
    main()
