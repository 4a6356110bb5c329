"""Requests that share a transaction (group commit) are judged, created and refused exactly as
if each had been alone, on the real database."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import Any, cast
from uuid import UUID, uuid4

import asyncpg
import pytest

from services.api import handlers
from services.api import repository as api_repo
from services.finalizer import main as finalizer_main
from services.finalizer.settings import FinalizerSettings
from services.generator import main as generator_main
from services.generator import repository as generator_repo
from services.generator.consumer import accept_batch
from services.generator.settings import GeneratorSettings
from shared.catalog import Catalog
from shared.db import create_pool, flush_wal
from shared.events import (
    TOPIC_GENERATED,
    TOPIC_JOBS,
    Media,
    VideoGenerationSucceeded,
    VideoJobQueued,
    VideoResource,
)
from shared.settings import ROOT
from shared.videos import fetch_video, list_videos
from tests.infra import Infra
from tests.integration.conftest import Client, Statements, rolled_back

pytestmark = pytest.mark.integration
CATALOG = Catalog.load(ROOT / "deploy" / "catalog.json")
SCENE = "Walking through a hotel lobby at golden hour, slow push-in, confident energy"


async def workspace_with_character(pool: asyncpg.Pool, credits: int, sandbox: bool = False
                                   ) -> tuple[handlers.Workspace, UUID]:
    ws = await handlers.create_workspace(pool, name="batch", credits=credits, sandbox=sandbox)
    workspace = handlers.Workspace(id=UUID(ws["id"]), name="batch", sandbox=sandbox)
    async with pool.acquire() as conn:
        character = await api_repo.insert_character(
            conn, id=uuid4(), workspace_id=workspace.id, name="C", review_mode="manual",
            reference_image_url=None)
    return workspace, character["id"]


def request(workspace: handlers.Workspace, character: UUID, seconds: int,
            model_id: str | None = None) -> handlers.NewVideo:
    valid = handlers.judge({"character_id": str(character), "scene_description": SCENE,
                            "duration_seconds": seconds, "hashtags": ["ootd", "paris"],
                            **({"model_id": model_id} if model_id else {})}, CATALOG)
    return handlers.NewVideo(workspace, valid, "test")


async def test_one_batch_refuses_some_and_creates_the_others(pool: asyncpg.Pool) -> None:
    rich, rich_character = await workspace_with_character(pool, credits=1000)
    poor, poor_character = await workspace_with_character(pool, credits=20, sandbox=True)
    batch = [
        request(rich, rich_character, 8),
        request(rich, poor_character, 8),  # another workspace's character
        request(poor, poor_character, 12),
        request(poor, poor_character, 10),  # 12 of 20 are held by the one before
        request(poor, poor_character, 8),  # fits in what is left
    ]
    deps = handlers.IntakeDeps(pool=pool, catalog=CATALOG, job_deadline=timedelta(hours=1))
    async with pool.acquire() as conn, conn.transaction():
        # Undone: asyncpg looks up the array types it has not seen once per connection.
        warm_up = conn.transaction()
        await warm_up.start()
        await handlers.create_videos(deps, conn, batch[:1])
        await warm_up.rollback()
        with Statements(conn) as statements:
            outcomes = await handlers.create_videos(deps, conn, batch)
            sent = await statements.sent()
    # Two statements for the whole batch (in a savepoint): read, then write everything.
    assert len([q for q in sent if "SAVEPOINT" not in q]) == 2, sent

    assert isinstance(outcomes[1], handlers.CharacterNotFound)
    assert isinstance(outcomes[3], handlers.InsufficientCredits)
    assert (outcomes[3].quote, outcomes[3].available) == (10, 8)
    created = [o for o in outcomes if isinstance(o, VideoResource)]
    assert [o.duration_seconds for o in created] == [8, 12, 8]
    async with pool.acquire() as conn:
        for video in created:
            # What the request was answered is what a read of the video says.
            stored = await fetch_video(conn, video.id)
            assert stored is not None
            assert stored.model_dump() == video.model_dump()
        # In arrival order in each provider's queue.
        assert [v.job.queue_position for v in created[1:]] == [
            created[1].job.queue_position, (created[1].job.queue_position or 0) + 1]
        assert [v.job.provider for v in created] == ["local", "sandbox", "sandbox"]
        for workspace, videos, reserved in ((rich, created[:1], 8), (poor, created[1:], 20)):
            assert await conn.fetchval(
                "SELECT count(*) FROM videos WHERE workspace_id = $1", workspace.id
            ) == len(videos)
            assert await conn.fetchval(
                "SELECT credits_reserved FROM workspaces WHERE id = $1", workspace.id) == reserved
            ledger = await conn.fetch(
                "SELECT amount, job_id FROM credit_ledger WHERE workspace_id = $1"
                " AND kind = 'reserve' ORDER BY amount", workspace.id)
            assert sum(r["amount"] for r in ledger) == reserved
            assert {r["job_id"] for r in ledger} == {v.job.id for v in videos}
        events = await conn.fetch(
            "SELECT key, payload FROM outbox WHERE topic = $1 AND key = any($2::text[])",
            TOPIC_JOBS, [str(v.id) for v in created])
        jobs = {r["key"]: json.loads(bytes(r["payload"]))["job"] for r in events}
        assert {k: (j["job_id"], j["duration_seconds"]) for k, j in jobs.items()} == {
            str(v.id): (str(v.job.id), v.duration_seconds) for v in created}


@pytest.mark.parametrize("via", ["caller's transaction", "group commit"])
async def test_credits_spent_meanwhile_are_not_spent_twice(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch, via: str
) -> None:
    """The credits are read without a lock and reserved on the condition that they are still
    there. Here the read is stale (30 seen, 20 left): the reservation must not go through,
    and the batch is decided again on the locked rows. In a caller's transaction (the Kafka
    path) the attempt is undone by a savepoint; the group commit rolls back its own."""
    ws, character = await workspace_with_character(pool, credits=20)
    read, read_locked = api_repo.intake_state, api_repo.available_credits
    reads: list[str] = []

    async def stale(conn: asyncpg.Connection, **kwargs: Any) -> api_repo.IntakeState:
        found = await read(conn, **kwargs)
        if not reads:  # the first, unlocked read
            found.available.update({k: v + 10 for k, v in found.available.items()})
        reads.append("read")
        return found

    async def locking(conn: asyncpg.Connection, *, workspace_ids: list[UUID],
                      lock: bool) -> dict[UUID, int]:
        reads.append(f"lock={lock}")
        return await read_locked(conn, workspace_ids=workspace_ids, lock=lock)

    monkeypatch.setattr(api_repo, "intake_state", stale)
    monkeypatch.setattr(api_repo, "available_credits", locking)
    deps = handlers.IntakeDeps(pool=pool, catalog=CATALOG, job_deadline=timedelta(hours=1))
    both = [request(ws, character, 12), request(ws, character, 12)]
    outcomes: list[Any]
    if via == "group commit":
        writer = handlers.video_writer(deps, max_batch=10, max_concurrent=1)
        # Submitted together: one batch.
        outcomes = await asyncio.gather(*(writer.submit(r) for r in both),
                                        return_exceptions=True)
        assert (writer.batches, writer.items) == (1, 2)
    else:
        async with pool.acquire() as conn, conn.transaction():
            outcomes = await handlers.create_videos(deps, conn, both)
    assert reads == ["read", "lock=True", "read"]
    assert isinstance(outcomes[0], VideoResource)
    assert isinstance(outcomes[1], handlers.InsufficientCredits)
    assert (outcomes[1].quote, outcomes[1].available) == (12, 8)
    async with pool.acquire() as conn:
        # Only what the second attempt created: the first one's rows were undone.
        assert await conn.fetchval(
            "SELECT count(*) FROM videos WHERE workspace_id = $1", ws.id) == 1
        assert await conn.fetchval(
            "SELECT sum(amount) FROM credit_ledger WHERE workspace_id = $1 AND kind = 'reserve'",
            ws.id) == 12
        assert await conn.fetchval(
            "SELECT credits_reserved FROM workspaces WHERE id = $1", ws.id) == 12
        assert await conn.fetchval(
            "SELECT count(*) FROM outbox WHERE topic = $1 AND key = $2", TOPIC_JOBS,
            str(outcomes[0].id)) == 1


class OneConnection:
    """A pool of one connection the test holds (to watch what is sent on it)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        yield self.conn


