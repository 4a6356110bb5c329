"""Entrypoint for `influgen.video.jobs.v1`: accept the job into PostgreSQL and return.

The message is done once the job row holds its spec; the workers drive it from there, so a
long render never holds a Kafka message. Jobs for which this process has a free slot are
claimed by the same statement and handed straight to the workers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import asyncpg
from faststream.kafka import KafkaBroker
from pydantic import TypeAdapter

from services.generator import repository as repo
from services.generator.worker import Worker
from shared.consumer import subscribe
from shared.db import Conn, WalFlusher
from shared.events import TOPIC_JOBS, VideoJobQueued

CONSUMER = "generator"


async def accept_jobs(conn: Conn, events: Sequence[tuple[VideoJobQueued, bytes]],
                      slots: repo.Slots | None = None, flush_wait: bool = True) -> repo.Accepted:
    """Accept the jobs of the events this consumer has not seen yet, in one statement,
    claiming them into `slots` if given (see `repo.accept`)."""
    return await repo.accept(conn, consumer=CONSUMER,
                             events=[(event.event_id, event.job) for event, _ in events],
                             slots=slots, flush_wait=flush_wait)


class SlotLender(Protocol):
    """What of the workers the consumer uses (`Worker`)."""

    def take_slots(self) -> repo.Slots: ...

    def adopt(self, slots: repo.Slots, claimed: Sequence[Any]) -> None: ...


async def accept_batch(conn: Conn, events: Sequence[tuple[VideoJobQueued, bytes]],
                       worker: SlotLender) -> set[str]:
    """Accept a batch of job events, claiming jobs into the workers' free slots and handing
    them over, unless `conn` is inside a transaction (never claim what a rollback could
    take back); the providers of the jobs left queued. Outside a transaction the accept's
    commit does not wait for the disk: the subscriber flushes the WAL before it commits
    the events' offsets (`register`)."""
    if conn.is_in_transaction():
        return (await accept_jobs(conn, events)).queued
    slots = worker.take_slots()
    claimed: list[Any] = []
    try:
        accepted = await accept_jobs(conn, events, slots, flush_wait=False)
        claimed = accepted.claimed
        return accepted.queued
    finally:
        worker.adopt(slots, claimed)  # on an error nothing was claimed: the slots come back


def register(broker: KafkaBroker, *, pool: asyncpg.Pool, worker: Worker, flusher: WalFlusher,
             group_id: str, fetch_max_wait_ms: int, instance_id: str = "") -> None:
    """Subscribe the generator to job events. `flusher` must be started before the broker:
    it covers the accepts committed after that."""
    queued: set[str] = set()  # providers with jobs accepted and left queued by the batch

    async def handle(conn: Conn, events: Sequence[tuple[VideoJobQueued, bytes]]) -> None:
        queued.update(await accept_batch(conn, events, worker))

    def committed() -> None:
        worker.wake(queued)  # only those providers' jobs can be new
        queued.clear()

    subscribe(
        broker, topic=TOPIC_JOBS, adapter=TypeAdapter(VideoJobQueued), consumer=CONSUMER,
        group_id=group_id, fetch_max_wait_ms=fetch_max_wait_ms,
        description="Jobs to run: each is accepted into PostgreSQL and driven by the workers.",
        pool=pool, handle=handle, after=committed, instance_id=instance_id,
        one_statement=True,  # accept_jobs
        flush=flusher,  # accept_batch commits without a flush
    )
