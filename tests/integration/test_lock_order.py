"""Intake's requests and the finalizer's settlements update workspace rows, several at a
time when a batch holds several workspaces. Whatever plan PostgreSQL picks for each
statement, they lock the rows in one order, so two of them cannot deadlock."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest

from services.api import handlers
from services.finalizer.handlers import finalize_many
from shared.db import Conn, create_pool
from shared.events import VideoRequested, VideoResource
from tests.infra import Infra
from tests.integration.test_finalizer import CATALOG, request_video, succeeded
from tests.integration.test_video_batches import SCENE, request, workspace_with_character

pytestmark = pytest.mark.integration

#: A nested loop over the statement's sorted list of workspaces: id order.
BY_ID = ("SET enable_hashjoin = off", "SET enable_mergejoin = off", "SET enable_seqscan = off")
#: A hash join over a sequential scan of the table: the order of the rows on disk.
ON_DISK = ("SET enable_nestloop = off", "SET enable_mergejoin = off",
           "SET enable_indexscan = off", "SET enable_bitmapscan = off")

#: Writes to the two workspaces on the connection it is given.
Write = Callable[[Conn], Coroutine[Any, Any, object]]


async def _two_workspaces(pool: asyncpg.Pool) -> tuple[tuple[UUID, UUID], dict[UUID, UUID]]:
    """Two workspaces (ids in order) with a character each, the second (by id) first on disk,
    among thousands: as in production, where a hash join hashes a batch's few workspaces
    and reads the table (with few rows in the table, the settlement's hash join hashes the
    table instead and reads the batch, in id order, even in the ON_DISK plan)."""
    await pool.execute(
        "INSERT INTO workspaces (id, name, api_key_hash, sandbox)"
        " SELECT gen_random_uuid(), 'filler', convert_to(gen_random_uuid()::text, 'UTF8'),"
        " true FROM generate_series(1, greatest(0, 3000 - (SELECT count(*) FROM workspaces)))")
    await pool.execute("ANALYZE workspaces")
    characters: dict[UUID, UUID] = {}
    for _ in range(2):
        workspace, character = await workspace_with_character(pool, credits=10_000)
        characters[workspace.id] = character
    low, high = sorted(characters)
    for _ in range(10):
        if await pool.fetchval("SELECT (SELECT ctid FROM workspaces WHERE id = $2)"
                               " < (SELECT ctid FROM workspaces WHERE id = $1)", low, high):
            return (low, high), characters
        # A new version of the row goes after the other's (on its page or a later one).
        await pool.execute("UPDATE workspaces SET name = name WHERE id = $1", low)
    raise AssertionError("could not put the workspaces' rows in the other order")


async def _waiting(pool: asyncpg.Pool, conn: Conn) -> None:
    pid = conn.get_server_pid()
    for _ in range(200):
        if await pool.fetchval("SELECT wait_event_type = 'Lock' FROM pg_stat_activity"
                               " WHERE pid = $1", pid):
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the statement did not wait for the row lock")


async def _both_finish(infra: Infra, pool: asyncpg.Pool, high: UUID, *, second: Write,
                       first: Write) -> None:
    """The interleaving that deadlocks two writes locking in opposite orders: a third
    transaction holds `high`; `second` (run in the ON_DISK plan) waits for it, holding
    nothing yet (`high` comes first on disk); `first` (BY_ID) locks the other workspace and
    waits for `high` too. When `high` is free, `second` gets it and then waits for the
    other."""
    plans = [await create_pool(infra.database_url, min_size=1, max_size=1) for _ in range(2)]
    try:
        by_id, on_disk = [await p.acquire() for p in plans]
        for conn, settings in ((by_id, BY_ID), (on_disk, ON_DISK)):
            for setting in settings:
                await conn.execute(setting)
        async with pool.acquire() as holder:
            hold = holder.transaction()
            await hold.start()
            await holder.execute("SELECT 1 FROM workspaces WHERE id = $1 FOR NO KEY UPDATE",
                                 high)
            later = asyncio.create_task(second(on_disk))
            await _waiting(pool, on_disk)
            sooner = asyncio.create_task(first(by_id))
            await _waiting(pool, by_id)
            await hold.commit()
        outcomes = await asyncio.gather(later, sooner, return_exceptions=True)
        assert [o for o in outcomes if isinstance(o, BaseException)] == []
    finally:
        for p in plans:
            p.terminate()  # its connection, with the settings above, goes with it


async def test_requests_of_two_workspaces_in_two_plans_do_not_deadlock(
        infra: Infra, pool: asyncpg.Pool) -> None:
    (low, high), characters = await _two_workspaces(pool)
    deps = handlers.IntakeDeps(pool=pool, catalog=CATALOG, job_deadline=timedelta(hours=1))
    workspaces = {w: handlers.Workspace(id=w, name="batch", sandbox=False) for w in characters}

    quoted: dict[UUID, int] = dict.fromkeys(characters, 0)

    async def create(conn: Conn, *order: UUID) -> None:
        async with conn.transaction():
            outcomes = await handlers.create_videos(
                deps, conn, [request(workspaces[w], characters[w], 8) for w in order])
        for w, outcome in zip(order, outcomes, strict=True):
            assert isinstance(outcome, VideoResource), outcome
            quoted[w] += outcome.credits.quoted

    await _both_finish(infra, pool, high, second=lambda conn: create(conn, low, high),
                       first=lambda conn: create(conn, low, high))
    reserved = await pool.fetch("SELECT id, credits_reserved FROM workspaces"
                                " WHERE id = any($1)", [low, high])
    assert {row["id"]: row["credits_reserved"] for row in reserved} == quoted
    assert min(quoted.values()) > 0


async def test_settlements_of_two_workspaces_in_two_plans_do_not_deadlock(
        infra: Infra, pool: asyncpg.Pool) -> None:
    (low, high), characters = await _two_workspaces(pool)
    workspaces = {w: handlers.Workspace(id=w, name="fin", sandbox=False) for w in characters}
    # Two jobs per workspace: one for each of the two settlements.
    jobs = {w: [await request_video(pool, workspaces[w], 8) for _ in range(2)]
            for w in (low, high)}

    async def settle(conn: Conn, *order: UUID) -> object:
        events = [succeeded(w, *jobs[w].pop()[:2], 8.0) for w in order]
        return await finalize_many(conn, events, CATALOG)  # as the consumer: one statement

    charged = {w: sum(quote for _, _, quote in jobs[w]) for w in jobs}  # the whole duration
    await _both_finish(infra, pool, high, second=lambda conn: settle(conn, low, high),
                       first=lambda conn: settle(conn, low, high))
    rows = await pool.fetch("SELECT id, credits_balance, credits_reserved FROM workspaces"
                            " WHERE id = any($1)", [low, high])
    assert {r["id"]: (r["credits_balance"], r["credits_reserved"]) for r in rows} == {
        w: (10_000 - charged[w], 0) for w in jobs}


async def test_a_batch_of_request_events_and_a_batch_of_requests_do_not_deadlock(
        infra: Infra, pool: asyncpg.Pool) -> None:
    """A batch of Kafka request events is one transaction of one write per event: it took
    the workspaces' rows in the order of its events (here the higher id first)."""
    (low, high), characters = await _two_workspaces(pool)
    deps = handlers.IntakeDeps(pool=pool, catalog=CATALOG, job_deadline=timedelta(hours=1))
    workspaces = {w: handlers.Workspace(id=w, name="batch", sandbox=False) for w in characters}

    def requested(w: UUID) -> tuple[VideoRequested, dict[str, Any]]:
        raw = {"workspace_id": str(w), "request_id": str(uuid4()), "duration_seconds": 8,
               "character_id": str(characters[w]), "scene_description": SCENE}
        return VideoRequested.model_validate(raw), raw

    events = [requested(high), requested(low)]

    async def consume(conn: Conn) -> None:
        async with conn.transaction():
            await handlers.intake_events(deps, conn, events)

    async def create(conn: Conn) -> None:
        async with conn.transaction():
            await handlers.create_videos(
                deps, conn, [request(workspaces[w], characters[w], 8) for w in (low, high)])

    await _both_finish(infra, pool, high, second=consume, first=create)
    made = await pool.fetch("SELECT workspace_id, request_source FROM videos"
                            " WHERE workspace_id = any($1)", [low, high])
    assert sorted((r["workspace_id"], r["request_source"]) for r in made) == sorted(
        (w, source) for w in (low, high) for source in ("kafka", "test"))