async def test_a_group_commit_takes_two_statements_and_no_transaction(
    pool: asyncpg.Pool
) -> None:
    """HTTP requests written together: the read, then the write, which is atomic on its own
    (no BEGIN and COMMIT: the workspace row it locks is held only while it runs)."""
    ws, character = await workspace_with_character(pool, credits=1000)
    async with pool.acquire() as conn:
        deps = handlers.IntakeDeps(pool=cast(asyncpg.Pool, OneConnection(conn)),
                                   catalog=CATALOG, job_deadline=timedelta(hours=1))
        writer = handlers.video_writer(deps, max_batch=10, max_concurrent=1)
        await writer.submit(request(ws, character, 8))  # asyncpg's array type lookups
        with Statements(conn) as statements:
            outcomes = await asyncio.gather(
                *(writer.submit(request(ws, character, 8)) for _ in range(3)))
            sent = await statements.sent()
    assert len({video.id for video in outcomes}) == 3
    assert writer.batches == 2
    assert len(sent) == 2, sent
    assert not any(q.split()[0].upper() in ("BEGIN", "COMMIT") for q in sent), sent
    assert await pool.fetchval(
        "SELECT credits_reserved FROM workspaces WHERE id = $1", ws.id) == 4 * 8


async def test_concurrent_http_requests_share_transactions(client: Client,
                                                           pool: asyncpg.Pool) -> None:
    ws = await client.workspace(credits=10_000)
    cid = await client.character(ws["api_key"])
    results = await asyncio.gather(*(client.call(
        "POST", "/v1/videos", ws["api_key"], {"character_id": cid, "scene_description": SCENE},
        headers={"Idempotency-Key": f"k-{i}"} if i % 2 else None) for i in range(60)))
    assert [r[0] for r in results] == [202] * 60
    assert len({r[1]["id"] for r in results}) == 60
    workspace_id = UUID(ws["id"])
    # Rows written by one transaction share its id (xmin): fewer transactions than videos.
    transactions = await pool.fetchval(
        "SELECT count(DISTINCT xmin::text) FROM videos WHERE workspace_id = $1", workspace_id)
    assert transactions < 60
    assert await pool.fetchval(
        "SELECT credits_reserved FROM workspaces WHERE id = $1", workspace_id) == 60 * 8
    # The keyed requests' responses were stored with their videos: a replay returns them.
    for i in (1, 31, 59):
        status, replay, headers = await client.call(
            "POST", "/v1/videos", ws["api_key"], {"character_id": cid, "scene_description": SCENE},
            headers={"Idempotency-Key": f"k-{i}"})
        assert (status, headers.get("Idempotent-Replayed")) == (202, "true")
        assert replay["id"] == results[i][1]["id"]


