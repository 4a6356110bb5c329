"""What every Kafka entrypoint does around its handler.

Subscribers take what the broker has ready as one batch (up to `MAX_BATCH` records) and
apply it in one transaction (or, for a handler that writes with one statement, in that
statement alone): one commit, one offset commit and one pass through FastStream
for the batch instead of one of each per message, which is most of a consumer's cost when
the handlers are short. Under light load a batch is one message and nothing waits for a
batch to fill.

Offsets (AckPolicy.MANUAL: FastStream commits nothing itself): a batch's offsets are
recorded as applied once its transaction committed, and `AppliedOffsets` commits what was
applied every `COMMIT_INTERVAL_SECONDS`, and once more before the broker stops
(`stop_broker`), never anything that was not applied (nor, for a handler whose commits do
not wait for the disk, anything not yet flushed: the `flush` of `subscribe`, after which
the subscriber reads again from its committed offsets when the flush cannot vouch for the
commits before it). A record that cannot be parsed goes to the DLQ (then its offset is
committed with the rest). When the batch's transaction fails, each message is applied
again in its own transaction, so one bad message holds no other's effect back; if one
still fails, the batch is rewound to its first records and redelivered after a pause (so
that an outage, database down, does not spin), unless its failure is its own data's
(`POISON`: PostgreSQL refused a value or a constraint), which no redelivery can change:
such a message goes to the DLQ with the error, and counts as applied. Messages applied
before the rewind, or applied and not yet committed when a process dies or a rebalance
moves their partition, are no-ops when they come again: every handler records its events
in the inbox in the effect's transaction."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.message import KafkaMessage
from pydantic import TypeAdapter, ValidationError

from shared.db import UNAVAILABLE, Conn, DurabilityUnknown
from shared.kafka import consumer_options, dead_letter, publish_dead_letter

T = TypeVar("T")
log = logging.getLogger(__name__)
RETRY_PAUSE_SECONDS = 1.0
#: Most records in one batch (one transaction); far below what max_poll_interval_ms allows.
MAX_BATCH = 100
#: How long one poll waits for records before the subscriber polls again (an idle
#: subscriber polls 50 times a second; the idle stack's CPU is in the pipeline benchmark).
#: A poll returns as soon as records are there.
POLL_WAIT_MS = 20

#: How often a subscriber commits the offsets it has applied. Committing after every batch
#: was measured to cost the broker about 1.7 ms of CPU per commit (at 50 videos/s, a third
#: of a core for the three consumer groups' commits, and the pipeline's p50 68 ms against
#: 31 ms without). What a crash leaves applied but not committed is at most this much
#: redelivery, which the inbox turns into no-ops.
COMMIT_INTERVAL_SECONDS = 0.5

#: Applies one event (with the record's bytes) inside the caller's transaction.
Handle = Callable[[Conn, T, bytes], Awaitable[object]]
#: Applies a batch of events, in order, inside the caller's transaction.
HandleBatch = Callable[[Conn, Sequence[tuple[T, bytes]]], Awaitable[object]]


def one_by_one(handle: Handle[T]) -> HandleBatch[T]:
    """A batch handler that applies each event with `handle`, in order."""
    async def handle_batch(conn: Conn, events: Sequence[tuple[T, bytes]]) -> None:
        for event, raw in events:
            await handle(conn, event, raw)
    return handle_batch


async def decode_or_dead_letter(
    broker: KafkaBroker, record: Any, adapter: TypeAdapter[T], consumer: str
) -> T | None:
    try:
        return adapter.validate_json(record.value or b"")
    except ValidationError as exc:
        reason = f"not a valid message for {consumer}: {exc.error_count()} error(s): " + "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:10]
        )
        await dead_letter_record(broker, record, consumer, reason)
        return None


async def dead_letter_record(broker: KafkaBroker, record: Any, consumer: str,
                             reason: str) -> None:
    """Send `record` (an aiokafka record `consumer` read) to the DLQ with `reason`."""
    await publish_dead_letter(broker, dead_letter(
        consumer=consumer, topic=record.topic, partition=record.partition,
        offset=record.offset, key=record.key, value=record.value or b"", reason=reason,
    ), record.key)


async def _the_message(message: KafkaMessage) -> KafkaMessage:
    """The subscribers' decoder: the handler gets the message itself and decodes it with
    its own adapter (or dead-letters it). This replaces FastStream's `Context("message")`
    parameter, which fast_depends 3 resolves in a worker thread for every message."""
    return message


#: Failures that are the message's own: PostgreSQL's data exceptions (SQLSTATE class 22,
#: such as a value out of a column's range) and integrity violations (class 23, such as a
#: check constraint). Applied again, such a message fails again: redelivered, it would hold
#: its partition for good. Anything else (the database away, a conflict undone, a bug in
#: the handler) is redelivered, so that nothing is lost to a passing fault.
POISON = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError)

#: Told the index (in its batch) of a message that failed alone with a `POISON` error, and
#: the error; once it returns, the message counts as applied (see `subscribe`: the DLQ).
OnPoison = Callable[[int, Exception], Awaitable[None]]


async def apply_batch(pool: asyncpg.Pool, handle: HandleBatch[T],
                      events: Sequence[tuple[T, bytes]], consumer: str, *,
                      one_statement: bool = False, on_poison: OnPoison | None = None) -> None:
    """Apply `events` in one transaction; if that fails, each in its own. Raises (after a
    pause) the failure of the database, or the first of a message applied alone, once the
    others have been applied; a message that fails alone with a `POISON` error goes to
    `on_poison` instead, if given. With `one_statement` the handler writes with a single
    statement, atomic on its own: no BEGIN and COMMIT around it."""
    try:
        await _apply(pool, handle, events, one_statement)
        return
    except Exception as exc:
        if len(events) == 1 and on_poison is not None and isinstance(exc, POISON):
            await on_poison(0, exc)
            return
        if len(events) == 1 or isinstance(exc, UNAVAILABLE):
            await pause_before_redelivery(exc, consumer)
            raise
        log.info("%s: a batch of %d failed (%r); applying its messages one by one",
                 consumer, len(events), exc)
    failure: Exception | None = None
    for index, one in enumerate(events):
        try:
            await _apply(pool, handle, [one], one_statement)
        except Exception as exc:
            if on_poison is not None and isinstance(exc, POISON):
                await on_poison(index, exc)
                continue
            failure = failure or exc
            if isinstance(exc, UNAVAILABLE):
                break
    if failure is not None:
        await pause_before_redelivery(failure, consumer)
        raise failure


async def _apply(pool: asyncpg.Pool, handle: HandleBatch[T],
                 events: Sequence[tuple[T, bytes]], one_statement: bool) -> None:
    async with pool.acquire() as conn:
        if one_statement:
            await handle(conn, events)
            return
        async with conn.transaction():
            await handle(conn, events)


async def pause_before_redelivery(exc: BaseException, consumer: str) -> None:
    log.warning("%s: handling failed (%r); the message will be redelivered", consumer, exc)
    await asyncio.sleep(RETRY_PAUSE_SECONDS)


class AppliedOffsets:
    """The offsets one subscriber has applied (the next offset to read, per partition),
    committed by one task every `COMMIT_INTERVAL_SECONDS` while there is something new.
    With `flush`, each commit first awaits it (for handlers whose commits do not wait for
    the disk: see `subscribe`), and a flush that fails commits nothing; one that raises
    `shared.db.DurabilityUnknown` (the applied effects may be lost) makes the subscriber
    read again from the committed offsets (`rewind_if_lost`)."""

    def __init__(self, name: str, flush: Callable[[], Awaitable[object]] | None = None) -> None:
        self._name = name
        self._flush = flush
        self._applied: dict[TopicPartition, int] = {}
        self._committed: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        #: The effects applied since the last commit may be lost: read them again.
        self._lost = False

    def applied(self, consumer: AIOKafkaConsumer, records: Iterable[Any]) -> None:
        """Record `records` as applied (their effects committed)."""
        self._consumer = consumer
        for record in records:
            tp = TopicPartition(record.topic, record.partition)
            self._applied[tp] = max(self._applied.get(tp, 0), record.offset + 1)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"{self._name}: offsets")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(COMMIT_INTERVAL_SECONDS)
            await self.commit()

    async def commit(self) -> None:
        """Commit what was applied and not committed yet, of the partitions this consumer
        still has (a partition moved to another member is that member's to commit). A
        failure (a rebalance, the broker away) is retried at the next interval."""
        consumer = self._consumer
        if consumer is None:
            return
        owned = consumer.assignment()
        for tp in [tp for tp in self._applied if tp not in owned]:
            del self._applied[tp]
            self._committed.pop(tp, None)
        due = {tp: offset for tp, offset in self._applied.items()
               if self._committed.get(tp) != offset}
        if not due or self._lost:
            return
        if self._flush is not None:
            try:
                await self._flush()  # the effects of `due` were committed before this
            except DurabilityUnknown as exc:
                log.warning("%s: %s; reading again from the committed offsets", self._name,
                            exc)
                self._lost = True
                return
            except Exception as exc:
                log.info("%s: making the applied batches durable failed (%r); committing"
                         " their offsets in %.1fs", self._name, exc, COMMIT_INTERVAL_SECONDS)
                return
        try:
            await consumer.commit(due)
        except Exception as exc:
            log.info("%s: committing offsets failed (%r); retrying in %.1fs", self._name, exc,
                     COMMIT_INTERVAL_SECONDS)
            return
        self._committed.update(due)

    async def rewind_if_lost(self, consumer: AIOKafkaConsumer) -> bool:
        """If the applied effects may have been lost, forget them and seek every assigned
        partition back to its committed offset (the earliest if none), so that the next
        poll delivers them again. Called by the subscriber's poll, between batches: a batch
        fetched before the seek is never applied after it (aiokafka drops what it fetched
        for a partition that is sought). False, after a pause, when that failed (the broker
        away): the poll is to return nothing and try again."""
        if not self._lost:
            return True
        try:
            for tp in consumer.assignment():
                offset = await consumer.committed(tp)
                if offset is None:
                    await consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, offset)
        except Exception as exc:
            log.warning("%s: reading again from the committed offsets failed (%r); retrying"
                        " in %.1fs", self._name, exc, RETRY_PAUSE_SECONDS)
            await asyncio.sleep(RETRY_PAUSE_SECONDS)
            return False
        self._applied.clear()
        self._lost = False
        log.info("%s: reading again from the committed offsets", self._name)
        return True

    async def close(self) -> None:
        """Stop the task and commit what is left: call before the consumer stops."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.commit()


#: The subscribers' offsets of each broker, for `stop_broker`.
_OFFSETS: weakref.WeakKeyDictionary[KafkaBroker, list[AppliedOffsets]] = (
    weakref.WeakKeyDictionary())


async def stop_broker(broker: KafkaBroker) -> None:
    """Commit what the broker's subscribers applied, then stop the broker (a batch being
    applied now is not committed: it comes again)."""
    for offsets in _OFFSETS.pop(broker, []):
        await offsets.close()
    await broker.stop()


async def _poll(subscriber: Any, offsets: AppliedOffsets, consumer: AIOKafkaConsumer
                ) -> tuple[Any, ...]:
    """A batch subscriber's poll (it replaces `BatchSubscriber.get_msg`): FastStream's sleeps
    `batch_timeout_ms` after a poll that found nothing, although that poll has already
    waited as long, so a record arriving during the sleep waits for it, at every hop (at 5
    videos/s, when every record comes after a quiet spell, the pipeline's p50 was 31-38 ms
    against 18-21 ms at 20/s). This one sleeps only what is left of the wait when a poll
    came back early with nothing, so that it cannot spin. FastStream runs it and the
    handler in turn, never together: first, it rewinds the offsets whose effects may be
    lost (`AppliedOffsets.rewind_if_lost`)."""
    if not await offsets.rewind_if_lost(consumer):
        return ()
    loop = asyncio.get_running_loop()
    started = loop.time()
    batches = await consumer.getmany(timeout_ms=subscriber.batch_timeout_ms,
                                     max_records=subscriber.max_records)
    if batches:
        return tuple(itertools.chain.from_iterable(batches.values()))
    left = subscriber.batch_timeout_ms / 1000 - (loop.time() - started)
    if left > 0:
        await asyncio.sleep(left)
    return ()


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
    handle: HandleBatch[T],
    after: Callable[[], None] | None = None,
    instance_id: str = "",
    one_statement: bool = False,
    fetch_min_bytes: int = 1,
    flush: Callable[[], Awaitable[object]] | None = None,
) -> None:
    """Subscribe `handle` to `topic`: decode (or dead-letter) each record of a batch, then
    apply the batch in one transaction (`one_by_one` turns a handler of one event into a
    batch handler); offsets are committed after it, never before. `one_statement` says
    that `handle` writes a batch with one statement (its inbox rows included; reads may come
    before it), which is atomic without a transaction: two round trips fewer per batch, and
    the rows it locks are released at its end rather than after the COMMIT's round trip.
    `fetch_min_bytes`: what a fetch waits for, up to `fetch_max_wait_ms` (1: none).
    `flush`: for a handler that commits without waiting for the disk
    (`shared.db.NO_FLUSH_WAIT`), what makes its commits durable (`shared.db.WalFlusher`),
    awaited before offsets are committed; when it raises `shared.db.DurabilityUnknown`
    (PostgreSQL may have crashed and lost them) the subscriber reads again from the
    committed offsets: a crash of PostgreSQL loses no effect whose message Kafka would not
    deliver again."""
    offsets = AppliedOffsets(f"{consumer}:{topic}", flush)
    _OFFSETS.setdefault(broker, []).append(offsets)

    subscriber = broker.subscriber(
        topic, group_id=group_id, ack_policy=AckPolicy.MANUAL, description=description,
        title=f"{consumer}:{topic}", decoder=_the_message, batch=True, max_records=MAX_BATCH,
        batch_timeout_ms=POLL_WAIT_MS,
        **consumer_options(fetch_max_wait_ms, instance_id, topic, fetch_min_bytes),
    )
    subscriber.get_msg = functools.partial(_poll, subscriber, offsets)

    @subscriber
    async def entrypoint(message: Any) -> None:  # a KafkaMessage (FastStream rejects the hint)
        records = message.raw_message  # the batch's records
        try:
            events: list[tuple[T, bytes]] = []
            decoded: list[Any] = []  # the records of `events`
            for record in records:
                event = await decode_or_dead_letter(broker, record, adapter, consumer)
                if event is not None:
                    events.append((event, record.value))
                    decoded.append(record)

            async def poisoned(index: int, exc: Exception) -> None:
                record = decoded[index]
                log.error("%s: %s[%d]@%d cannot be applied (%r): to the DLQ", consumer,
                          record.topic, record.partition, record.offset, exc)
                await dead_letter_record(broker, record, consumer,
                                         f"could not be applied: {exc!r}")

            if events:
                await apply_batch(pool, handle, events, consumer,
                                  one_statement=one_statement, on_poison=poisoned)
        except BaseException:
            with contextlib.suppress(Exception):  # (stopping: the partitions may be gone)
                await message.nack()  # rewind: the batch comes again
            raise
        offsets.applied(message.consumer, records)
        if after is not None and events:
            after()
