"""Composition root of the generator: settings, pool, broker, providers, workers, relay,
publisher."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import aiohttp
import asyncpg
from prometheus_client import start_http_server

from services.generator import consumer
from services.generator.media import LocalMediaStore, MediaStore
from services.generator.metrics import Metrics
from services.generator.providers.base import Provider
from services.generator.providers.builtin import LocalProvider, SandboxProvider
from services.generator.providers.replicate import ReplicateProvider
from services.generator.settings import GeneratorSettings
from services.generator.worker import Worker, WorkerConfig
from shared.consumer import stop_broker
from shared.db import WalFlusher, create_pool, migrate
from shared.kafka import make_broker
from shared.outbox import OutboxRelay, Publisher
from shared.runtime import cancel, configure_logging, run, serve_until_stopped

log = logging.getLogger("influgen.generator")


def build_providers(
    settings: GeneratorSettings, executor: ProcessPoolExecutor, http: aiohttp.ClientSession
) -> dict[str, Provider]:
    providers: dict[str, Provider] = {
        "local": LocalProvider(executor, preset=settings.x264_preset),
        "sandbox": SandboxProvider(executor, settings.media_dir.parent / "sandbox-cache"),
    }
    token = settings.replicate_api_token.get_secret_value()
    if token:
        providers["replicate"] = ReplicateProvider(
            http, base_url=settings.replicate_base_url, token=token,
            poll_interval=settings.replicate_poll_interval_seconds,
            request_timeout=settings.provider_request_timeout_seconds,
        )
    return providers


def build_worker(settings: GeneratorSettings, pool: asyncpg.Pool,
                 providers: dict[str, Provider], media: MediaStore, metrics: Metrics,
                 publisher: Publisher | None = None) -> Worker:
    owner = settings.instance_id or f"{socket.gethostname()}:{os.getpid()}"
    return Worker(
        pool=pool, providers=providers, media=media, metrics=metrics, publisher=publisher,
        cfg=WorkerConfig(owner=owner, concurrency=settings.concurrency,
                         provider_concurrency=settings.provider_concurrency,
                         reclaim_on_start=bool(settings.instance_id),
                         lease_seconds=settings.lease_seconds,
                         poll_interval=settings.poll_interval_seconds,
                         max_attempts=settings.max_attempts,
                         retry_base_seconds=settings.retry_base_seconds,
                         retry_cap_seconds=settings.retry_cap_seconds,
                         watch_interval=settings.watch_interval_seconds),
    )


async def open_pool(settings: GeneratorSettings) -> asyncpg.Pool:
    """The service's pool. Its statements find jobs by id or by partial indexes of their
    states, and the accept would otherwise be planned again on every call
    (`shared.db.GENERIC_PLANS`)."""
    return await create_pool(settings.database_url, min_size=settings.db_pool_min,
                             max_size=settings.db_pool_max, generic_plans=True)


async def serve(settings: GeneratorSettings) -> None:
    await migrate(settings.database_url)
    pool = await open_pool(settings)
    executor = ProcessPoolExecutor(settings.render_processes, mp_context=get_context("spawn"))
    media = LocalMediaStore(settings.media_dir, settings.public_url)
    http = aiohttp.ClientSession()
    metrics = Metrics()
    if settings.metrics_port:
        start_http_server(settings.metrics_port, addr="127.0.0.1", registry=metrics.registry)
    publisher = Publisher(pool=pool, bootstrap_servers=settings.kafka_bootstrap_servers)
    worker = build_worker(settings, pool, build_providers(settings, executor, http), media,
                          metrics, publisher)
    broker = make_broker(settings.kafka_bootstrap_servers, "influgen-generator")
    flusher = WalFlusher(settings.database_url)
    await flusher.start()  # before the first accept it is to make durable
    consumer.register(broker, pool=pool, worker=worker, flusher=flusher,
                      group_id=settings.consumer_group,
                      fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
                      instance_id=settings.instance_id)
    relay = OutboxRelay(dsn=settings.database_url,
                        bootstrap_servers=settings.kafka_bootstrap_servers)
    await broker.start()
    tasks = [asyncio.create_task(worker.run(), name="worker"),
             asyncio.create_task(relay.run(), name="outbox-relay"),
             asyncio.create_task(publisher.run(), name="outbox-publisher")]
    log.info("generator running")
    try:
        await serve_until_stopped(tasks, settings.ready_file)
    finally:
        log.info("generator stopping")
        await stop_broker(broker)
        await flusher.close()
        await cancel(*tasks)
        executor.shutdown(cancel_futures=True)
        await http.close()
        await pool.close()


def main() -> None:
    settings = GeneratorSettings()
    configure_logging(settings.log_level, "generator")
    run(serve(settings))


if __name__ == "__main__":
    main()