async def test_video_events_one_per_changed_row_of_a_batch(pool: asyncpg.Pool) -> None:
    """The video events (recorded by triggers) of batched writes: one per job created, one
    per job or video whose state changed (one for a claim, which changes both), none for
    other updates."""
    ws, character = await workspace_with_character(pool, credits=1000)
    deps = handlers.IntakeDeps(pool=pool, catalog=CATALOG, job_deadline=timedelta(hours=1))
    async with pool.acquire() as conn, conn.transaction():
        created = await handlers.create_videos(
            deps, conn, [request(ws, character, 8) for _ in range(3)])
    videos = [v.id for v in created if isinstance(v, VideoResource)]
    jobs = [v.job.id for v in created if isinstance(v, VideoResource)]

    async def events() -> list[tuple[UUID, str, int]]:
        rows = await pool.fetch(
            "SELECT video_id, job_state, progress FROM video_events"
            " WHERE video_id = any($1::uuid[]) ORDER BY id", videos)
        return [(r["video_id"], r["job_state"], r["progress"]) for r in rows]

    assert await events() == [(v, "queued", 0) for v in videos]
    await pool.execute("UPDATE jobs SET updated_at = now() WHERE id = any($1::uuid[])", jobs)
    await pool.execute("UPDATE jobs SET progress = 40 WHERE id = any($1::uuid[])", jobs[:2])
    assert set((await events())[3:]) == {(videos[0], "queued", 40), (videos[1], "queued", 40)}

    # A claim moves the job and its video in one statement: one event holding both changes
    # (the job's trigger records it; the video's does not record it again).
    provider = f"test-{uuid4()}"  # a provider of its own, so that the claim takes this job
    await pool.execute("UPDATE jobs SET provider = $2, accepted_at = now() WHERE id = $1",
                       jobs[2], provider)
    claimed = await generator_repo.claim(pool, owner="test", limit=5, lease_seconds=30,
                                         provider=provider)
    assert [row["id"] for row in claimed] == [jobs[2]]

    async def last_events(video: UUID) -> list[tuple[str, str, int]]:
        rows = await pool.fetch(
            "SELECT status, job_state, attempts FROM video_events WHERE video_id = $1"
            " ORDER BY id", video)
        return [(r["status"], r["job_state"], r["attempts"]) for r in rows][1:]

    assert await last_events(videos[2]) == [("generating", "submitted", 1)]
    # A change of the video alone is recorded by its own trigger.
    await pool.execute("UPDATE videos SET status = 'ready', review_state = 'ready'"
                       " WHERE id = $1", videos[2])
    assert await last_events(videos[2]) == [("generating", "submitted", 1),
                                            ("ready", "submitted", 1)]


