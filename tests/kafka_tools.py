"""Reading topics in tests, straight from the real broker."""

from __future__ import annotations

import json
from typing import Any

from aiokafka import AIOKafkaConsumer

from shared.kafka import read_until, topic_partitions


async def read_topic(bootstrap: str, topic: str) -> list[Any]:
    """Every record of `topic` from the beginning up to its current end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=50)
    tps = await topic_partitions(bootstrap, [topic])
    assert tps, f"topic {topic} has no partitions"
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


async def read_events(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    """The JSON objects on `topic`, skipping anything else: other tests put garbage on the
    shared topics on purpose."""
    events = []
    for record in await read_topic(bootstrap, topic):
        try:
            value = json.loads(record.value)
        except (ValueError, TypeError):
            continue
        if isinstance(value, dict):
            events.append(value)
    return events
