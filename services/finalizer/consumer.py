"""Entrypoint for `influgen.video.generated.v1`."""

from __future__ import annotations

import asyncpg
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from pydantic import TypeAdapter

from services.finalizer.handlers import CONSUMER, finalize
from shared.catalog import Catalog
from shared.consumer import decode_or_dead_letter, pause_before_redelivery
from shared.events import TOPIC_GENERATED, GenerationEvent
from shared.kafka import consumer_options

_ADAPTER: TypeAdapter[GenerationEvent] = TypeAdapter(GenerationEvent)


def register(broker: KafkaBroker, *, pool: asyncpg.Pool, catalog: Catalog, group_id: str,
             fetch_max_wait_ms: int) -> None:
    @broker.subscriber(
        TOPIC_GENERATED, group_id=group_id, ack_policy=AckPolicy.NACK_ON_ERROR,
        description="Generation outcomes: settle credits, set review state, emit completion.",
        **consumer_options(fetch_max_wait_ms),
    )
    async def on_generated(message: KafkaMessage) -> None:
        event = await decode_or_dead_letter(broker, message, _ADAPTER, CONSUMER)
        if event is None:
            return
        try:
            async with pool.acquire() as conn, conn.transaction():
                await finalize(conn, event, catalog)
        except Exception as exc:
            await pause_before_redelivery(exc, CONSUMER)
            raise