async def queued_jobs(pool: asyncpg.Pool, n: int
                      ) -> tuple[handlers.Workspace, list[VideoResource], list[VideoJobQueued]]:
    """`n` videos as intake creates them, and the job events it wrote for them."""
    ws, character = await workspace_with_character(pool, credits=1000)
    deps = handlers.IntakeDeps(pool=pool, catalog=CATALOG, job_deadline=timedelta(hours=1))
    async with pool.acquire() as conn, conn.transaction():
        created = await handlers.create_videos(
            deps, conn, [request(ws, character, 8) for _ in range(n)])
    videos = [v for v in created if isinstance(v, VideoResource)]
    payloads = await pool.fetch(
        "SELECT payload FROM outbox WHERE topic = $1 AND key = any($2::text[]) ORDER BY id",
        TOPIC_JOBS, [str(v.id) for v in videos])
    events = [VideoJobQueued.model_validate_json(bytes(row["payload"])) for row in payloads]
    return ws, videos, events


async def test_generator_accepts_and_succeeds_jobs_in_one_statement_each(
        pool: asyncpg.Pool) -> None:
    """The generator's two hot writes: accepting job events (inbox and specs) and ending
    jobs as succeeded (the jobs and their events into the outbox). One statement each,
    whatever the batch's size; a redelivered event accepts nothing again, and only the
    jobs the process still holds are ended, with an event each."""
    ws, videos, events = await queued_jobs(pool, 3)
    async with pool.acquire() as conn:
        with Statements(conn) as statements:
            accepted = await generator_repo.accept(
                conn, consumer="test", events=[(e.event_id, e.job) for e in events])
            again = await generator_repo.accept(
                conn, consumer="test", events=[(e.event_id, e.job) for e in events])
            assert (accepted, again, len(await statements.sent())) == (
                generator_repo.Accepted({"local"}, []), generator_repo.Accepted(set(), []), 2)
            assert await conn.fetchval(
                "SELECT count(*) FROM jobs WHERE id = any($1::uuid[]) AND accepted_at IS NOT NULL"
                " AND spec IS NOT NULL", [e.job.job_id for e in events]) == 3

            # Two jobs held by this process, one by another.
            jobs = [e.job.job_id for e in events]
            await conn.execute(
                "UPDATE jobs SET state = 'running', lease_owner = CASE WHEN id = $2 THEN 'other'"
                " ELSE 'me' END, lease_expires_at = now() + interval '1 minute'"
                " WHERE id = any($1::uuid[])", jobs, jobs[2])
            media = Media(video_url="http://x/v.mp4", thumbnail_url="http://x/t.jpg",
                          duration_seconds=8.0, aspect_ratio="9:16", width=720, height=1280)
            outcomes = [VideoGenerationSucceeded(
                workspace_id=ws.id, correlation_id="t", job_id=e.job.job_id,
                video_id=e.job.video_id, provider="local", media=media) for e in events]
            await statements.restart()
            assert await generator_repo.succeed(conn, owner="me", events=outcomes) == set(jobs[:2])
            assert len(await statements.sent()) == 1
            states = await conn.fetch("SELECT id, state FROM jobs WHERE id = any($1::uuid[])", jobs)
            assert {r["id"]: r["state"] for r in states} == {
                jobs[0]: "succeeded", jobs[1]: "succeeded", jobs[2]: "running"}
            sent = await conn.fetch(
                "SELECT key, event_id FROM outbox WHERE topic = $1 AND key = any($2::text[])"
                " ORDER BY id", TOPIC_GENERATED, [str(v.id) for v in videos])
            assert [(r["key"], r["event_id"]) for r in sent] == [
                (str(o.video_id), o.event_id) for o in outcomes[:2]]


