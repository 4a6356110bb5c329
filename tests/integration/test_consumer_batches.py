"""Batched consumption (shared/consumer.py) against the real Kafka and PostgreSQL: records
that arrive together are applied in one transaction, offsets are committed after it, and a
message that fails holds back no other message's effect."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from uuid import UUID, uuid4

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from pydantic import BaseModel, TypeAdapter

from shared import consumer as batches
from shared.consumer import Handle, apply_batch, one_by_one, stop_broker, subscribe
from shared.db import Conn, flush_wal
from shared.inbox import first_deliveries, first_delivery
from shared.kafka import ensure_topics, make_broker
from tests.infra import Infra
from tests.integration.conftest import eventually

pytestmark = pytest.mark.integration


class Ping(BaseModel):
    event_id: UUID
    poison: bool = False


async def recorded(pool: asyncpg.Pool, consumer: str) -> dict[UUID, int]:
    """The events `consumer` applied, with the id of the transaction that applied each."""
    rows = await pool.fetch(
        "SELECT event_id, xmin::text::bigint AS tx FROM inbox WHERE consumer = $1", consumer)
    return {row["event_id"]: row["tx"] for row in rows}


def handler(consumer: str) -> Handle[Ping]:
    async def handle(conn: Conn, event: Ping, _: bytes) -> None:
        await first_delivery(conn, consumer=consumer, event_id=event.event_id)
        if event.poison:
            raise ValueError("this message breaks its handler")
    return handle


async def test_a_failing_message_holds_back_no_other(
    pool: asyncpg.Pool, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batches, "RETRY_PAUSE_SECONDS", 0.0)
    consumer = f"test-batch-{unique}"
    good = [Ping(event_id=uuid4()) for _ in range(3)]
    bad = Ping(event_id=uuid4(), poison=True)
    batch = [(good[0], b""), (bad, b""), (good[1], b""), (good[2], b"")]
    with pytest.raises(ValueError, match="breaks its handler"):
        await apply_batch(pool, one_by_one(handler(consumer)), batch, consumer)
    # The batch's transaction failed; each good message was then applied alone.
    applied = await recorded(pool, consumer)
    assert set(applied) == {p.event_id for p in good}
    assert len(set(applied.values())) == 3
    # Redelivered (the offsets were not committed), the good ones change nothing.
    await apply_batch(pool, one_by_one(handler(consumer)), [(p, b"") for p in good],
                      consumer)
    assert await recorded(pool, consumer) == applied


async def test_a_one_statement_handler_runs_outside_a_transaction(
    pool: asyncpg.Pool, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`one_statement`: no BEGIN and COMMIT around the handler (its single statement is
    atomic); a batch that fails is still applied message by message."""
    monkeypatch.setattr(batches, "RETRY_PAUSE_SECONDS", 0.0)
    consumer = f"test-one-{unique}"
    seen: list[bool] = []

    async def handle(conn: Conn, events: Sequence[tuple[Ping, bytes]]) -> None:
        seen.append(conn.is_in_transaction())
        if any(event.poison for event, _ in events):
            raise ValueError("this message breaks its handler")
        await first_deliveries(conn, consumer=consumer,
                               event_ids=[event.event_id for event, _ in events])

    good = [Ping(event_id=uuid4()) for _ in range(2)]
    await apply_batch(pool, handle, [(p, b"") for p in good], consumer, one_statement=True)
    with pytest.raises(ValueError, match="breaks its handler"):
        await apply_batch(pool, handle, [(good[0], b""), (Ping(event_id=uuid4(), poison=True),
                                                          b"")], consumer, one_statement=True)
    await apply_batch(pool, handle, [(good[0], b"")], consumer)
    assert seen == [False, False, False, False, True]
    assert set(await recorded(pool, consumer)) == {p.event_id for p in good}


