"""Kafka helpers: the FastStream broker every service uses, topic creation and the DLQ."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Sequence
from typing import Any
from uuid import UUID, uuid5

from aiokafka import AIOKafkaConsumer, TopicPartition
from faststream.kafka import KafkaBroker

from shared.events import ALL_TOPICS, TOPIC_DLQ, DeadLetter

log = logging.getLogger(__name__)

#: Consumer options every subscriber uses. Offsets are committed by shared/consumer.py, only
#: for batches whose transaction has committed (never by aiokafka's auto-commit).
#: Handlers only touch PostgreSQL and return in milliseconds, far below max_poll_interval_ms.
#: With an `instance_id` (stable across restarts of one process slot, unique in the group)
#: the consumer is a static member (KIP-345): restarted after a crash, it takes its partitions
#: back at once instead of waiting for the dead member's session to time out.
def consumer_options(fetch_max_wait_ms: int, instance_id: str = "",
                     topic: str = "", fetch_min_bytes: int = 1) -> dict[str, Any]:
    options: dict[str, Any] = {
        "fetch_max_wait_ms": fetch_max_wait_ms,
        "fetch_min_bytes": fetch_min_bytes,
        "auto_offset_reset": "earliest",
        "max_poll_interval_ms": 300_000,
        "session_timeout_ms": 10_000,
        "heartbeat_interval_ms": 2_000,
    }
    if instance_id:
        options["group_instance_id"] = f"{instance_id}:{topic}"
    return options


def make_broker(bootstrap_servers: str, client_id: str) -> KafkaBroker:
    """A FastStream broker; nothing connects until `start()`.

    Its logger is one of ours (`influgen.kafka.<client_id>`: the service's level and
    format), not a child of `faststream`, which FastStream sets to INFO with a handler of
    its own whatever the service's level. Its "Received"/"Processed" lines, two per batch
    in every subscriber, are DEBUG: at INFO they were a write per line, about 900 lines a
    second at 200 jobs/s, and said nothing the services' own logs do not."""
    return KafkaBroker(
        bootstrap_servers,
        client_id=client_id,
        enable_idempotence=True,
        acks="all",
        graceful_timeout=15.0,
        logger=logging.getLogger(f"influgen.kafka.{client_id}"),
        log_level=logging.DEBUG,
    )


async def ensure_topics(bootstrap_servers: str, partitions: int = 6,
                        topics: Sequence[str] = ALL_TOPICS) -> list[str]:
    """Create those of `topics` (by default SPEC section 7's) that do not exist yet; return
    the ones created."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=15_000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            await admin.create_topics(
                [NewTopic(t, num_partitions=partitions, replication_factor=1) for t in missing]
            )
        return missing
    finally:
        await admin.close()


async def topic_partitions(bootstrap_servers: str, topics: list[str]) -> list[TopicPartition]:
    """Every partition of `topics`, from a metadata request (a consumer only knows the
    partitions of topics it subscribed to)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=15_000)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    return sorted(
        TopicPartition(t["topic"], p["partition"])
        for t in described if t["error_code"] == 0
        for p in t["partitions"]
    )


async def read_until(
    consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int], timeout: float = 30.0
) -> list[Any]:
    """Records from the consumer's current positions up to `ends` (exclusive).

    Stops on the offsets of the records actually returned, not on `position()`, which can
    run ahead of what `getmany` has handed out."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    next_offset = {tp: await consumer.position(tp) for tp in ends}
    records: list[Any] = []
    while any(next_offset[tp] < end for tp, end in ends.items()):
        if loop.time() > deadline:
            raise TimeoutError(f"could not read up to {ends} within {timeout}s")
        for tp, batch in (await consumer.getmany(timeout_ms=1000)).items():
            records.extend(batch)
            if batch:
                next_offset[tp] = batch[-1].offset + 1
    return records


async def read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every record of `topic` from the beginning up to its current end (tools and tests;
    no consumer group)."""
    tps = await topic_partitions(bootstrap, [topic])
    if not tps:
        raise LookupError(f"topic {topic} has no partitions")
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=50)
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        # Explicit offsets: aiokafka 0.14's seek_to_beginning() against a Kafka 4.3 broker
        # was seen to land one past the first record of a partition.
        for tp, offset in (await consumer.beginning_offsets(tps)).items():
            consumer.seek(tp, offset)
        return await read_until(consumer, ends)
    finally:
        await consumer.stop()


#: How much of a message the DLQ keeps: its records must stay well inside Kafka's 1 MiB
#: (base64 adds a third): a dead letter that cannot be published would stall the consumer
#: that writes it, at that message, for good.
MAX_DEAD_ORIGINAL = 256 * 1024
MAX_DEAD_KEY = 1024


#: Dead letters' event ids are derived from the message they carry (see `dead_letter`).
DEAD_LETTER_IDS = UUID("6f0f4f3e-8d1e-4d8a-9b0c-2a7d5e1c9b41")


def dead_letter(
    *,
    consumer: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes,
    reason: str,
) -> DeadLetter:
    return DeadLetter(
        event_id=uuid5(DEAD_LETTER_IDS, f"{consumer}|{topic}|{partition}|{offset}"),
        consumer=consumer,
        source_topic=topic,
        partition=partition,
        offset=offset,
        reason=reason[:2000],
        original_key_b64=base64.b64encode(key[:MAX_DEAD_KEY]).decode() if key is not None
        else None,
        original_value_b64=base64.b64encode(value[:MAX_DEAD_ORIGINAL]).decode(),
        original_size=len(value),
        original_truncated=len(value) > MAX_DEAD_ORIGINAL
        or (key is not None and len(key) > MAX_DEAD_KEY),
    )


async def publish_dead_letter(broker: KafkaBroker, letter: DeadLetter, key: bytes | None) -> None:
    """Publish to the DLQ (keyed by the original key's first `MAX_DEAD_KEY` bytes) and wait
    for the broker's acknowledgement."""
    log.warning(
        "dead-lettering %s[%d]@%d: %s",
        letter.source_topic, letter.partition, letter.offset, letter.reason,
    )
    await broker.publish(letter.model_dump_json().encode(), TOPIC_DLQ,
                         key=key[:MAX_DEAD_KEY] if key is not None else None)
