"""Entrypoint for `influgen.video.generated.v1`."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg
from faststream.kafka import KafkaBroker
from pydantic import TypeAdapter

from services.finalizer.handlers import CONSUMER, finalize_many
from services.finalizer.webhooks import CONSUMER as WEBHOOKS_CONSUMER
from services.finalizer.webhooks import WebhookSender
from shared.catalog import Catalog
from shared.consumer import subscribe
from shared.db import Conn
from shared.events import TOPIC_COMPLETED, TOPIC_GENERATED, GenerationEvent, VideoCompleted
from shared.outbox import Publisher

#: What the webhook consumer's fetch waits for (see `register_webhooks`): a completion
#: event is 1-2 KiB.
WEBHOOK_FETCH_MIN_BYTES = 64 * 1024


def register_webhooks(broker: KafkaBroker, *, pool: asyncpg.Pool, sender: WebhookSender,
                      group_id: str, fetch_max_wait_ms: int, instance_id: str = "") -> None:
    """Record the webhook deliveries of completion events (`WebhookSender.record`). The
    consumer asks the broker for at least `WEBHOOK_FETCH_MIN_BYTES` or its fetch wait,
    whichever comes first: a delivery is an HTTP request made later anyway, so a batch
    may wait up to the fetch wait (100 ms by default) to be recorded with more events;
    at 200 videos/s that is a statement and a fetch for about twenty events instead of
    one or two."""
    async def handle(conn: Conn, events: Sequence[tuple[VideoCompleted, bytes]]) -> None:
        await sender.record(conn, events)

    subscribe(
        broker, topic=TOPIC_COMPLETED, adapter=TypeAdapter(VideoCompleted),
        consumer=WEBHOOKS_CONSUMER, group_id=group_id, fetch_max_wait_ms=fetch_max_wait_ms,
        fetch_min_bytes=WEBHOOK_FETCH_MIN_BYTES,
        description="Completion events: one signed webhook delivery per matching endpoint.",
        pool=pool, handle=handle, instance_id=instance_id,
        one_statement=True,  # WebhookSender.record
    )


def register(broker: KafkaBroker, *, pool: asyncpg.Pool, catalog: Catalog, group_id: str,
             fetch_max_wait_ms: int, instance_id: str = "",
             publisher: Publisher | None = None) -> None:
    async def handle(conn: Conn, events: Sequence[tuple[GenerationEvent, bytes]]) -> None:
        await finalize_many(conn, [event for event, _ in events], catalog, publisher)

    subscribe(
        broker, topic=TOPIC_GENERATED, adapter=TypeAdapter(GenerationEvent), consumer=CONSUMER,
        group_id=group_id, fetch_max_wait_ms=fetch_max_wait_ms,
        description="Generation outcomes: settle credits, set review state, emit completion.",
        pool=pool, handle=handle, instance_id=instance_id,
        one_statement=True,  # finalize_many: a read, then one atomic write
    )