async def test_accepting_claims_jobs_into_the_free_slots_in_the_same_statement(
        pool: asyncpg.Pool) -> None:
    """Jobs accepted while the process has free slots are claimed by the accept itself (as
    the workers' claim would: leased, an attempt counted, the video `generating` with one
    live-status event), oldest first up to the free slots; a canceled job is not claimed;
    the rest stay queued and claimable."""
    _, videos, events = await queued_jobs(pool, 4)
    await pool.execute("UPDATE jobs SET cancel_requested = true WHERE id = $1",
                       events[0].job.job_id)
    slots = generator_repo.Slots(owner="me", lease_seconds=60, free={"local": 2})
    async with pool.acquire() as conn:
        with Statements(conn) as statements:
            accepted = await generator_repo.accept(
                conn, consumer="test", events=[(e.event_id, e.job) for e in events], slots=slots)
            assert len(await statements.sent()) == 1
    assert accepted.queued == {"local"}
    assert [row["id"] for row in accepted.claimed] == [events[1].job.job_id]
    assert accepted.claimed[0]["spec"] is not None
    rows = await pool.fetch(
        "SELECT j.id, j.state, j.lease_owner, j.attempts, j.accepted_at IS NOT NULL AS accepted,"
        " v.status FROM jobs j JOIN videos v ON v.id = j.video_id WHERE j.id = any($1::uuid[])",
        [e.job.job_id for e in events])
    by_job = {row["id"]: tuple(row)[1:] for row in rows}
    assert [by_job[e.job.job_id] for e in events] == [
        ("queued", None, 0, True, "queued"),  # canceled: its slot stays free this time
        ("submitted", "me", 1, True, "generating"),
        ("queued", None, 0, True, "queued"),  # no slot left: claimable later
        ("queued", None, 0, True, "queued")]
    kinds = await pool.fetch(
        "SELECT status, job_state FROM video_events WHERE video_id = $1 ORDER BY id",
        videos[1].id)
    assert [tuple(k) for k in kinds] == [("queued", "queued"), ("generating", "submitted")]
    # A redelivery accepts and claims nothing.
    async with pool.acquire() as conn:
        again = await generator_repo.accept(
            conn, consumer="test", events=[(e.event_id, e.job) for e in events], slots=slots)
    assert again == generator_repo.Accepted(set(), [])


class _Workers:
    """The workers' side of `accept_batch`: lends a slot, records what it gets back."""

    def __init__(self) -> None:
        self.adopted: list[tuple[generator_repo.Slots, list[Any]]] = []

    def take_slots(self) -> generator_repo.Slots:
        return generator_repo.Slots(owner="me", lease_seconds=60, free={"local": 5})

    def adopt(self, slots: generator_repo.Slots, claimed: Sequence[Any]) -> None:
        self.adopted.append((slots, list(claimed)))


