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
have sent without deleting, unless the publishers below wrote more than that since: such a
row is published again, a duplicate with the same `event_id`) and deletes the rows whose
`outbox-id` header it finds there, instead of publishing them again.

Eager rows: the relay is a hop of its own (the commit's NOTIFY, the relay's read, its
publish), and at 200 jobs/s its three hops were about half of the pipeline's latency. A
statement that commits on its own (no transaction around it) can write its rows `eager`
and hand them, after it returns, to its process's `Publisher`, which sends them at once
and deletes them once Kafka has acknowledged them. The relay leaves eager rows alone for
`eager_grace` seconds, then publishes those still there (the process died before it
deleted them, or Kafka was away): an event may then reach Kafka twice, with the same
`event_id`, which consumers' inboxes absorb; none is lost. A row of the relay's own waits
for the eager rows before it with the same topic and key, so a key's order holds.

A row Kafka refuses for good (a record larger than it accepts: the producer's
`max_request_size` or the broker's `message.max.bytes`) is moved to `outbox_dead` with the
reason and logged as an error; the publisher leaves it to the relay. Otherwise the relay
would fail its session on that row again and again, and no row after it would go out.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NamedTuple

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError, RecordTooLargeError
from pydantic import BaseModel

from shared.db import DATABASE_ERRORS, Conn
from shared.kafka import read_until, topic_partitions
from shared.runtime import stop_task, wait_event

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "influgen_outbox"
RELAY_LOCK = 7_201_002
#: Longest wait between relay sessions while the database or the broker is away: a retry
#: costs one connection attempt, and every second of wait adds to the recovery afterwards.
MAX_RETRY_DELAY = 2.0
OUTBOX_ID_HEADER = "outbox-id"
#: What Kafka answers a record it will never take: sending it again cannot help.
UNPUBLISHABLE = (MessageSizeTooLargeError, RecordTooLargeError)


async def enqueue(conn: Conn, *, topic: str, key: str, event: BaseModel) -> None:
    """Add an event to the outbox; call inside the transaction of the effect it reports."""
    await enqueue_many(conn, topic=topic, events=[(key, event)])


async def enqueue_many(
    conn: Conn, *, topic: str, events: Sequence[tuple[str, BaseModel]]
) -> None:
    """Add `(key, event)` pairs to the outbox in one statement, with one wake-up signal
    (delivered at commit); call inside the transaction of the effects they report."""
    write = OutboxWrite(conn, events)
    await conn.execute(
        "WITH e AS (SELECT * FROM unnest($2::text[], $3::uuid[], $4::bytea[])"
        " WITH ORDINALITY AS e(key, event_id, payload, n)),"
        f" row AS ({insert_from('e', topic='$1')})"
        " SELECT pg_notify($5, '')",
        topic, write.keys, write.event_ids, write.payloads, NOTIFY_CHANNEL,
    )


def insert_from(rows: str, *, topic: str, eager: str = "false") -> str:
    """The outbox insert as the body of a data-modifying CTE, for statements that write
    events together with their effects in one round trip: `rows` is a relation with the
    columns `key`, `event_id`, `payload` (the event's JSON) and `n` (their order), `topic`
    the topic's placeholder, `eager` a boolean placeholder (`OutboxWrite.eager`). It
    returns the rows' `id` and `event_id`; the statement's select list must end with
    `after_insert` of it."""
    return ("INSERT INTO outbox (topic, key, event_id, payload, eager)"
            f" SELECT {topic}, key, event_id, payload, {eager} FROM {rows} ORDER BY n"
            " RETURNING id, event_id")


def after_insert(cte: str, *, eager: str) -> str:
    """Select-list expressions for a statement with the insert `cte` (an `insert_from`):
    the relay's wake-up unless `eager` (a placeholder) holds, and the ids and event ids of
    the rows written, for `OutboxWrite.publish` (read from any row of the result)."""
    return (f"CASE WHEN NOT {eager}::boolean THEN pg_notify('{NOTIFY_CHANNEL}', '') END,"
            f" (SELECT array_agg(id ORDER BY id) FROM {cte}) AS outbox_ids,"
            f" (SELECT array_agg(event_id ORDER BY id) FROM {cte}) AS outbox_event_ids")


class OutboxRow(NamedTuple):
    id: int
    topic: str
    key: str
    payload: bytes


class OutboxWrite:
    """The `(key, event)` pairs one statement writes into the outbox, as the statement's
    array arguments (`keys`, `event_ids`, `payloads`), and whether the rows are eager: only
    with a `Publisher` and when the statement commits on its own (`conn` is a pool, or a
    connection outside a transaction, whose rollback could still undo rows already sent)."""

    def __init__(self, conn: Any, events: Sequence[tuple[str, BaseModel]],
                 publisher: Publisher | None = None) -> None:
        self._publisher = publisher
        self.eager = publisher is not None and (
            isinstance(conn, asyncpg.Pool) or not conn.is_in_transaction())
        self.keys = [key for key, _ in events]
        self.event_ids = [event.event_id for _, event in events]  # type: ignore[attr-defined]
        self.payloads = [event.model_dump_json().encode() for _, event in events]

    def publish(self, result: Any, *, topic: str) -> None:
        """Hand the rows the statement wrote to the publisher: `result` a row with the
        `after_insert` columns (None when the statement returned no row)."""
        if not self.eager or result is None or not result["outbox_ids"]:
            return
        assert self._publisher is not None
        by_id = dict(zip(self.event_ids, zip(self.keys, self.payloads, strict=True),
                         strict=True))
        self._publisher.publish([
            OutboxRow(row_id, topic, *by_id[event_id])
            for row_id, event_id in zip(result["outbox_ids"], result["outbox_event_ids"],
                                        strict=True)])


class Publisher:
    """Sends eager outbox rows as soon as their statement has committed, and deletes them
    once Kafka has acknowledged them (in batches, every `delete_interval` seconds). Whatever
    it cannot send (no broker, more than `max_pending` rows waiting) stays in the outbox for
    the relay, after its grace period. `publish` never waits: a slow or absent broker must
    not hold up the statement's caller."""

    def __init__(self, *, pool: asyncpg.Pool, bootstrap_servers: str,
                 delete_interval: float = 0.05, max_pending: int = 10_000) -> None:
        self._pool = pool
        self._bootstrap = bootstrap_servers
        self._delete_interval = delete_interval
        self._max_pending = max_pending
        self._producer: AIOKafkaProducer | None = None
        self._queue: list[OutboxRow] = []
        self._in_flight = 0
        self._acked: list[int] = []
        self._wake = asyncio.Event()
        self.dropped = 0  # rows left to the relay since start

    @property
    def ready(self) -> bool:
        """Whether rows handed over now are sent (the producer is connected)."""
        return self._producer is not None

    def publish(self, rows: Sequence[OutboxRow]) -> None:
        if self._producer is None or self._in_flight + len(self._queue) >= self._max_pending:
            self.dropped += len(rows)
            return
        self._queue.extend(rows)
        self._wake.set()

    async def run(self) -> None:
        """Publish until cancelled, surviving broker and database outages."""
        await _sessions(self._session, what="outbox publisher", first_delay=0.5)

    async def _session(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, enable_idempotence=True,
                                    acks="all", linger_ms=0, request_timeout_ms=15_000)
        await producer.start()
        self._producer = producer
        deleter = asyncio.create_task(self._delete_acked(), name="outbox-publisher-delete")
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                rows, self._queue = self._queue, []
                for row in rows:
                    try:
                        sent = await producer.send(
                            row.topic, value=row.payload, key=row.key.encode(),
                            headers=[(OUTBOX_ID_HEADER, str(row.id).encode())])
                    except UNPUBLISHABLE:
                        self.dropped += 1  # the relay moves it aside
                        continue
                    self._in_flight += 1
                    sent.add_done_callback(functools.partial(self._sent, row.id))
                if deleter.done():
                    deleter.result()  # raises what ended it
        finally:
            self._producer = None
            self.dropped += len(self._queue)
            self._queue = []
            await producer.stop()  # waits for the sends in flight
            await stop_task(deleter)
            with contextlib.suppress(Exception):
                await self._delete()

    def _sent(self, row_id: int, sent: asyncio.Future[Any]) -> None:
        self._in_flight -= 1
        if not sent.cancelled() and sent.exception() is None:
            self._acked.append(row_id)
        else:
            self.dropped += 1

    async def _delete_acked(self) -> None:
        while True:
            await asyncio.sleep(self._delete_interval)
            try:
                await self._delete()
            except DATABASE_ERRORS as exc:
                log.warning("deleting published outbox rows failed: %r", exc)

    async def _delete(self) -> None:
        if not self._acked:
            return
        ids = self._acked
        self._acked = []
        try:
            await self._pool.execute("DELETE FROM outbox WHERE id = any($1::bigint[])", ids)
        except BaseException:
            self._acked.extend(ids)  # the next round tries again
            raise


class OutboxRelay:
    def __init__(
        self,
        *,
        dsn: str,
        bootstrap_servers: str,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        eager_grace: float = 3.0,
        after_publish: Callable[[list[int]], Awaitable[None]] | None = None,
    ) -> None:
        self._dsn = dsn
        self._bootstrap = bootstrap_servers
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._eager_grace = eager_grace
        self._after_publish = after_publish
        self._wake = asyncio.Event()
        self.active = False

    async def run(self) -> None:
        """Relay until cancelled, surviving database and broker outages."""
        await _sessions(self.run_session, what="outbox relay",
                        first_delay=self._poll_interval)

    async def run_session(self) -> None:
        """One session: wait for the lock, trying every poll interval on one connection,
        then relay. (A standby used to connect anew for every try: a PostgreSQL backend
        started and ended every second in each standby process, measured on the idle stack
        at 1.5% of a core in the backends and about 5% in all, a fifth of its idle CPU.)"""
        conn: Conn = await asyncpg.connect(self._dsn)
        try:
            while True:  # another process's session holds the lock while it relays
                if await conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK):
                    break
                await asyncio.sleep(self._poll_interval)
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
            # Eager rows only once their publisher has had its grace period; other rows
            # only after the eager rows before them with the same topic and key, so that
            # a key's events keep their order on Kafka (a review's `video.approved` after
            # the `video.ready` its writer may not have sent yet).
            rows = await conn.fetch(
                "WITH published AS (DELETE FROM outbox WHERE id = any($2::bigint[]))"
                " SELECT id, topic, key, payload FROM outbox o"
                " WHERE NOT (id = any($2::bigint[])) AND CASE"
                " WHEN eager THEN created_at < now() - make_interval(secs => $3)"
                " ELSE NOT EXISTS (SELECT FROM outbox e WHERE e.id < o.id AND e.eager"
                " AND e.topic = o.topic AND e.key = o.key AND NOT (e.id = any($2::bigint[])))"
                " END ORDER BY id LIMIT $1", self._batch_size, published, self._eager_grace,
            )
            published = []
            if not rows:
                await wait_event(self._wake, self._poll_interval)
                continue
            dead: dict[int, str] = {}
            sending: list[tuple[int, asyncio.Future[Any]]] = []
            for row in rows:
                try:
                    sending.append((row["id"], await producer.send(
                        row["topic"],
                        value=bytes(row["payload"]),
                        key=row["key"].encode(),
                        headers=[(OUTBOX_ID_HEADER, str(row["id"]).encode())],
                    )))
                except UNPUBLISHABLE as exc:
                    dead[row["id"]] = repr(exc)
            results = await asyncio.gather(*(sent for _, sent in sending),
                                           return_exceptions=True)
            failed: BaseException | None = None
            for (row_id, _), result in zip(sending, results, strict=True):
                if isinstance(result, UNPUBLISHABLE):
                    dead[row_id] = repr(result)
                elif isinstance(result, BaseException):
                    failed = failed or result
                else:
                    published.append(row_id)
            if dead:
                await bury(conn, dead)
            if failed is not None:
                raise failed  # the session ends; the rows not deleted are sent again
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


