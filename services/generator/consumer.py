"""Entrypoint for `influgen.video.jobs.v1`: accept the job into PostgreSQL and return.

The message is done once the job row holds its spec; the workers drive it from there, so a
long render never holds a Kafka message."""

from __future__ import annotations

import asyncpg
from faststream.kafka import KafkaBroker
from pydantic import TypeAdapter

from services.generator import repository as repo
from services.generator.worker import Worker
from shared.consumer import subscribe
from shared.db import Conn
from shared.events import TOPIC_JOBS, VideoJobQueued
from shared.inbox import first_delivery

CONSUMER = "generator"


async def accept_job(conn: Conn, event: VideoJobQueued, _: bytes = b"") -> None:
    if await first_delivery(conn, consumer=CONSUMER, event_id=event.event_id):
        await repo.accept(conn, spec=event.job)


def register(broker: KafkaBroker, *, pool: asyncpg.Pool, worker: Worker, group_id: str,
             fetch_max_wait_ms: int, instance_id: str = "") -> None:
    subscribe(
        broker, topic=TOPIC_JOBS, adapter=TypeAdapter(VideoJobQueued), consumer=CONSUMER,
        group_id=group_id, fetch_max_wait_ms=fetch_max_wait_ms,
        description="Jobs to run: each is accepted into PostgreSQL and driven by the workers.",
        pool=pool, handle=accept_job, after=worker.wake, instance_id=instance_id,
    )
