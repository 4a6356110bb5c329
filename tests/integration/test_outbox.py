from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable
from uuid import uuid4

import asyncpg
import pytest

from shared.events import TOPIC_REJECTED, FieldError, VideoRequestRejected
from shared.outbox import (
    OutboxRelay,
    OutboxWrite,
    Publisher,
    after_insert,
    enqueue,
    insert_from,
)
from tests.infra import Infra
from tests.kafka_tools import read_topic

pytestmark = pytest.mark.integration


class RelayCrashed(Exception):
    """Stands for the process dying after Kafka acknowledged, before the rows were deleted."""


def _event(tag: str) -> VideoRequestRejected:
    return VideoRequestRejected(
        workspace_id=uuid4(), correlation_id=tag, request_id=tag,
        errors=[FieldError(field="x", message=tag)],
    )


async def _enqueue(pool: asyncpg.Pool, event: VideoRequestRejected) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await enqueue(conn, topic=TOPIC_REJECTED, key=event.request_id, event=event)


async def _pending(pool: asyncpg.Pool, event: VideoRequestRejected) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE event_id = $1", event.event_id
    )
    return count


async def _copies_on_kafka(infra: Infra, event: VideoRequestRejected) -> int:
    records = await read_topic(infra.bootstrap_servers, TOPIC_REJECTED)
    return sum(1 for r in records if json.loads(r.value)["event_id"] == str(event.event_id))


async def _drain(pool: asyncpg.Pool, *events: VideoRequestRejected) -> None:
    for _ in range(200):
        if all([await _pending(pool, e) == 0 for e in events]):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the relay did not publish the pending rows")


async def test_relay_stopped_between_publish_and_delete_publishes_once(
    infra: Infra, pool: asyncpg.Pool, unique: str
) -> None:
    first = _event(f"first-{unique}")
    await _enqueue(pool, first)

    async def crash(ids: list[int]) -> None:
        raise RelayCrashed(ids)

    crashing = OutboxRelay(dsn=infra.database_url, bootstrap_servers=infra.bootstrap_servers,
                           after_publish=crash)
    with pytest.raises(RelayCrashed):
        await crashing.run_session()
    # Published, but the row is still there: exactly the window the relay must survive.
    assert await _pending(pool, first) == 1
    assert await _copies_on_kafka(infra, first) == 1

    relay = OutboxRelay(dsn=infra.database_url, bootstrap_servers=infra.bootstrap_servers,
                        poll_interval=0.1)
    task = asyncio.create_task(relay.run())
    try:
        await _drain(pool, first)
        second = _event(f"second-{unique}")
        await _enqueue(pool, second)  # the new relay goes on publishing after recovery
        await _drain(pool, second)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert await _copies_on_kafka(infra, first) == 1
    assert await _copies_on_kafka(infra, second) == 1


