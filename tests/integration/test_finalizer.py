"""The finalizer's effects happen once, whatever Kafka redelivers; the ledger stays true."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.api import handlers
from services.api import repository as api_repo
from services.finalizer.handlers import GenerationOutcome, finalize, finalize_many
from shared.catalog import Catalog
from shared.events import (
    JobError,
    Media,
    VideoGenerationFailed,
    VideoGenerationSucceeded,
)
from shared.settings import ROOT
from shared.videos import fetch_video
from tests.audit import ledger_problems
from tests.integration.conftest import Statements

pytestmark = pytest.mark.integration
CATALOG = Catalog.load(ROOT / "deploy" / "catalog.json")


async def new_workspace(pool: asyncpg.Pool, credits: int) -> handlers.Workspace:
    ws = await handlers.create_workspace(pool, name="fin", credits=credits, sandbox=False)
    return handlers.Workspace(id=UUID(ws["id"]), name="fin", sandbox=False)


async def request_video(pool: asyncpg.Pool, ws: handlers.Workspace, seconds: int,
                        review_mode: str = "manual") -> tuple[UUID, UUID, int]:
    deps = handlers.IntakeDeps(pool=pool, catalog=CATALOG, job_deadline=timedelta(hours=1))
    async with pool.acquire() as conn, conn.transaction():
        character = await api_repo.insert_character(
            conn, id=uuid4(), workspace_id=ws.id, name="C", review_mode=review_mode,
            reference_image_url=None)
        valid = handlers.judge({"character_id": str(character["id"]),
                                "scene_description": "x", "duration_seconds": seconds}, CATALOG)
        video = await handlers.create_video(deps, ws, valid, source="test", conn=conn)
    return video.id, video.job.id, video.credits.quoted


def succeeded(ws: UUID, video: UUID, job: UUID, seconds: float) -> VideoGenerationSucceeded:
    return VideoGenerationSucceeded(
        workspace_id=ws, correlation_id="t", job_id=job, video_id=video, provider="local",
        media=Media(video_url="http://x/v.mp4", thumbnail_url="http://x/t.jpg",
                    duration_seconds=seconds, aspect_ratio="9:16", width=720, height=1280))


def failed(ws: UUID, video: UUID, job: UUID, canceled: bool = False) -> VideoGenerationFailed:
    return VideoGenerationFailed(
        workspace_id=ws, correlation_id="t", job_id=job, video_id=video, provider="local",
        error=JobError(code="canceled" if canceled else "provider_failed", message="m",
                       retryable=False), canceled=canceled)


async def apply(pool: asyncpg.Pool, event: Any, *, transaction: bool = True) -> Any:
    """`finalize` in a transaction of its own, or as the consumer runs it: without one."""
    async with pool.acquire() as conn:
        if not transaction:
            return await finalize(conn, event, CATALOG)
        async with conn.transaction():
            return await finalize(conn, event, CATALOG)


async def ledger_holds(pool: asyncpg.Pool, ws: UUID) -> dict[str, int]:
    """SPEC section 4, checked against the append-only ledger."""
    assert await ledger_problems(pool, ws) == []
    row = await pool.fetchrow(
        "SELECT credits_balance, credits_reserved FROM workspaces WHERE id = $1", ws)
    assert row is not None
    return {"balance": row["credits_balance"], "reserved": row["credits_reserved"]}


async def completions(pool: asyncpg.Pool, video: UUID) -> list[str]:
    rows = await pool.fetch(
        "SELECT convert_from(payload, 'UTF8')::jsonb ->> 'event_type' AS t FROM outbox"
        " WHERE topic = 'influgen.video.completed.v1' AND key = $1 ORDER BY id", str(video))
    return [r["t"] for r in rows]


async def test_a_duplicate_success_changes_nothing(pool: asyncpg.Pool) -> None:
    ws = await new_workspace(pool, 100)
    video, job, _quote = await request_video(pool, ws, 10)
    event = succeeded(ws.id, video, job, 8.0)
    assert await apply(pool, event) is not None
    assert await apply(pool, event) is None  # redelivered: the inbox says it was done
    assert await ledger_holds(pool, ws.id) == {"balance": 100 - 8, "reserved": 0}
    assert await completions(pool, video) == ["video.ready"]
    assert await pool.fetchval("SELECT count(*) FROM settlements WHERE job_id = $1", job) == 1


async def test_reordered_outcomes_first_terminal_state_wins(pool: asyncpg.Pool) -> None:
    ws = await new_workspace(pool, 100)
    video, job, _ = await request_video(pool, ws, 10, review_mode="autopilot")
    await apply(pool, failed(ws.id, video, job))
    await apply(pool, succeeded(ws.id, video, job, 10.0))  # late and contradictory: ignored
    status = await pool.fetchval("SELECT status FROM videos WHERE id = $1", video)
    assert status == "failed"
    assert await ledger_holds(pool, ws.id) == {"balance": 100, "reserved": 0}
    assert await completions(pool, video) == ["video.failed"]


async def test_a_failure_releases_the_whole_reservation(pool: asyncpg.Pool) -> None:
    ws = await new_workspace(pool, 50)
    video, job, quote = await request_video(pool, ws, 20)
    assert await ledger_holds(pool, ws.id) == {"balance": 50, "reserved": quote}
    await apply(pool, failed(ws.id, video, job))
    assert await ledger_holds(pool, ws.id) == {"balance": 50, "reserved": 0}


async def test_a_batch_applies_each_outcome_as_alone(pool: asyncpg.Pool) -> None:
    """One batch (one transaction): a success and its duplicate, a late contradiction, a
    success and a failure in another workspace, and an unknown job."""
    rich, poor = await new_workspace(pool, 100), await new_workspace(pool, 60)
    a_video, a_job, _ = await request_video(pool, rich, 10)
    b_video, b_job, _ = await request_video(pool, poor, 12, review_mode="autopilot")
    c_video, c_job, c_quote = await request_video(pool, poor, 20)
    a_done = succeeded(rich.id, a_video, a_job, 8.0)
    batch: list[GenerationOutcome] = [a_done, a_done, failed(rich.id, a_video, a_job),
             succeeded(poor.id, b_video, b_job, 12.0), failed(poor.id, c_video, c_job),
             succeeded(poor.id, uuid4(), uuid4(), 5.0)]
    async with pool.acquire() as conn, conn.transaction():
        completed = await finalize_many(conn, batch, CATALOG)
    assert [(c.video.id, c.event_type) for c in completed] == [
        (a_video, "video.ready"), (b_video, "video.approved"), (c_video, "video.failed")]
    # Each completion event carries the resource as a read of the video gives it.
    async with pool.acquire() as conn:
        for event in completed:
            assert event.video == await fetch_video(conn, event.video.id)
    assert completed[0].video.credits.model_dump() == {
        "quoted": 10, "reserved": 0, "charged": 8}
    assert await ledger_holds(pool, rich.id) == {"balance": 92, "reserved": 0}
    assert await ledger_holds(pool, poor.id) == {"balance": 48, "reserved": 0}
    assert c_quote == 20
    for video, kinds in ((a_video, ["video.ready"]), (b_video, ["video.approved"]),
                         (c_video, ["video.failed"])):
        assert await completions(pool, video) == kinds
    # Redelivered as a whole, the batch changes nothing.
    async with pool.acquire() as conn, conn.transaction():
        assert await finalize_many(conn, batch, CATALOG) == []
    assert await ledger_holds(pool, poor.id) == {"balance": 48, "reserved": 0}


async def test_a_batch_takes_two_statements_whatever_its_size(pool: asyncpg.Pool) -> None:
    """The finalizer's cost per batch is fixed: the inbox with the jobs' rows, then every
    effect at once (a statement per item would multiply the round trips under load)."""
    ws = await new_workspace(pool, 1000)
    for size in (1, 6):
        jobs = [await request_video(pool, ws, 10) for _ in range(size)]
        batch = [succeeded(ws.id, video, job, 9.0) for video, job, _ in jobs]
        async with pool.acquire() as conn:  # as the consumer runs it: no BEGIN, no COMMIT
            with Statements(conn) as statements:
                completed = await finalize_many(conn, batch, CATALOG)
                sent = await statements.sent()
        assert len(completed) == size
        assert len(sent) == 2, sent
    assert await ledger_holds(pool, ws.id) == {"balance": 1000 - 7 * 9, "reserved": 0}


async def test_the_job_decides_which_video_an_outcome_completes(pool: asyncpg.Pool) -> None:
    """An event naming its job with another video id (a producer's bug) completes the job's
    own video, and the event says so, rather than failing on every redelivery."""
    ws = await new_workspace(pool, 100)
    video, job, _ = await request_video(pool, ws, 10)
    completed = await apply(pool, succeeded(ws.id, uuid4(), job, 8.0))
    assert completed is not None
    assert completed.video.id == video
    assert await pool.fetchval("SELECT status FROM videos WHERE id = $1", video) == "ready"
    assert await ledger_holds(pool, ws.id) == {"balance": 92, "reserved": 0}


@pytest.mark.parametrize("transaction", [True, False])
@pytest.mark.parametrize("round_", range(5))
async def test_cancel_racing_success_settles_once(pool: asyncpg.Pool, round_: int,
                                                  transaction: bool) -> None:
    ws = await new_workspace(pool, 100)
    video, job, _ = await request_video(pool, ws, 10, review_mode="autopilot")
    results = await asyncio.gather(
        apply(pool, failed(ws.id, video, job, canceled=True), transaction=transaction),
        apply(pool, succeeded(ws.id, video, job, 10.0), transaction=transaction))
    assert sum(r is not None for r in results) == 1
    status = await pool.fetchval("SELECT status FROM videos WHERE id = $1", video)
    expected = {"canceled": {"balance": 100, "reserved": 0},
                "approved": {"balance": 90, "reserved": 0}}[status]
    assert await ledger_holds(pool, ws.id) == expected
    assert await completions(pool, video) == [f"video.{status}"]


Op = tuple[str, int]
OPS = st.lists(st.one_of(
    st.tuples(st.just("grant"), st.integers(1, 40)),
    st.tuples(st.just("request"), st.integers(5, 60)),
    st.tuples(st.just("succeed"), st.integers(0, 100)),
    st.tuples(st.just("fail"), st.integers(0, 100)),
    st.tuples(st.just("cancel"), st.integers(0, 100)),
    st.tuples(st.just("redeliver"), st.integers(0, 100)),
), min_size=1, max_size=25)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(ops=OPS)
async def test_ledger_invariant_holds_for_any_sequence(pool: asyncpg.Pool, ops: list[Op]) -> None:
    ws = await new_workspace(pool, 30)
    jobs: list[tuple[UUID, UUID, int]] = []
    sent: list[Any] = []
    for kind, n in ops:
        if kind == "grant":
            async with pool.acquire() as conn, conn.transaction():
                await api_repo.grant(conn, workspace_id=ws.id, amount=n, reason="t")
        elif kind == "request":
            # A refusal holds nothing: the invariant below checks that too.
            with contextlib.suppress(handlers.InsufficientCredits):
                jobs.append(await request_video(pool, ws, n))
        elif jobs and kind == "redeliver" and sent:
            await apply(pool, sent[n % len(sent)])
        elif jobs:
            video, job, _quote = jobs[n % len(jobs)]
            event = (succeeded(ws.id, video, job, min(60.0, n % 61 + 0.5)) if kind == "succeed"
                     else failed(ws.id, video, job, canceled=kind == "cancel"))
            sent.append(event)
            await apply(pool, event)
        await ledger_holds(pool, ws.id)
