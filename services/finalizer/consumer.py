"""Entrypoint for `influgen.video.generated.v1`."""

from __future__ import annotations

import asyncpg
from faststream.kafka import KafkaBroker
from faststream.kafka.message import KafkaMessage
from pydantic import TypeAdapter

from services.finalizer.handlers import CONSUMER, finalize
from shared.catalog import Catalog
from shared.consumer import subscribe
from shared.db import Conn
from shared.events import TOPIC_GENERATED, GenerationEvent


def register(broker: KafkaBroker, *, pool: asyncpg.Pool, catalog: Catalog, group_id: str,
             fetch_max_wait_ms: int) -> None:
    async def handle(conn: Conn, event: GenerationEvent, _: KafkaMessage) -> None:
        await finalize(conn, event, catalog)

    subscribe(
        broker, topic=TOPIC_GENERATED, adapter=TypeAdapter(GenerationEvent), consumer=CONSUMER,
        group_id=group_id, fetch_max_wait_ms=fetch_max_wait_ms,
        description="Generation outcomes: settle credits, set review state, emit completion.",
        pool=pool, handle=handle,
    )
