"""Transactional outbox: events are written in the effect's transaction and relayed to Kafka.

`enqueue` inserts the event and signals the relay with NOTIFY (delivered at commit), so
events leave within milliseconds of the commit rather than after a polling interval.

One relay is active per database at a time (a session-level advisory lock); every service
process runs one, so whichever process holds the lock relays all events, and another takes
over within `poll_interval` when it dies. The active relay publishes a batch, waits for
Kafka's acknowledgements, then deletes the rows (with the statement that reads the next
batch: one round trip per batch).

Exactly once: a relay stopped between publishing and deleting leaves rows that are already
on Kafka. On taking the lock, a relay reads the tail of every partition of the pending rows'
topics (the last `batch_size` messages, which hold every message the previous relay may
have sent without deleting: only relays write these topics, one batch at a time) and
deletes the rows whose `outbox-id` header it finds there, instead of publishing them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import BaseModel

from shared.db import Conn
from shared.kafka import read_until, topic_partitions
from shared.runtime import wait_event

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "influgen_outbox"
RELAY_LOCK = 7_201_002
#: Longest wait between relay sessions while the database or the broker is away: a retry
#: costs one connection attempt, and every second of wait adds to the recovery afterwards.
MAX_RETRY_DELAY = 2.0
OUTBOX_ID_HEADER = "outbox-id"


async def enqueue(conn: Conn, *, topic: str, key: str, event: BaseModel) -> None:
    """Add an event to the outbox; call inside the transaction of the effect it reports."""
    await enqueue_many(conn, topic=topic, events=[(key, event)])


async def enqueue_many(
    conn: Conn, *, topic: str, events: Sequence[tuple[str, BaseModel]]
) -> None:
    """Add `(key, event)` pairs to the outbox in one statement, with one wake-up signal
    (delivered at commit); call inside the transaction of the effects they report."""
    await conn.execute(
        "WITH e AS (SELECT * FROM unnest($2::text[], $3::uuid[], $4::bytea[])"
        " WITH ORDINALITY AS e(key, event_id, payload, n)),"
        f" row AS ({insert_from('e', topic='$1')})"
        " SELECT pg_notify($5, '')",
        topic,
        [key for key, _ in events],
        [event.event_id for _, event in events],  # type: ignore[attr-defined]
        [event.model_dump_json().encode() for _, event in events],
        NOTIFY_CHANNEL,
    )


def insert_from(rows: str, *, topic: str) -> str:
    """The outbox insert as the body of a data-modifying CTE, for statements that write
    events together with their effects in one round trip: `rows` is a relation with the
    columns `key`, `event_id`, `payload` (the event's JSON) and `n` (their order), `topic`
    the topic's placeholder. Such a statement must also wake the relay, with
    `pg_notify(NOTIFY_CHANNEL, '')`, when it inserts a row."""
    return ("INSERT INTO outbox (topic, key, event_id, payload)"
            f" SELECT {topic}, key, event_id, payload FROM {rows} ORDER BY n")


class OutboxRelay:
    def __init__(
        self,
        *,
        dsn: str,
        bootstrap_servers: str,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        after_publish: Callable[[list[int]], Awaitable[None]] | None = None,
    ) -> None:
        self._dsn = dsn
        self._bootstrap = bootstrap_servers
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._after_publish = after_publish
        self._wake = asyncio.Event()
        self.active = False

    async def run(self) -> None:
        """Relay until cancelled, surviving database and broker outages."""
        delay = self._poll_interval
        while True:
            try:
                await self.run_session()
                delay = self._poll_interval
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("outbox relay session ended: %r; retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY)

    async def run_session(self) -> None:
        """One session: take the lock (or return after a poll interval), then relay."""
        conn: Conn = await asyncpg.connect(self._dsn)
        try:
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK):
                await asyncio.sleep(self._poll_interval)
                return
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                enable_idempotence=True,
                acks="all",
                linger_ms=1,
                request_timeout_ms=15_000,
            )
            await producer.start()
            try:
                await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
                self.active = True
                await self._recover(conn)
                await self._relay(conn, producer)
            finally:
                self.active = False
                await producer.stop()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(conn.close(timeout=2))

    def _on_notify(self, *_: object) -> None:
        self._wake.set()

    async def _relay(self, conn: Conn, producer: AIOKafkaProducer) -> None:
        published: list[int] = []  # acknowledged by Kafka, deleted by the next statement
        while True:
            self._wake.clear()
            # One round trip: delete the batch Kafka has acknowledged, read the next one
            # (the read's snapshot still holds the deleted rows, hence the NOT).
            rows = await conn.fetch(
                "WITH published AS (DELETE FROM outbox WHERE id = any($2::bigint[]))"
                " SELECT id, topic, key, payload FROM outbox WHERE NOT (id = any($2::bigint[]))"
                " ORDER BY id LIMIT $1", self._batch_size, published,
            )
            published = []
            if not rows:
                await wait_event(self._wake, self._poll_interval)
                continue
            sent = [
                await producer.send(
                    row["topic"],
                    value=bytes(row["payload"]),
                    key=row["key"].encode(),
                    headers=[(OUTBOX_ID_HEADER, str(row["id"]).encode())],
                )
                for row in rows
            ]
            await asyncio.gather(*sent)
            published = [row["id"] for row in rows]
            if self._after_publish is not None:
                await self._after_publish(published)

    async def _recover(self, conn: Conn) -> None:
        pending = await conn.fetch("SELECT id, topic FROM outbox ORDER BY id")
        if not pending:
            return
        topics = sorted({row["topic"] for row in pending})
        found = await _outbox_ids_in_tail(self._bootstrap, topics, self._batch_size)
        already = [row["id"] for row in pending if row["id"] in found]
        if already:
            log.info("outbox recovery: %d rows were already on Kafka", len(already))
            await conn.execute("DELETE FROM outbox WHERE id = any($1::bigint[])", already)


async def _outbox_ids_in_tail(bootstrap: str, topics: list[str], depth: int) -> set[int]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        fetch_max_wait_ms=50,
    )
    tps = await topic_partitions(bootstrap, topics)
    found: set[int] = set()
    if not tps:
        return found
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        begins = await consumer.beginning_offsets(tps)
        tps = [tp for tp in tps if ends[tp] > begins[tp]]
        if not tps:
            return found
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, max(begins[tp], ends[tp] - depth))
        for record in await read_until(consumer, {tp: ends[tp] for tp in tps}):
            for name, value in record.headers or ():
                if name == OUTBOX_ID_HEADER:
                    found.add(int(value))
        return found
    finally:
        await consumer.stop()
