"""Batched consumption (shared/consumer.py) against the real Kafka and PostgreSQL: records
that arrive together are applied in one transaction, offsets are committed after it, and a
message that fails holds back no other message's effect."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable, Sequence
from uuid import UUID, uuid4

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from faststream.kafka import KafkaBroker
from pydantic import BaseModel, TypeAdapter

from shared import consumer as batches
from shared.consumer import Handle, HandleBatch, apply_batch, one_by_one, stop_broker, subscribe
from shared.db import Conn, DurabilityUnknown, WalFlusher, flush_wal
from shared.events import TOPIC_DLQ
from shared.inbox import first_deliveries, first_delivery
from shared.kafka import ensure_topics, make_broker
from tests.infra import Infra
from tests.integration.conftest import eventually
from tests.kafka_tools import read_topic

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


async def test_a_message_its_own_data_fails_goes_to_the_dlq_and_holds_nothing_back(
    infra: Infra, pool: asyncpg.Pool, unique: str
) -> None:
    """A message that PostgreSQL refuses for its values (a data exception, here a division
    by zero standing for a value out of a column's range) fails at every redelivery: it
    used to hold its partition for good. It goes to the DLQ; the messages after it on the
    same partition are applied, and every offset is committed."""
    topic, group, consumer = f"test.poison.{unique}", f"test-poison-{unique}", f"test-{unique}"
    await ensure_topics(infra.bootstrap_servers, partitions=2, topics=[topic])
    good = [Ping(event_id=uuid4()) for _ in range(9)]
    bad = Ping(event_id=uuid4(), poison=True)

    async def handle(conn: Conn, event: Ping, _: bytes) -> None:
        await first_delivery(conn, consumer=consumer, event_id=event.event_id)
        if event.poison:
            await conn.execute("SELECT 1 / 0")

    producer = AIOKafkaProducer(bootstrap_servers=infra.bootstrap_servers)
    await producer.start()
    try:  # partition 1: the good ones after the bad one can only follow it
        for ping in [*good[:4], bad, *good[4:8]]:
            await producer.send(topic, ping.model_dump_json().encode(), partition=1)
        await producer.send(topic, good[8].model_dump_json().encode(), partition=0)
        await producer.flush()
    finally:
        await producer.stop()
    broker = make_broker(infra.bootstrap_servers, "test-poison")
    subscribe(broker, topic=topic, adapter=TypeAdapter(Ping), consumer=consumer,
              group_id=group, fetch_max_wait_ms=10, description="test", pool=pool,
              handle=one_by_one(handle))
    await broker.start()
    try:
        async def all_good_applied() -> bool:
            return set(await recorded(pool, consumer)) == {p.event_id for p in good}

        await eventually(all_good_applied, timeout=30)
        ends = await eventually(lambda: committed_everything(infra, topic, group), timeout=10)
        assert sum(ends.values()) == len(good) + 1
    finally:
        await stop_broker(broker)
    letters = [json.loads(r.value) for r in await read_topic(infra.bootstrap_servers, TOPIC_DLQ)]
    [letter] = [x for x in letters if x["source_topic"] == topic]
    assert letter["reason"].startswith("could not be applied: DivisionByZeroError(")
    assert json.loads(base64.b64decode(letter["original_value_b64"]))["event_id"] == str(
        bad.event_id)


async def test_offsets_wait_for_the_flush_of_a_handler_that_does_not_wait_for_the_disk(
    infra: Infra, pool: asyncpg.Pool, unique: str
) -> None:
    """`flush` (for handlers whose commits do not wait for the disk, as the generator's
    accept): awaited before the offsets are committed, and while it fails nothing is
    committed, however long the batches have been applied."""
    consumer = f"test-{unique}"
    flushes: list[bool] = []
    failing = True

    async def flush() -> None:
        flushes.append(failing)
        if failing:
            raise ConnectionError("the database is away")
        await flush_wal(pool)

    topic, group, pings, broker = await pings_to(infra, pool, f"flush-{unique}", consumer, flush)
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


async def test_effects_a_flush_cannot_vouch_for_are_applied_again(
    infra: Infra, pool: asyncpg.Pool, unique: str
) -> None:
    """When `flush` raises `DurabilityUnknown` (PostgreSQL may have crashed and lost the
    commits that did not wait for the disk), nothing is committed and the subscriber reads
    again from the committed offsets: what was lost is applied again."""
    consumer = f"test-{unique}"
    flushes: list[int] = []  # how many events had been applied at each flush

    async def flush() -> None:
        flushes.append(len(await recorded(pool, consumer)))
        if len(flushes) == 1:  # what a crash does to commits not yet on the disk
            await pool.execute("DELETE FROM inbox WHERE consumer = $1", consumer)
            raise DurabilityUnknown("as after a crash")
        await flush_wal(pool)

    topic, group, pings, broker = await pings_to(infra, pool, f"lost-{unique}", consumer, flush)
    try:
        assert await eventually(lambda: committed_everything(infra, topic, group), timeout=30)
        assert flushes[0] > 0  # something had been applied, and was then lost
        assert set(await recorded(pool, consumer)) == {p.event_id for p in pings}
    finally:
        await stop_broker(broker)


async def test_the_flusher_tells_when_it_cannot_vouch_for_earlier_commits(
    infra: Infra, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`WalFlusher` flushes on a connection open since `start`; once that connection has
    been ended (as a crash of PostgreSQL ends them all), it raises `DurabilityUnknown`
    once, on a new connection. A flush that fails on a live connection loses nothing."""
    flusher = WalFlusher(infra.database_url)
    await flusher.start()
    try:
        await flusher()
        ended = await pool.fetchval(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE query LIKE 'UPDATE wal_flush%' AND pid <> pg_backend_pid()")
        assert ended >= 1
        with pytest.raises(DurabilityUnknown):
            await flusher()
        await flusher()  # the new connection covers the commits made after it opened
        monkeypatch.setattr(WalFlusher, "TIMEOUT_SECONDS", 0.2)
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("LOCK TABLE wal_flush IN EXCLUSIVE MODE")
            with pytest.raises(TimeoutError):
                await flusher()
        await flusher()
    finally:
        await flusher.close()


async def pings_to(infra: Infra, pool: asyncpg.Pool, name: str, consumer: str,
                   flush: Callable[[], Awaitable[None]], handle: HandleBatch[Ping] | None = None,
                   one_statement: bool = False) -> tuple[str, str, list[Ping], KafkaBroker]:
    """Ten pings on a new topic of two partitions, and a started subscriber to it of
    `consumer` with `flush` and `handle` (by default `handler`'s, one by one in a
    transaction): the topic, the group, the pings and the broker (to stop)."""
    topic, group = f"test.{name}", f"test-{name}"
    await ensure_topics(infra.bootstrap_servers, partitions=2, topics=[topic])
    pings = [Ping(event_id=uuid4()) for _ in range(10)]
    await send(infra, topic, [p.model_dump_json().encode() for p in pings])
    broker = make_broker(infra.bootstrap_servers, f"test-{name}")
    subscribe(broker, topic=topic, adapter=TypeAdapter(Ping), consumer=consumer,
              group_id=group, fetch_max_wait_ms=10, description="test", pool=pool,
              handle=handle or one_by_one(handler(consumer)), one_statement=one_statement,
              flush=flush)
    await broker.start()
    return topic, group, pings, broker


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
