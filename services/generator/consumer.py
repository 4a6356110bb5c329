"""Entrypoint for `influgen.video.jobs.v1`: accept the job into PostgreSQL and return.

The message is done once the job row holds its spec; the workers drive it from there, so a
long render never holds a Kafka message."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
from faststream.kafka import KafkaBroker
from pydantic import TypeAdapter

from services.generator import repository as repo
from services.generator.worker import Worker
from shared.consumer import subscribe
from shared.db import Conn
from shared.events import TOPIC_JOBS, VideoJobQueued

CONSUMER = "generator"


async def accept_jobs(conn: Conn, events: Sequence[tuple[VideoJobQueued, bytes]]) -> set[str]:
    """Accept the jobs of the events this consumer has not seen yet, in one statement; the
    providers of the jobs accepted."""
    return await repo.accept(conn, consumer=CONSUMER,
                             events=[(event.event_id, event.job) for event, _ in events])


def register(broker: KafkaBroker, *, pool: asyncpg.Pool, worker: Worker, group_id: str,
             fetch_max_wait_ms: int, instance_id: str = "") -> None:
    accepted: set[str] = set()  # providers with jobs accepted by the batch being applied

    async def handle(conn: Conn, events: Sequence[tuple[VideoJobQueued, bytes]]) -> None:
        accepted.update(await accept_jobs(conn, events))

    def committed() -> None:
        worker.wake(accepted)  # only those providers' jobs can be new
        accepted.clear()

    subscribe(
        broker, topic=TOPIC_JOBS, adapter=TypeAdapter(VideoJobQueued), consumer=CONSUMER,
        group_id=group_id, fetch_max_wait_ms=fetch_max_wait_ms,
        description="Jobs to run: each is accepted into PostgreSQL and driven by the workers.",
        pool=pool, handle=handle, after=committed, instance_id=instance_id,
        one_statement=True,  # accept_jobs
    )
