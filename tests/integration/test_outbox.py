from __future__ import annotations

import asyncio
import json
from uuid import uuid4

import asyncpg
import pytest

from shared.events import TOPIC_REJECTED, FieldError, VideoRequestRejected
from shared.outbox import OutboxRelay, enqueue
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
