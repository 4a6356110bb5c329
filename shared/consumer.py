"""What every Kafka entrypoint does around its handler.

Subscribers use AckPolicy.NACK_ON_ERROR: the offset is committed after the handler returned,
that is after its transaction committed. A message that cannot be parsed goes to the DLQ
(then its offset is committed); any other error is retried by redelivery, after a pause so
that an outage (database down) does not spin."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.message import KafkaMessage
from pydantic import TypeAdapter, ValidationError

from shared.db import Conn
from shared.kafka import consumer_options, dead_letter, publish_dead_letter

T = TypeVar("T")
log = logging.getLogger(__name__)
RETRY_PAUSE_SECONDS = 1.0


async def decode_or_dead_letter(
    broker: KafkaBroker, message: KafkaMessage, adapter: TypeAdapter[T], consumer: str
) -> T | None:
    record: Any = message.raw_message
    try:
        return adapter.validate_json(record.value or b"")
    except ValidationError as exc:
        reason = f"not a valid message for {consumer}: {exc.error_count()} error(s): " + "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:10]
        )
        letter = dead_letter(
            consumer=consumer, topic=record.topic, partition=record.partition,
            offset=record.offset, key=record.key, value=record.value or b"", reason=reason,
        )
        await publish_dead_letter(broker, letter, record.key)
        return None


async def _the_message(message: KafkaMessage) -> KafkaMessage:
    """The subscribers' decoder: the handler gets the message itself and decodes it with
    its own adapter (or dead-letters it). This replaces FastStream's `Context("message")`
    parameter, which fast_depends 3 resolves in a worker thread for every message."""
    return message


async def pause_before_redelivery(exc: BaseException, consumer: str) -> None:
    log.warning("%s: handling failed (%r); the message will be redelivered", consumer, exc)
    await asyncio.sleep(RETRY_PAUSE_SECONDS)


def subscribe(
    broker: KafkaBroker,
    *,
    topic: str,
    adapter: TypeAdapter[T],
    consumer: str,
    group_id: str,
    fetch_max_wait_ms: int,
    description: str,
    pool: asyncpg.Pool,
    handle: Callable[[Conn, T, KafkaMessage], Awaitable[object]],
    after: Callable[[], None] | None = None,
    instance_id: str = "",
) -> None:
    """Subscribe `handle` to `topic`: decode (or dead-letter), then run `handle` inside one
    transaction; the offset is committed after that transaction, never before."""

    @broker.subscriber(
        topic, group_id=group_id, ack_policy=AckPolicy.NACK_ON_ERROR, description=description,
        title=f"{consumer}:{topic}", decoder=_the_message,
        **consumer_options(fetch_max_wait_ms, instance_id, topic),
    )
    async def entrypoint(message: Any) -> None:
        event = await decode_or_dead_letter(broker, message, adapter, consumer)
        if event is None:
            return
        try:
            async with pool.acquire() as conn, conn.transaction():
                await handle(conn, event, message)
        except Exception as exc:
            await pause_before_redelivery(exc, consumer)
            raise
        if after is not None:
            after()
