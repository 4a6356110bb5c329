"""Composition root of the generator: settings, pool, broker, providers, workers, relay."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import asyncpg

from services.generator import consumer
from services.generator.media import LocalMediaStore, MediaStore
from services.generator.providers.base import Provider
from services.generator.providers.builtin import LocalProvider, SandboxProvider
from services.generator.settings import GeneratorSettings
from services.generator.worker import Worker, WorkerConfig
from shared.db import create_pool, migrate
from shared.kafka import make_broker
from shared.outbox import OutboxRelay
from shared.runtime import cancel, configure_logging, wait_for_stop_signal

log = logging.getLogger("influgen.generator")


def build_providers(
    settings: GeneratorSettings, executor: ProcessPoolExecutor
) -> dict[str, Provider]:
    return {
        "local": LocalProvider(executor, preset=settings.x264_preset),
        "sandbox": SandboxProvider(executor, settings.media_dir.parent / "sandbox-cache"),
    }


def build_worker(settings: GeneratorSettings, pool: asyncpg.Pool,
                 providers: dict[str, Provider], media: MediaStore) -> Worker:
    owner = settings.instance_id or f"{socket.gethostname()}:{os.getpid()}"
    return Worker(
        pool=pool, providers=providers, media=media,
        cfg=WorkerConfig(owner=owner, concurrency=settings.concurrency,
                         lease_seconds=settings.lease_seconds,
                         poll_interval=settings.poll_interval_seconds),
    )


async def serve(settings: GeneratorSettings) -> None:
    await migrate(settings.database_url)
    pool = await create_pool(
        settings.database_url, min_size=settings.db_pool_min, max_size=settings.db_pool_max
    )
    executor = ProcessPoolExecutor(settings.render_processes, mp_context=get_context("spawn"))
    media = LocalMediaStore(settings.media_dir, settings.public_url)
    worker = build_worker(settings, pool, build_providers(settings, executor), media)
    broker = make_broker(settings.kafka_bootstrap_servers, "influgen-generator")
    consumer.register(broker, pool=pool, worker=worker, group_id=settings.consumer_group,
                      fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms)
    relay = OutboxRelay(dsn=settings.database_url,
                        bootstrap_servers=settings.kafka_bootstrap_servers)
    await broker.start()
    tasks = [asyncio.create_task(worker.run(), name="worker"),
             asyncio.create_task(relay.run(), name="outbox-relay")]
    log.info("generator running")
    try:
        await wait_for_stop_signal()
    finally:
        log.info("generator stopping")
        await broker.stop()
        await cancel(*tasks)
        executor.shutdown(cancel_futures=True)
        await pool.close()


def main() -> None:
    settings = GeneratorSettings()
    configure_logging(settings.log_level, "generator")
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