async def test_relay_is_woken_by_notify_not_by_polling(
    infra: Infra, pool: asyncpg.Pool, unique: str
) -> None:
    # A 30 s poll interval: only the NOTIFY at commit can make the event leave quickly.
    relay = OutboxRelay(dsn=infra.database_url, bootstrap_servers=infra.bootstrap_servers,
                        poll_interval=30)
    task = asyncio.create_task(relay.run())
    try:
        for _ in range(100):
            if relay.active:
                break
            await asyncio.sleep(0.05)
        assert relay.active
        event = _event(f"notify-{unique}")
        await _enqueue(pool, event)
        await asyncio.wait_for(_drain(pool, event), timeout=5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_only_one_relay_is_active(infra: Infra) -> None:
    a = OutboxRelay(dsn=infra.database_url, bootstrap_servers=infra.bootstrap_servers,
                    poll_interval=0.1)
    b = OutboxRelay(dsn=infra.database_url, bootstrap_servers=infra.bootstrap_servers,
                    poll_interval=0.1)
    tasks = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
    try:
        for _ in range(100):
            if a.active or b.active:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        assert [a.active, b.active].count(True) == 1
        standby = b if a.active else a
        tasks[0 if a.active else 1].cancel()  # the active one dies; the other takes over
        for _ in range(100):
            if standby.active:
                break
            await asyncio.sleep(0.05)
        assert standby.active
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_standby_relay_keeps_its_connection(infra: Infra) -> None:
    """A standby tries the lock again on the connection it has, rather than connecting anew
    for every try (a PostgreSQL backend started and ended per try, in every standby)."""
    relays = [OutboxRelay(dsn=infra.database_url, bootstrap_servers=infra.bootstrap_servers,
                          poll_interval=0.05) for _ in range(2)]
    tasks = [asyncio.create_task(r.run()) for r in relays]
    conn = await asyncpg.connect(infra.database_url)

    async def trying() -> set[int]:
        """The backends whose last statement was a relay's try for the lock."""
        rows = await conn.fetch("SELECT pid FROM pg_stat_activity WHERE query ="
                                " 'SELECT pg_try_advisory_lock($1)' AND pid <> pg_backend_pid()")
        return {row["pid"] for row in rows}

    async def one_trying() -> bool:
        return len(await trying()) == 1

    try:
        assert await _until(lambda: any(r.active for r in relays), 5)
        assert await _until(one_trying, 5)
        before = await trying()
        await asyncio.sleep(0.6)  # a dozen tries
        assert await trying() == before
        assert len(before) == 1
    finally:
        await conn.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _write_eager(pool: asyncpg.Pool, publisher: Publisher,
                       *events: VideoRequestRejected) -> bool:
    """Write `events` as the services' one-statement writes do (`shared.outbox` helpers),
    outside a transaction, and hand them to `publisher`; whether they were written eager."""
    write = OutboxWrite(pool, [(e.request_id, e) for e in events], publisher)
    row = await pool.fetchrow(
        "WITH e AS (SELECT * FROM unnest($1::text[], $2::uuid[], $3::bytea[])"
        " WITH ORDINALITY AS e(key, event_id, payload, n)),"
        f" ins AS ({insert_from('e', topic='$4', eager='$5')})"
        f" SELECT {after_insert('ins', eager='$5')}",
        write.keys, write.event_ids, write.payloads, TOPIC_REJECTED, write.eager)
    write.publish(row, topic=TOPIC_REJECTED)
    return write.eager


async def _until(check: Callable[[], bool | Awaitable[bool]], seconds: float) -> bool:
    """Whether `check` held within `seconds`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        result = check()
        if await result if inspect.isawaitable(result) else result:
            return True
        await asyncio.sleep(0.02)
    return False


async def test_publisher_sends_eager_rows_itself_and_the_relay_leaves_them(
    infra: Infra, pool: asyncpg.Pool, unique: str
) -> None:
    # The relay runs with a short poll interval and a long grace: it would find the rows
    # at once if it did not leave eager rows to their publisher.
    relay = OutboxRelay(dsn=infra.database_url, bootstrap_servers=infra.bootstrap_servers,
                        poll_interval=0.05, eager_grace=30)
    publisher = Publisher(pool=pool, bootstrap_servers=infra.bootstrap_servers)
    tasks = [asyncio.create_task(relay.run()), asyncio.create_task(publisher.run())]
    try:
        assert await _until(lambda: relay.active and publisher.ready, 10)
        events = [_event(f"eager-{n}-{unique}") for n in range(5)]
        assert await _write_eager(pool, publisher, *events)
        # Sent and acknowledged, then deleted by the publisher (every 50 ms).
        async def all_deleted() -> bool:
            return all([await _pending(pool, e) == 0 for e in events])
        assert await _until(all_deleted, 5)
        await asyncio.sleep(0.3)  # several relay polls
        assert [await _copies_on_kafka(infra, e) for e in events] == [1] * 5
        assert publisher.dropped == 0
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_relay_takes_over_eager_rows_their_publisher_left_after_the_grace(
    infra: Infra, pool: asyncpg.Pool, unique: str
) -> None:
    # A publisher that never connected stands for one whose process died after the commit.
    absent = Publisher(pool=pool, bootstrap_servers=infra.bootstrap_servers)
    events = [_event(f"left-{n}-{unique}") for n in range(3)]
    assert await _write_eager(pool, absent, *events)
    assert absent.dropped == 3
    relay = OutboxRelay(dsn=infra.database_url, bootstrap_servers=infra.bootstrap_servers,
                        poll_interval=0.05, eager_grace=2.0)
    started = asyncio.get_running_loop().time()
    task = asyncio.create_task(relay.run())
    try:
        assert await _until(lambda: relay.active, 10)
        if asyncio.get_running_loop().time() - started < 1.0:
            await asyncio.sleep(0.3)  # polls within the grace: the rows must stay
            assert [await _pending(pool, e) for e in events] == [1] * 3
        await _drain(pool, *events)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert [await _copies_on_kafka(infra, e) for e in events] == [1] * 3


async def test_rows_written_inside_a_transaction_are_never_eager(
    infra: Infra, pool: asyncpg.Pool
) -> None:
    # Sent before the commit, an event could report an effect that then rolls back.
    publisher = Publisher(pool=pool, bootstrap_servers=infra.bootstrap_servers)
    async with pool.acquire() as conn:
        assert OutboxWrite(conn, [], publisher).eager
        async with conn.transaction():
            assert not OutboxWrite(conn, [], publisher).eager
    assert OutboxWrite(pool, [], publisher).eager
    assert not OutboxWrite(pool, []).eager


async def test_a_later_event_of_the_same_key_waits_for_the_eager_one_before_it(
    infra: Infra, pool: asyncpg.Pool, unique: str
) -> None:
    # Say `video.ready` was written eager and its publisher died; a review then writes
    # `video.approved` for the same video through the relay: it must not overtake.
    absent = Publisher(pool=pool, bootstrap_servers=infra.bootstrap_servers)
    first = _event(f"first-{unique}")
    later = _event(f"first-{unique}")  # the same key (request_id)
    other = _event(f"other-{unique}")  # another key: not held back
    assert await _write_eager(pool, absent, first)
    await _enqueue(pool, later)
    await _enqueue(pool, other)
    relay = OutboxRelay(dsn=infra.database_url, bootstrap_servers=infra.bootstrap_servers,
                        poll_interval=0.05, eager_grace=2.0)
    started = asyncio.get_running_loop().time()
    task = asyncio.create_task(relay.run())
    try:
        await _drain(pool, other)
        if asyncio.get_running_loop().time() - started < 1.5:
            assert await _pending(pool, later) == 1  # within the grace: still held
        await _drain(pool, first, later)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    records = await read_topic(infra.bootstrap_servers, TOPIC_REJECTED)
    order = [json.loads(r.value)["event_id"] for r in records
             if json.loads(r.value)["event_id"] in {str(first.event_id), str(later.event_id)}]
    assert order == [str(first.event_id), str(later.event_id)]


async def test_a_row_kafka_refuses_for_good_is_moved_aside_and_the_rest_go_out(
    infra: Infra, pool: asyncpg.Pool, unique: str
) -> None:
    """An event larger than Kafka takes (here 1.1 MB, past the producer's 1 MiB) used to
    end the relay's session at every try, and no row after it was ever published; the
    publisher's session ended on it too, leaving its other rows to that relay."""
    before, after = _event(f"before-{unique}"), _event(f"after-{unique}")
    eager = _event(f"eager-{unique}")  # in the publisher's batch, after the huge one
    huge = VideoRequestRejected(
        workspace_id=uuid4(), correlation_id=unique, request_id=f"huge-{unique}",
        errors=[FieldError(field="x", message="m" * 1_100_000)])
    publisher = Publisher(pool=pool, bootstrap_servers=infra.bootstrap_servers)
    relay = OutboxRelay(dsn=infra.database_url, bootstrap_servers=infra.bootstrap_servers,
                        poll_interval=0.05, eager_grace=0.5)
    tasks = [asyncio.create_task(publisher.run()), asyncio.create_task(relay.run())]
    try:
        assert await _until(lambda: publisher.ready and relay.active, 10)
        assert await _write_eager(pool, publisher, huge, eager)
        for event in (before, huge, after):
            await _enqueue(pool, event)
        await _drain(pool, before, huge, after, eager)
        assert publisher.ready  # its session went on
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert [await _copies_on_kafka(infra, e) for e in (before, after, eager)] == [1, 1, 1]
    assert await _copies_on_kafka(infra, huge) == 0
    dead = await pool.fetch("SELECT topic, key, error FROM outbox_dead WHERE event_id = $1",
                            huge.event_id)
    assert [(r["topic"], r["key"]) for r in dead] == [(TOPIC_REJECTED, huge.request_id)] * 2
    assert all("MessageSizeTooLargeError" in r["error"] for r in dead)