async def test_accepting_inside_a_transaction_claims_nothing(pool: asyncpg.Pool) -> None:
    """A claim that a rollback could undo after its job started would leave the job driven
    by a process that does not hold it: inside a transaction (the consumer's fallback for a
    failed batch), the jobs are only accepted."""
    _, _, events = await queued_jobs(pool, 2)
    workers = _Workers()
    async with pool.acquire() as conn:
        async with conn.transaction():
            queued = await accept_batch(conn, [(events[0], b"")], workers)
        assert (queued, workers.adopted) == ({"local"}, [])
        queued = await accept_batch(conn, [(events[1], b"")], workers)
    assert queued == set()
    [(slots, claimed)] = workers.adopted
    assert slots.free == {"local": 5}
    assert [row["id"] for row in claimed] == [events[1].job.job_id]


async def wal_writes(conn: Any) -> int:
    """How many times this connection's backend has written WAL out itself: a commit that
    waits for its WAL to be flushed writes it first, one that does not leaves it to the WAL
    writer (PostgreSQL 18's per-backend I/O statistics; the backend's pending counts are
    flushed to them at its next transaction's end once forced)."""
    await conn.execute("SELECT pg_stat_force_next_flush()")
    return int(await conn.fetchval(
        "SELECT coalesce(sum(writes), 0) FROM pg_stat_get_backend_io(pg_backend_pid())"
        " WHERE object = 'wal'"))


async def test_the_generators_writes_do_not_wait_for_the_disk_until_flush_wal(
        infra: Infra, pool: asyncpg.Pool) -> None:
    """The accept (as the consumer runs it) and the success (as the workers write it) commit
    without flushing the WAL; `flush_wal` flushes it, up to and past both commits. The same
    two statements with `flush_wait` (the default) write and flush it: the count can tell.
    (On a connection that waits for the disk: the tests' server does not by default.)"""
    if int(await pool.fetchval("SHOW server_version_num")) < 180000:
        pytest.skip("per-backend I/O statistics need PostgreSQL 18")
    ws, _, events = await queued_jobs(pool, 4)
    media = Media(video_url="http://x/v.mp4", thumbnail_url="http://x/t.jpg",
                  duration_seconds=8.0, aspect_ratio="9:16", width=720, height=1280)
    outcomes = [VideoGenerationSucceeded(
        workspace_id=ws.id, correlation_id="t", job_id=e.job.job_id, video_id=e.job.video_id,
        provider="local", media=media) for e in events]
    conn = await asyncpg.connect(infra.database_url,
                                 server_settings={"synchronous_commit": "on"})
    try:
        before = await wal_writes(conn)
        await generator_repo.accept(conn, consumer="test", slots=_Workers().take_slots(),
                                    events=[(e.event_id, e.job) for e in events[:2]])
        assert await generator_repo.succeed(conn, owner="me", events=outcomes[:2]) == {
            e.job.job_id for e in events[:2]}
        waited = await wal_writes(conn) - before

        before = await wal_writes(conn)
        workers = _Workers()
        assert await accept_batch(conn, [(e, b"") for e in events[2:]], workers) == set()
        assert [row["id"] for row in workers.adopted[0][1]] == [e.job.job_id for e in events[2:]]
        assert await generator_repo.succeed(conn, owner="me", events=outcomes[2:],
                                            flush_wait=False) == {e.job.job_id for e in events[2:]}
        written = await conn.fetchval("SELECT pg_current_wal_insert_lsn()")
        did_not_wait = await wal_writes(conn) - before

        before = await wal_writes(conn)
        await flush_wal(conn)
        flushed = await wal_writes(conn) - before
        assert await conn.fetchval("SELECT pg_current_wal_flush_lsn() >= $1::pg_lsn",
                                   written)
    finally:
        await conn.close()
    assert (waited >= 2, did_not_wait, flushed >= 1) == (True, 0, True), (waited, flushed)
    states = await pool.fetch("SELECT state FROM jobs WHERE id = any($1::uuid[])",
                              [e.job.job_id for e in events])
    assert {row["state"] for row in states} == {"succeeded"}


