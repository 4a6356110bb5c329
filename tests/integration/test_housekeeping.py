"""The api's hourly housekeeping: idempotency keys after 24 hours, inbox rows after the
inbox's retention (they grew by a row per consumed event for ever), the live-status history
of finished videos after its own."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import timedelta
from uuid import UUID, uuid4

import aiohttp
import asyncpg
import pytest

from services.api import live
from services.api.main import housekeeping
from shared import inbox
from tests.integration.conftest import Client, eventually

pytestmark = pytest.mark.integration
SCENE = "Walking through a hotel lobby at golden hour, slow push-in, confident energy"


async def _inbox_rows(pool: asyncpg.Pool, consumer: str, ages_days: list[float]) -> list[UUID]:
    ids = [uuid4() for _ in ages_days]
    await pool.executemany(
        "INSERT INTO inbox (consumer, event_id, received_at)"
        " VALUES ($1, $2, now() - make_interval(secs => $3 * 86400))",
        [(consumer, i, age) for i, age in zip(ids, ages_days, strict=True)])
    return ids


async def _left(pool: asyncpg.Pool, consumer: str) -> set[UUID]:
    return {r["event_id"] for r in await pool.fetch(
        "SELECT event_id FROM inbox WHERE consumer = $1", consumer)}


async def test_inbox_rows_past_the_retention_are_deleted_in_batches(
        pool: asyncpg.Pool) -> None:
    consumer = f"test-purge-{uuid4()}"
    old = await _inbox_rows(pool, consumer, [16, 20, 30, 15.01, 100, 40, 17])
    kept = await _inbox_rows(pool, consumer, [0, 1, 14.99])
    async with pool.acquire() as conn:
        deleted = await inbox.purge(conn, older_than=timedelta(days=15), batch=3)
    assert deleted >= len(old)  # and any other test's rows that old (none are)
    assert await _left(pool, consumer) == set(kept)
    # A redelivered event whose row is still there is still a no-op.
    async with pool.acquire() as conn:
        assert await inbox.first_deliveries(conn, consumer=consumer, event_ids=kept) == set()


async def test_housekeeping_purges_keys_and_inbox_rows(pool: asyncpg.Pool) -> None:
    consumer = f"test-housekeeping-{uuid4()}"
    old = await _inbox_rows(pool, consumer, [3])
    kept = await _inbox_rows(pool, consumer, [1])
    ws = uuid4()
    await pool.execute("INSERT INTO workspaces (id, name, api_key_hash, sandbox)"
                       " VALUES ($1, 'hk', $2, false)", ws, uuid4().bytes)
    await pool.executemany(
        "INSERT INTO idempotency_keys (workspace_id, key, request_hash, created_at)"
        " VALUES ($1, $2, '\\x00', now() - $3::interval)",
        [(ws, "old", timedelta(hours=25)), (ws, "new", timedelta(hours=23))])
    task = asyncio.create_task(housekeeping(pool, timedelta(days=2), timedelta(days=30),
                                            every=3600))
    try:
        async def done() -> bool:
            return old[0] not in await _left(pool, consumer)

        await eventually(done)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert await _left(pool, consumer) == set(kept)
    assert [r["key"] for r in await pool.fetch(
        "SELECT key FROM idempotency_keys WHERE workspace_id = $1", ws)] == ["new"]


async def test_the_history_of_finished_videos_is_purged_and_their_stream_still_ends(
        client: Client, pool: asyncpg.Pool) -> None:
    # video_events grew by four rows a video for ever. Old rows of videos that are over
    # go; a stream of such a video shows its state as it is now, then ends (it waited for
    # a change that would never come).
    key = (await client.workspace())["api_key"]
    cid = await client.character(key)
    ids = [UUID((await client.call("POST", "/v1/videos", key, {
        "character_id": cid, "scene_description": SCENE}))[1]["id"]) for _ in range(3)]
    over, waiting, recent = ids  # no generator runs here: all queued
    await pool.execute("UPDATE videos SET status = 'failed' WHERE id = any($1::uuid[])",
                       [over, recent])
    await pool.execute("UPDATE video_events SET created_at = now() - interval '31 days'"
                       " WHERE video_id = any($1::uuid[])", [over, waiting])
    history = {v: await pool.fetchval("SELECT count(*) FROM video_events WHERE video_id = $1",
                                      v) for v in ids}
    assert history[over] >= 2, history  # queued, failed
    assert history[waiting] >= 1, history  # queued
    async with pool.acquire() as conn:
        assert await live.purge(conn, older_than=timedelta(days=30), batch=1) >= history[over]
    left = {v: await pool.fetchval("SELECT count(*) FROM video_events WHERE video_id = $1",
                                   v) for v in ids}
    assert left == {over: 0, waiting: history[waiting], recent: history[recent]}

    async with aiohttp.ClientSession() as session, asyncio.timeout(10), session.get(
            f"{client.base}/v1/videos/{over}/events",
            headers={"Authorization": f"Bearer {key}"}) as stream:
        assert stream.status == 200
        body = (await stream.read()).decode()  # the stream ends by itself
    events = [json.loads(line[len("data: "):]) for line in body.splitlines()
              if line.startswith("data: ")]
    assert [(e["video_id"], e["status"]) for e in events] == [(str(over), "failed")]
