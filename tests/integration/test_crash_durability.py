"""A crash of PostgreSQL under a subscriber whose commits do not wait for the disk (as the
generator's accept): what the crash lost is applied again, never acknowledged. On a
PostgreSQL cluster of this test's own (the shared one must not crash under other tests)
and the shared Kafka broker."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import asyncpg
import pytest

from devstack.postgres import EmbeddedPostgres
from devstack.proc import free_port
from shared import consumer as batches
from shared import inbox
from shared.consumer import stop_broker
from shared.db import NO_FLUSH_WAIT, Conn, WalFlusher, create_pool, migrate
from tests.infra import Infra
from tests.integration.conftest import eventually
from tests.integration.test_consumer_batches import Ping, committed_everything, pings_to, recorded

pytestmark = pytest.mark.integration

#: The processes that write out the WAL of commits that did not wait for it.
WAL_WRITERS = ("walwriter", "background writer", "checkpointer")


@pytest.fixture
async def own_postgres(tmp_path: Path) -> AsyncIterator[EmbeddedPostgres]:
    pg = EmbeddedPostgres(tmp_path / "pg", free_port())  # fsync on, as in production
    await asyncio.to_thread(pg.start)
    try:
        await migrate(pg.url)
        yield pg
    finally:
        await asyncio.to_thread(pg.stop, "immediate")


async def wal_writers(pg: EmbeddedPostgres) -> list[int]:
    conn = await asyncpg.connect(pg.url)
    try:
        pids = [row["pid"] for row in await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = any($1::text[])",
            list(WAL_WRITERS))]
    finally:
        await conn.close()
    assert len(pids) == len(WAL_WRITERS), pids
    return pids


async def inbox_count(pg: EmbeddedPostgres, consumer: str) -> int:
    """The consumer's inbox rows, once PostgreSQL answers again."""
    for _ in range(300):
        try:
            conn = await asyncpg.connect(pg.url)
        except (OSError, asyncpg.PostgresError):
            await asyncio.sleep(0.1)
            continue
        try:
            return int(await conn.fetchval(
                "SELECT count(*) FROM inbox WHERE consumer = $1", consumer))
        finally:
            await conn.close()
    raise AssertionError("PostgreSQL did not come back")


async def test_what_a_crash_of_postgresql_lost_is_applied_again(
    infra: Infra, own_postgres: EmbeddedPostgres, unique: str,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handler records its events with commits that do not wait for the disk, and the
    processes that would write them out are held; PostgreSQL then crashes (those processes
    killed: it restarts after a crash of its own children as after any, every connection
    ended, the WAL buffers lost). The subscriber's flusher, whose connection the crash
    ended, cannot vouch for them: nothing is committed until they are applied again."""
    # the offsets' first commit (and flush) comes after the crash
    monkeypatch.setattr(batches, "COMMIT_INTERVAL_SECONDS", 3.0)
    pg, consumer = own_postgres, f"test-{unique}"

    async def handle(conn: Conn, events: Sequence[tuple[Ping, bytes]]) -> None:
        await conn.fetch(f"{inbox.record('$1', '$2')}, {NO_FLUSH_WAIT}",
                         consumer, [event.event_id for event, _ in events])

    pool = await create_pool(pg.url)
    flusher = WalFlusher(pg.url)
    await flusher.start()
    writers = await wal_writers(pg)
    for pid in writers:
        os.kill(pid, signal.SIGSTOP)
    topic, group, pings, broker = await pings_to(
        infra, pool, f"crash-{unique}", consumer, flusher, handle, one_statement=True)
    try:
        async def all_applied() -> bool:
            return len(await recorded(pool, consumer)) == len(pings)

        await eventually(all_applied, timeout=30)
        for pid in writers:
            os.kill(pid, signal.SIGKILL)
        lost = len(pings) - await inbox_count(pg, consumer)
        assert lost > 0, "the crash lost nothing: this test tested nothing"
        assert await eventually(lambda: committed_everything(infra, topic, group), timeout=60)
        assert await inbox_count(pg, consumer) == len(pings)
    finally:
        await stop_broker(broker)
        await flusher.close()
        await pool.close()