async def test_a_page_of_queued_videos_has_their_positions_in_one_pass(
    pool: asyncpg.Pool
) -> None:
    # Positions in a page were counted anew for each video (the page read the queue once per
    # queued video: 0.5 s for 100 of them with 20,000 queued). They are computed in one pass
    # now, and must be the ones each video's own read gives.
    mine, my_character = await workspace_with_character(pool, credits=100_000)
    other, other_character = await workspace_with_character(pool, credits=100_000)
    deps = handlers.IntakeDeps(pool=pool, catalog=CATALOG, job_deadline=timedelta(hours=1))
    async with rolled_back(pool) as conn:
        for n in range(4):  # a queue ahead of mine, of both providers
            await handlers.create_videos(deps, conn, [
                request(other, other_character, 5, "sandbox-clip" if n % 2 else None)
                for _ in range(100)])
        for n in range(12):  # mine and another workspace's, in both of two queues
            models: list[str | None] = [None, None, None]
            models[n % 3] = "sandbox-clip"
            await handlers.create_videos(deps, conn, [
                request(mine, my_character, 5, models[0]),
                request(other, other_character, 5, models[1]),
                request(mine, my_character, 5, models[2])])
        # Some no longer queued: gaps between the queued ones.
        await conn.execute(
            "UPDATE jobs SET state = 'submitted' WHERE id IN (SELECT id FROM jobs"
            " WHERE workspace_id = $1 AND state = 'queued' ORDER BY created_at"
            " LIMIT 5 OFFSET 3)", mine.id)
        queued = await conn.fetchval("SELECT count(*) FROM jobs WHERE state = 'queued'")
        # entries of the queue's index read (the counting; the page itself reads others)
        read = "SELECT pg_stat_get_xact_tuples_returned('jobs_queued_by_provider'::regclass)"
        pages: list[list[VideoResource]] = []
        entries_read = -await conn.fetchval(read)
        pages.append(await list_videos(conn, "v.workspace_id = $1", [mine.id], 10))
        pages.append(await list_videos(
            conn, "v.workspace_id = $1 AND (v.created_at, v.id) < ($2, $3)",
            [mine.id, pages[0][-1].created_at, pages[0][-1].id], 100))
        entries_read += await conn.fetchval(read)
        listed = [video for page in pages for video in page]
        assert len(listed) == 24
        alone = [await fetch_video(conn, video.id) for video in listed]
        assert [v.job.queue_position for v in listed] == [
            v.job.queue_position if v else "missing" for v in alone]
        assert {v.job.provider for v in listed if v.job.queue_position} == {
            "local", "sandbox"}
        assert sum(v.job.queue_position is None for v in listed) == 5  # submitted
        # About the queue once per page (two here), not once per queued video (19).
        assert entries_read < 3 * queued, (entries_read, queued)


async def test_a_pool_with_generic_plans_plans_the_accept_once(pool: asyncpg.Pool,
                                                         infra: Infra) -> None:
    """A pool with `generic_plans` plans its statements once per connection:
    without it PostgreSQL planned the accept anew on every call, since for a batch of a few
    jobs the plan made for the arguments always looks cheaper (`shared.db.GENERIC_PLANS`).
    PostgreSQL counts the plans each prepared statement of a session used."""
    _, _, events = await queued_jobs(pool, 7)
    generator_pool = await create_pool(infra.database_url, min_size=1, max_size=1,
                                       generic_plans=True)
    try:
        async with generator_pool.acquire() as conn:
            for event in events:
                await generator_repo.accept(conn, consumer="test-plans",
                                            events=[(event.event_id, event.job)])
            plans = await conn.fetchrow(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                " WHERE statement LIKE '%INSERT INTO inbox%'"
                " AND statement NOT LIKE '%pg_prepared_statements%'")  # (not this one)
    finally:
        await generator_pool.close()
    assert plans is not None
    assert (plans["generic_plans"], plans["custom_plans"]) == (7, 0)


@pytest.mark.parametrize(("open_pool", "settings_of"), [
    (generator_main.open_pool, GeneratorSettings), (finalizer_main.open_pool, FinalizerSettings)],
    ids=["generator", "finalizer"])
async def test_the_consumers_pools_use_generic_plans(open_pool: Any, settings_of: Any,
                                                     infra: Infra) -> None:
    """The generator's and the finalizer's composition roots open their pools with
    `generic_plans` (the api's keeps PostgreSQL's default)."""
    service_pool = await open_pool(settings_of(database_url=infra.database_url))
    try:
        assert await service_pool.fetchval("SHOW plan_cache_mode") == "force_generic_plan"
    finally:
        await service_pool.close()
