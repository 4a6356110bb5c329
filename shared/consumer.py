"""What every Kafka entrypoint does around its handler.

Subscribers use AckPolicy.NACK_ON_ERROR: the offset is committed after the handler returned,
that is after its transaction committed. A message that cannot be parsed goes to the DLQ
(then its offset is committed); any other error is retried by redelivery, after a pause so
that an outage (database down) does not spin."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, TypeVar

from faststream.kafka import KafkaBroker
from faststream.kafka.message import KafkaMessage
from pydantic import TypeAdapter, ValidationError

from shared.kafka import dead_letter, publish_dead_letter

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


async def pause_before_redelivery(exc: BaseException, consumer: str) -> None:
    log.warning("%s: handling failed (%r); the message will be redelivered", consumer, exc)
    await asyncio.sleep(RETRY_PAUSE_SECONDS)
