"""Entrypoint for `influgen.video.jobs.v1`: accept the job into PostgreSQL and return.

The message is done once the job row holds its spec; the workers drive it from there, so a
long render never holds a Kafka message."""

from __future__ import annotations

import asyncpg
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from pydantic import TypeAdapter

from services.generator import repository as repo
from services.generator.worker import Worker
from shared.consumer import decode_or_dead_letter, pause_before_redelivery
from shared.events import TOPIC_JOBS, VideoJobQueued
from shared.inbox import first_delivery
from shared.kafka import consumer_options

CONSUMER = "generator"
_ADAPTER = TypeAdapter(VideoJobQueued)


def register(broker: KafkaBroker, *, pool: asyncpg.Pool, worker: Worker, group_id: str,
             fetch_max_wait_ms: int) -> None:
    @broker.subscriber(
        TOPIC_JOBS, group_id=group_id, ack_policy=AckPolicy.NACK_ON_ERROR,
        description="Jobs to run: each is accepted into PostgreSQL and driven by the workers.",
        **consumer_options(fetch_max_wait_ms),
    )
    async def on_job_queued(message: KafkaMessage) -> None:
        event = await decode_or_dead_letter(broker, message, _ADAPTER, CONSUMER)
        if event is None:
            return
        try:
            async with pool.acquire() as conn, conn.transaction():
                if await first_delivery(conn, consumer=CONSUMER, event_id=event.event_id):
                    await repo.accept(conn, spec=event.job)
        except Exception as exc:
            await pause_before_redelivery(exc, CONSUMER)
            raise
        worker.wake()