async def test_records_that_arrive_together_share_a_transaction(
    infra: Infra, pool: asyncpg.Pool, unique: str
) -> None:
    topic, group, consumer = f"test.batches.{unique}", f"test-batches-{unique}", f"test-{unique}"
    await ensure_topics(infra.bootstrap_servers, partitions=2, topics=[topic])
    pings = [Ping(event_id=uuid4()) for _ in range(60)]
    # All on the topic before the consumer starts: they arrive together.
    await send(infra, topic, [*(p.model_dump_json().encode() for p in pings), b"not json"])

    broker = make_broker(infra.bootstrap_servers, "test-batches")
    woken = asyncio.Event()
    subscribe(broker, topic=topic, adapter=TypeAdapter(Ping), consumer=consumer,
              group_id=group, fetch_max_wait_ms=10, description="test", pool=pool,
              handle=one_by_one(handler(consumer)), after=woken.set)
    await broker.start()
    try:
        async def all_applied() -> bool:
            return len(await recorded(pool, consumer)) == len(pings)

        await eventually(all_applied, timeout=30)
        assert woken.is_set()
        # Committed while running (every COMMIT_INTERVAL_SECONDS), not only at the stop.
        assert await eventually(lambda: committed_everything(infra, topic, group), timeout=10)
    finally:
        await stop_broker(broker)
    applied = await recorded(pool, consumer)
    assert set(applied) == {p.event_id for p in pings}
    assert len(set(applied.values())) < len(pings) / 5, "the records were applied one by one"

    # Every offset is committed, the malformed record's too (it went to the DLQ).
    ends = await committed_everything(infra, topic, group)
    assert ends is not None
    assert sum(ends.values()) == len(pings) + 1


async def test_offsets_wait_for_the_flush_of_a_handler_that_does_not_wait_for_the_disk(
    infra: Infra, pool: asyncpg.Pool, unique: str
) -> None:
    """`flush` (for handlers whose commits do not wait for the disk, as the generator's
    accept): awaited before the offsets are committed, and while it fails nothing is
    committed, however long the batches have been applied."""
    topic, group, consumer = f"test.flush.{unique}", f"test-flush-{unique}", f"test-{unique}"
    await ensure_topics(infra.bootstrap_servers, partitions=2, topics=[topic])
    pings = [Ping(event_id=uuid4()) for _ in range(10)]
    await send(infra, topic, [p.model_dump_json().encode() for p in pings])
    flushes: list[bool] = []
    failing = True

    async def flush() -> None:
        flushes.append(failing)
        if failing:
            raise ConnectionError("the database is away")
        await flush_wal(pool)

    broker = make_broker(infra.bootstrap_servers, "test-flush")
    subscribe(broker, topic=topic, adapter=TypeAdapter(Ping), consumer=consumer,
              group_id=group, fetch_max_wait_ms=10, description="test", pool=pool,
              handle=one_by_one(handler(consumer)), flush=flush)
    await broker.start()
    try:
        async def all_applied() -> bool:
            return len(await recorded(pool, consumer)) == len(pings)

        async def tried_twice() -> bool:
            return len(flushes) >= 2

        await eventually(all_applied, timeout=30)
        await eventually(tried_twice, timeout=10)
        assert set((await committed_offsets(infra, topic, group)).values()) == {None}
        failing = False
        assert await eventually(lambda: committed_everything(infra, topic, group), timeout=10)
        assert flushes[-1] is False
    finally:
        await stop_broker(broker)


async def send(infra: Infra, topic: str, values: Sequence[bytes]) -> None:
    """Send `values` to both partitions of `topic` in turn, and wait for the last."""
    producer = AIOKafkaProducer(bootstrap_servers=infra.bootstrap_servers)
    await producer.start()
    try:
        for i, value in enumerate(values):
            await producer.send(topic, value, key=str(i % 2).encode())
        await producer.flush()
    finally:
        await producer.stop()


async def committed_offsets(infra: Infra, topic: str, group: str
                            ) -> dict[TopicPartition, int | None]:
    """What `group` committed for both partitions of `topic` (None: nothing)."""
    reader = AIOKafkaConsumer(bootstrap_servers=infra.bootstrap_servers, group_id=group,
                              enable_auto_commit=False)
    await reader.start()
    try:
        return {tp: await reader.committed(tp)
                for tp in (TopicPartition(topic, p) for p in (0, 1))}
    finally:
        await reader.stop()


async def committed_everything(infra: Infra, topic: str, group: str
                               ) -> dict[TopicPartition, int] | None:
    """The end offsets of both partitions of `topic` if `group` committed them, else None."""
    committed = await committed_offsets(infra, topic, group)
    reader = AIOKafkaConsumer(bootstrap_servers=infra.bootstrap_servers)
    await reader.start()
    try:
        ends: dict[TopicPartition, int] = await reader.end_offsets(list(committed))
    finally:
        await reader.stop()
    return ends if committed == ends else None