async def bury(conn: Conn, dead: dict[int, str]) -> None:
    """Move the outbox rows `dead` names (id: why Kafka refuses it) to `outbox_dead`."""
    rows = await conn.fetch(
        "WITH d AS (DELETE FROM outbox WHERE id = any($1::bigint[])"
        " RETURNING id, topic, key, event_id, payload, created_at)"
        " INSERT INTO outbox_dead (id, topic, key, event_id, payload, created_at, error)"
        " SELECT d.id, d.topic, d.key, d.event_id, d.payload, d.created_at, e.error"
        " FROM d JOIN unnest($1::bigint[], $2::text[]) AS e(id, error) USING (id)"
        " ON CONFLICT (id) DO NOTHING"
        " RETURNING id, topic, key, event_id, length(payload) AS size, error",
        list(dead), list(dead.values()))
    for row in rows:
        log.error("outbox row %d (%s, key %s, event %s, %d bytes) cannot be published; "
                  "moved to outbox_dead: %s", row["id"], row["topic"], row["key"],
                  row["event_id"], row["size"], row["error"])


async def _sessions(session: Callable[[], Awaitable[None]], *, what: str,
                    first_delay: float) -> None:
    """Run `session` until cancelled: again at once when it returns, and after a delay
    (doubling from `first_delay` up to `MAX_RETRY_DELAY`) when it fails."""
    delay = first_delay
    while True:
        try:
            await session()
            delay = first_delay
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("%s session ended: %r; retrying in %.1fs", what, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY)


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
