"""The generator against a Replicate stand-in: one test per failure mode."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from services.api import handlers
from services.api import repository as api_repo
from services.generator import repository as gen_repo
from services.generator.consumer import accept_jobs
from services.generator.media import LocalMediaStore, probe
from services.generator.metrics import Metrics
from services.generator.providers.replicate import MAX_OUTPUT_BYTES, ReplicateProvider
from services.generator.worker import Worker, WorkerConfig
from shared.catalog import Catalog
from shared.db import one
from shared.events import VideoJobQueued
from shared.runtime import stop_task
from tests.catalogs import small_hosted_catalog
from tests.integration.conftest import rolled_back
from tests.standins.replicate import TOKEN, ReplicateStandIn, Script

pytestmark = pytest.mark.integration
TERMINAL = {"succeeded", "failed", "canceled"}


@pytest.fixture(scope="module")
def catalog_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_hosted_catalog(tmp_path_factory.mktemp("catalog"))


@pytest.fixture
async def standin() -> AsyncIterator[ReplicateStandIn]:
    fake = ReplicateStandIn(slow_seconds=1.5)
    server = TestServer(fake.app())
    await server.start_server()
    fake.base_url = str(server.make_url("")).rstrip("/")
    yield fake
    await server.close()


async def queue_job(pool: asyncpg.Pool, catalog_path: Path, *, deadline: float = 60,
                    accept: bool = True) -> UUID:
    """A job as intake creates it, accepted by the generator's consumer handler."""
    catalog = Catalog.load(catalog_path)
    deps = handlers.IntakeDeps(pool=pool, catalog=catalog, job_deadline=timedelta(seconds=deadline))
    ws = await handlers.create_workspace(pool, name="gen", credits=1000, sandbox=False)
    workspace = handlers.Workspace(id=UUID(ws["id"]), name="gen", sandbox=False)
    async with pool.acquire() as conn:
        character = await api_repo.insert_character(
            conn, id=uuid4(), workspace_id=workspace.id, name="Mila", review_mode="manual",
            reference_image_url=None)
    valid = handlers.judge({"character_id": str(character["id"]), "scene_description":
                            "Walking on a beach at sunset, slow push-in",
                            "model_id": "replicate-video-1", "duration_seconds": 5}, catalog)
    async with pool.acquire() as conn, conn.transaction():
        video = await handlers.create_video(deps, workspace, valid, source="test", conn=conn)
        payload = await conn.fetchval(
            "SELECT payload FROM outbox WHERE key = $1 AND topic = 'influgen.video.jobs.v1'",
            str(video.id))
        event = VideoJobQueued.model_validate_json(bytes(payload))
        if accept:
            await accept_jobs(conn, [(event, b"")])
    return event.job.job_id


def make_worker(pool: asyncpg.Pool, session: aiohttp.ClientSession, fake: ReplicateStandIn,
                media: Path, *, max_attempts: int = 3, metrics: Metrics | None = None,
                provider_concurrency: dict[str, int] | None = None, owner: str | None = None,
                reclaim_on_start: bool = False, lease_seconds: float = 5,
                max_output_bytes: int = MAX_OUTPUT_BYTES) -> Worker:
    provider = ReplicateProvider(session, base_url=fake.base_url, token=TOKEN,
                                 poll_interval=0.05, request_timeout=0.5, max_poll_failures=3,
                                 backoff_base=0.01, backoff_cap=0.05,
                                 max_output_bytes=max_output_bytes)
    return Worker(pool=pool, providers={"replicate": provider}, metrics=metrics,
                  media=LocalMediaStore(media, "http://media.test"),
                  cfg=WorkerConfig(owner=owner or f"test-{uuid4().hex[:6]}", concurrency=2,
                                   lease_seconds=lease_seconds, poll_interval=0.05,
                                   max_attempts=max_attempts, retry_base_seconds=0.05,
                                   retry_cap_seconds=0.2, watch_interval=0.1,
                                   sweep_interval=0.1,
                                   provider_concurrency=provider_concurrency or {},
                                   reclaim_on_start=reclaim_on_start))


async def drive(pool: asyncpg.Pool, fake: ReplicateStandIn, job_id: UUID, tmp: Path, *,
                max_attempts: int = 3, timeout: float = 40,
                during: Any = None, metrics: Metrics | None = None,
                **worker_options: Any) -> asyncpg.Record:
    async with aiohttp.ClientSession() as session:
        worker = make_worker(pool, session, fake, tmp, max_attempts=max_attempts,
                             metrics=metrics, **worker_options)
        task = asyncio.create_task(worker.run())
        row: asyncpg.Record | None = None
        try:
            async with asyncio.timeout(timeout):  # a hang fails here, with the job's state
                if during is not None:
                    await during()
                while True:
                    row = one(await pool.fetchrow("SELECT * FROM jobs WHERE id = $1", job_id,
                                                  timeout=5))
                    if row["state"] in TERMINAL:
                        return row
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AssertionError(f"job did not finish: {dict(row) if row else None}") from None
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def generated_events(pool: asyncpg.Pool, job_id: UUID) -> list[dict[str, Any]]:
    rows = await pool.fetch("SELECT payload FROM outbox WHERE topic = 'influgen.video.generated.v1'"
                            " ORDER BY id")
    events = [json.loads(bytes(r["payload"])) for r in rows]
    return [e for e in events if e["job_id"] == str(job_id)]


async def test_success_stores_checked_media(pool: asyncpg.Pool, standin: ReplicateStandIn,
                                            catalog_path: Path, tmp_path: Path) -> None:
    job_id = await queue_job(pool, catalog_path)
    row = await drive(pool, standin, job_id, tmp_path)
    assert row["state"] == "succeeded"
    assert (row["attempts"], standin.submissions, row["provider_job_id"]) == (1, 1, "p0001")
    [event] = await generated_events(pool, job_id)
    assert event["event_type"] == "video.generation.succeeded"
    video, thumbnail = (tmp_path / event["media"][url].removeprefix("http://media.test/media/")
                        for url in ("video_url", "thumbnail_url"))
    found = probe(video)
    assert (found.width, found.height, found.frames) == (144, 256, 5 * 24)
    assert thumbnail.stat().st_size > 0
    shard = event["video_id"][:2]  # one directory per two characters, not per video
    assert [video.relative_to(tmp_path), thumbnail.relative_to(tmp_path)] == [
        Path(shard, f"{event['video_id']}.mp4"), Path(shard, f"{event['video_id']}.jpg")]


@pytest.mark.parametrize("faults", [["500", "502", "503"], ["reset", "reset"], ["slow"],
                                    ["malformed", "malformed"], ["429"]])
async def test_poll_failures_are_retried_without_resubmitting(
    pool: asyncpg.Pool, standin: ReplicateStandIn, catalog_path: Path, tmp_path: Path,
    faults: list[str]
) -> None:
    standin.script = Script(poll=list(faults), retry_after="0")
    job_id = await queue_job(pool, catalog_path)
    row = await drive(pool, standin, job_id, tmp_path)
    assert row["state"] == "succeeded"
    assert standin.submissions == 1
    assert standin.script.poll == []  # every fault was met


async def test_rate_limited_submit_waits_for_retry_after(
    pool: asyncpg.Pool, standin: ReplicateStandIn, catalog_path: Path, tmp_path: Path
) -> None:
    standin.script = Script(submit=["429"], retry_after="1")
    job_id = await queue_job(pool, catalog_path)
    started = asyncio.get_running_loop().time()
    row = await drive(pool, standin, job_id, tmp_path)
    assert row["state"] == "succeeded"
    assert row["attempts"] == 2
    assert standin.create_calls == 2
    assert standin.submissions == 1
    assert asyncio.get_running_loop().time() - started >= 1.0


@pytest.mark.parametrize("fault", ["500", "502", "503", "reset", "slow", "malformed", "huge"])
async def test_submit_failures_retry_then_fail_with_a_reason(
    pool: asyncpg.Pool, standin: ReplicateStandIn, catalog_path: Path, tmp_path: Path,
    fault: str
) -> None:
    standin.script = Script(submit=[fault] * 10, retry_after="0")
    job_id = await queue_job(pool, catalog_path)
    row = await drive(pool, standin, job_id, tmp_path, max_attempts=3)
    assert row["state"] == "failed"
    assert row["attempts"] == 3
    assert row["error"]["retryable"] is True
    assert "gave up after 3 attempts" in row["error"]["message"]
    [event] = await generated_events(pool, job_id)
    assert event["error"] == row["error"]


async def test_success_without_output_submits_again(
    pool: asyncpg.Pool, standin: ReplicateStandIn, catalog_path: Path, tmp_path: Path
) -> None:
    standin.script = Script(outcomes=["no_output", "succeeded"])
    job_id = await queue_job(pool, catalog_path)
    row = await drive(pool, standin, job_id, tmp_path)
    assert (row["state"], standin.submissions, row["provider_job_id"]) == (
        "succeeded", 2, "p0002")


async def test_a_providers_error_with_a_nul_is_stored_and_retried(
    pool: asyncpg.Pool, standin: ReplicateStandIn, catalog_path: Path, tmp_path: Path
) -> None:
    """PostgreSQL cannot store U+0000: the attempt's error keeps the provider's words, the
    NUL replaced, and the job goes on to its next attempt."""
    standin.script = Script(outcomes=["nul_error", "nul_error"])
    job_id = await queue_job(pool, catalog_path)
    row = await drive(pool, standin, job_id, tmp_path, max_attempts=2)
    assert (row["state"], row["attempts"], standin.submissions) == ("failed", 2, 2)
    assert row["error"]["message"] == "worker\ufffdcrashed (gave up after 2 attempts)"


async def test_a_providers_long_error_is_cut_to_what_an_event_carries(
    pool: asyncpg.Pool, standin: ReplicateStandIn, catalog_path: Path, tmp_path: Path
) -> None:
    """The error travels in the failure event and the video's completion event: one of two
    megabytes made the failure event larger than a Kafka record, and the video never left
    `generating` (an answer that size is now refused whole: see the "huge" submit fault).
    Half a megabyte of error is read, and cut to 2,000 characters."""
    standin.script = Script(outcomes=["huge_error"])
    job_id = await queue_job(pool, catalog_path)
    row = await drive(pool, standin, job_id, tmp_path, max_attempts=1)
    assert row["state"] == "failed"
    message = row["error"]["message"]
    assert message.startswith("Traceback: xxx")
    assert len(message) < 2100
    [event] = await generated_events(pool, job_id)
    assert event["error"] == row["error"]


async def test_expired_output_url_submits_again_then_fails(
    pool: asyncpg.Pool, standin: ReplicateStandIn, catalog_path: Path, tmp_path: Path
) -> None:
    standin.script = Script(outcomes=["expired"] * 5)
    job_id = await queue_job(pool, catalog_path)
    row = await drive(pool, standin, job_id, tmp_path, max_attempts=2)
    assert row["state"] == "failed"
    assert row["error"]["code"] == "output_expired"
    assert standin.submissions == 2


async def test_output_of_the_wrong_size_is_a_failure_not_a_success(
    pool: asyncpg.Pool, standin: ReplicateStandIn, catalog_path: Path, tmp_path: Path
) -> None:
    standin.script = Script(wrong_short_side=96)
    job_id = await queue_job(pool, catalog_path)
    row = await drive(pool, standin, job_id, tmp_path)
    assert (row["state"], row["error"]["code"]) == ("failed", "bad_output")
    assert "96x172" in row["error"]["message"]
    assert not list(tmp_path.rglob("*.mp4"))  # nothing reached the media store


@pytest.mark.parametrize("chunked", [False, True])
async def test_an_output_larger_than_the_limit_is_refused_while_downloading(
    pool: asyncpg.Pool, standin: ReplicateStandIn, catalog_path: Path, tmp_path: Path,
    chunked: bool
) -> None:
    """Announced by its Content-Length or not, an output past the limit fails the job
    (not retried: the provider made it so) and nothing of it is kept."""
    standin.script = Script(chunked_output=chunked)
    job_id = await queue_job(pool, catalog_path)
    row = await drive(pool, standin, job_id, tmp_path, max_output_bytes=1000)
    assert (row["state"], row["attempts"], row["error"]["code"]) == ("failed", 1, "bad_output")
    assert row["error"]["message"] == "the output is larger than 1000 bytes"
    assert not list(tmp_path.rglob("*.mp4"))


async def test_safety_refusal_fails_at_once(
    pool: asyncpg.Pool, standin: ReplicateStandIn, catalog_path: Path, tmp_path: Path
) -> None:
    standin.script = Script(outcomes=["safety"])
    job_id = await queue_job(pool, catalog_path)
    metrics = Metrics()
    row = await drive(pool, standin, job_id, tmp_path, metrics=metrics)
    assert metrics.registry.get_sample_value(
        "influgen_generator_errors_total", {"provider": "replicate", "code": "safety_refusal"}
    ) == 1
    assert row["state"] == "failed"
    assert row["error"]["code"] == "safety_refusal"
    assert row["error"]["retryable"] is False
    assert "NSFW" in row["error"]["message"]
    assert (row["attempts"], standin.submissions) == (1, 1)


async def test_a_job_that_never_finishes_fails_at_its_deadline(
    pool: asyncpg.Pool, standin: ReplicateStandIn, catalog_path: Path, tmp_path: Path
) -> None:
    standin.script = Script(outcomes=["never"])
    job_id = await queue_job(pool, catalog_path, deadline=2)
    row = await drive(pool, standin, job_id, tmp_path)
    assert row["state"] == "failed"
    assert row["error"]["code"] == "deadline_exceeded"
    assert standin.cancels == ["p0001"]  # the provider's job was canceled too


async def test_cancel_stops_a_running_provider_job(
    pool: asyncpg.Pool, standin: ReplicateStandIn, catalog_path: Path, tmp_path: Path
) -> None:
    standin.script = Script(outcomes=["never"])
    job_id = await queue_job(pool, catalog_path)

    async def cancel_when_running() -> None:
        for _ in range(200):
            if await pool.fetchval("SELECT provider_job_id FROM jobs WHERE id = $1", job_id):
                break
            await asyncio.sleep(0.05)
        await pool.execute("UPDATE jobs SET cancel_requested = true WHERE id = $1", job_id)

    row = await drive(pool, standin, job_id, tmp_path, during=cancel_when_running)
    assert row["state"] == "canceled"
    assert standin.cancels == ["p0001"]
    [event] = await generated_events(pool, job_id)
    assert event["canceled"] is True


async def test_canceled_and_overdue_queued_jobs_are_swept(
    pool: asyncpg.Pool, standin: ReplicateStandIn, catalog_path: Path, tmp_path: Path
) -> None:
    canceled = await queue_job(pool, catalog_path, accept=False)
    overdue = await queue_job(pool, catalog_path, deadline=0.5)
    await pool.execute("UPDATE jobs SET cancel_requested = true WHERE id = $1", canceled)
    await asyncio.sleep(0.6)
    assert (await drive(pool, standin, canceled, tmp_path))["state"] == "canceled"
    row = await drive(pool, standin, overdue, tmp_path)
    assert (row["state"], row["error"]["code"]) == ("failed", "deadline_exceeded")
    assert standin.submissions == 0


async def test_after_a_crash_the_job_is_resumed_by_polling_not_resubmitted(
    pool: asyncpg.Pool, standin: ReplicateStandIn, catalog_path: Path, tmp_path: Path
) -> None:
    standin.script = Script(processing_polls=3)
    job_id = await queue_job(pool, catalog_path)
    # A generator that died after storing the prediction id: its lease has run out.
    async with aiohttp.ClientSession() as session:
        created = await session.post(
            f"{standin.base_url}/v1/models/influgen/short-video/predictions",
            headers={"Authorization": f"Bearer {TOKEN}"},
            json={"input": {"prompt": "x", "duration": 5, "aspect_ratio": "9:16",
                            "resolution": "144p", "fps": 24}})
        pid = (await created.json())["id"]
    await pool.execute(
        "UPDATE jobs SET state = 'running', provider_job_id = $2, lease_owner = 'dead',"
        " lease_expires_at = now() - interval '1 second', attempts = 1 WHERE id = $1",
        job_id, pid)
    row = await drive(pool, standin, job_id, tmp_path)
    assert row["state"] == "succeeded"
    assert (standin.submissions, row["provider_job_id"]) == (1, pid)


async def test_a_create_cut_off_by_a_crash_is_adopted_not_repeated(
    pool: asyncpg.Pool, standin: ReplicateStandIn, catalog_path: Path, tmp_path: Path
) -> None:
    job_id = await queue_job(pool, catalog_path)
    spec = json.loads(json.dumps(await pool.fetchval("SELECT spec FROM jobs WHERE id = $1",
                                                     job_id)))
    # The crashed generator marked the submission and Replicate created the prediction,
    # but the id never reached the database.
    await pool.execute(
        "UPDATE jobs SET state = 'submitted', submit_started_at = now() - interval '1 second',"
        " lease_owner = 'dead', lease_expires_at = now() - interval '1 second', attempts = 1"
        " WHERE id = $1", job_id)
    async with aiohttp.ClientSession() as session:
        provider = ReplicateProvider(session, base_url=standin.base_url, token=TOKEN)
        from shared.events import JobSpec

        await session.post(
            f"{standin.base_url}/v1/models/influgen/short-video/predictions",
            headers={"Authorization": f"Bearer {TOKEN}"},
            json={"input": provider._input(JobSpec.model_validate(spec))})
    row = await drive(pool, standin, job_id, tmp_path)
    assert row["state"] == "succeeded"
    assert (standin.submissions, row["provider_job_id"]) == (1, "p0001")


@pytest.mark.parametrize("limit", [1, 3])
async def test_each_provider_has_its_own_number_of_slots(
    pool: asyncpg.Pool, standin: ReplicateStandIn, catalog_path: Path, tmp_path: Path,
    limit: int
) -> None:
    standin.script = Script(processing_polls=8)
    jobs = [await queue_job(pool, catalog_path) for _ in range(3)]
    most = 0
    async with aiohttp.ClientSession() as session:
        # `concurrency` (2) is the local renderer's; the hosted provider has its own limit
        worker = make_worker(pool, session, standin, tmp_path,
                             provider_concurrency={"replicate": limit})
        task = asyncio.create_task(worker.run())
        try:
            async with asyncio.timeout(40):
                while True:
                    states = [r["state"] for r in await pool.fetch(
                        "SELECT state FROM jobs WHERE id = ANY($1::uuid[])", jobs)]
                    most = max(most, sum(s in ("submitted", "running") for s in states))
                    if all(s in TERMINAL for s in states):
                        break
                    await asyncio.sleep(0.02)
        finally:
            await stop_task(task)
    assert set(states) == {"succeeded"}
    assert most == limit


async def test_a_job_for_a_provider_this_process_lacks_fails_with_a_reason(
    pool: asyncpg.Pool, standin: ReplicateStandIn, catalog_path: Path, tmp_path: Path
) -> None:
    job_id = await queue_job(pool, catalog_path)
    await pool.execute(
        "UPDATE jobs SET provider = 'elsewhere', spec = jsonb_set(spec, '{provider}',"
        " '\"elsewhere\"') WHERE id = $1", job_id)
    row = await drive(pool, standin, job_id, tmp_path)
    assert (row["state"], row["error"]["code"]) == ("failed", "provider_unavailable")
    assert "no provider 'elsewhere'" in row["error"]["message"]


@pytest.fixture
async def template(pool: asyncpg.Pool, catalog_path: Path) -> AsyncIterator[UUID]:
    """A queued job to copy, ended afterwards (left queued, the next test's worker would
    take it)."""
    job_id = await queue_job(pool, catalog_path)
    yield job_id
    await pool.execute("UPDATE jobs SET state = 'canceled', finished_at = now() WHERE id = $1",
                       job_id)


async def copies_queued(conn: Any, template: UUID, count: int) -> list[UUID]:
    """`count` copies of job `template` and its video in `conn`'s transaction: queued,
    accepted, runnable for an hour, oldest first; their ids in that order."""
    await conn.execute(
        "CREATE TEMP TABLE copies ON COMMIT DROP AS"
        " SELECT gen_random_uuid() AS video_id, gen_random_uuid() AS job_id, n"
        "   FROM generate_series(1, $1::int) n", count)
    await conn.execute(
        """
        INSERT INTO videos
            SELECT (jsonb_populate_record(NULL::videos, to_jsonb(v)
                    || jsonb_build_object('id', c.video_id, 'status', 'queued'))).*
              FROM copies c, videos v JOIN jobs j ON j.video_id = v.id WHERE j.id = $1
        """, template)
    await conn.execute(
        """
        INSERT INTO jobs (id, video_id, workspace_id, state, provider, spec, accepted_at,
                          deadline_at, created_at)
            SELECT c.job_id, c.video_id, j.workspace_id, 'queued', j.provider, j.spec, now(),
                   now() + interval '1 hour', now() - interval '1 hour' + c.n * interval '1 ms'
              FROM copies c, jobs j WHERE j.id = $1
        """, template)
    return [r["job_id"] for r in await conn.fetch("SELECT job_id FROM copies ORDER BY n")]


async def rows_of_jobs_read(conn: Any) -> int:
    """Rows of `jobs` read so far in `conn`'s transaction, by scans of the table or an index."""
    read: int = await conn.fetchval(
        "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)"
        " FROM pg_stat_xact_user_tables WHERE relname = 'jobs'")
    return read


async def test_claiming_jobs_of_unknown_providers_does_not_read_the_whole_queue(
    pool: asyncpg.Pool, template: UUID
) -> None:
    # Every poll claims the jobs of providers this process lacks (to fail them with a
    # reason), which are almost never there: a filter on the provider read every queued
    # job for it (5,000 here; 10 ms at 20,000), four times a second under a backlog.
    async with rolled_back(pool) as conn:
        jobs = await copies_queued(conn, template, 5000)
        unknown = [jobs[9], jobs[3999]]
        await conn.execute("UPDATE jobs SET provider = 'elsewhere' WHERE id = any($1)", unknown)
        before = await rows_of_jobs_read(conn)
        claimed = await gen_repo.claim(conn, owner="test", limit=8, lease_seconds=30,
                                       exclude=["replicate", "local", "sandbox"])
        rows_read = await rows_of_jobs_read(conn) - before
        assert [row["id"] for row in claimed] == unknown  # oldest first
        assert rows_read < 100, rows_read


async def test_the_sweep_does_not_read_the_whole_queue(
    pool: asyncpg.Pool, template: UUID
) -> None:
    # The sweeper looks every second for unleased jobs that are canceled or overdue: one
    # condition over both read every unfinished job (9 ms with 17,000 queued).
    async with rolled_back(pool) as conn:
        jobs = await copies_queued(conn, template, 5000)
        await conn.execute("UPDATE jobs SET cancel_requested = true WHERE id = $1", jobs[2999])
        await conn.execute("UPDATE jobs SET deadline_at = now() - interval '1 minute'"
                           " WHERE id = $1", jobs[4999])
        before = await rows_of_jobs_read(conn)
        swept = {row["id"]: row["state"] for row in await gen_repo.sweep(conn)}
        rows_read = await rows_of_jobs_read(conn) - before
        assert swept == {jobs[2999]: "canceled", jobs[4999]: "failed"}
        assert rows_read < 100, rows_read


async def left_running_by(pool: asyncpg.Pool, catalog_path: Path, owner: str, *,
                          lease_seconds: float) -> UUID:
    """A queued job as a process `owner` left it when it died: running, still leased."""
    job_id = await queue_job(pool, catalog_path)
    await pool.execute(
        "UPDATE jobs SET state = 'running', lease_owner = $2, attempts = 1,"
        " lease_expires_at = now() + make_interval(secs => $3) WHERE id = $1",
        job_id, owner, lease_seconds)
    return job_id


async def test_a_restarted_instance_takes_back_its_jobs_without_waiting_for_the_lease(
    pool: asyncpg.Pool, standin: ReplicateStandIn, catalog_path: Path, tmp_path: Path
) -> None:
    # The job as a crashed incarnation of "generator-7" left it: running, leased for 5 min.
    job_id = await left_running_by(pool, catalog_path, "generator-7", lease_seconds=300)
    row = await drive(pool, standin, job_id, tmp_path, timeout=20, owner="generator-7",
                      reclaim_on_start=True)
    assert (row["state"], row["attempts"]) == ("succeeded", 2)


async def test_another_instance_waits_for_the_lease(
    pool: asyncpg.Pool, standin: ReplicateStandIn, catalog_path: Path, tmp_path: Path
) -> None:
    job_id = await left_running_by(pool, catalog_path, "generator-7", lease_seconds=2)
    started = asyncio.get_running_loop().time()
    row = await drive(pool, standin, job_id, tmp_path, timeout=20, owner="generator-8",
                      reclaim_on_start=True)
    assert (row["state"], row["attempts"]) == ("succeeded", 2)
    assert asyncio.get_running_loop().time() - started >= 1.5  # not before the lease ran out


@pytest.mark.parametrize("retry_after", ["inf", "nan", "1e400", "-5", "soon",
                                         "Wed, 21 Oct 2015 07:28:00 GMT"])
async def test_a_retry_after_that_is_no_usable_wait_retries_with_the_backoff(
    pool: asyncpg.Pool, standin: ReplicateStandIn, catalog_path: Path, tmp_path: Path,
    retry_after: str
) -> None:
    """A throttled create whose Retry-After is no usable wait (not a finite, non-negative
    number of seconds, or a date already past) retries after the worker's own backoff. An
    infinite one used to fail the retry's write ("interval out of range"), which left the
    job to its lease (30 s here, longer than `drive` waits)."""
    standin.script = Script(submit=["429"], retry_after=retry_after)
    job_id = await queue_job(pool, catalog_path)
    row = await drive(pool, standin, job_id, tmp_path, timeout=20, lease_seconds=30)
    assert (row["state"], row["attempts"], standin.create_calls) == ("succeeded", 2, 2)


async def test_a_retry_after_date_is_waited_for(
    pool: asyncpg.Pool, standin: ReplicateStandIn, catalog_path: Path, tmp_path: Path
) -> None:
    when = datetime.now(UTC) + timedelta(seconds=3)
    standin.script = Script(submit=["429"], retry_after=format_datetime(when, usegmt=True))
    job_id = await queue_job(pool, catalog_path)
    row = await drive(pool, standin, job_id, tmp_path)
    assert (row["state"], row["attempts"]) == ("succeeded", 2)
    # The prediction was created after the date (whole seconds: the header has none finer).
    [prediction] = standin.predictions.values()
    created = datetime.fromisoformat(prediction["created_at"].replace("Z", "+00:00"))
    assert created >= when.replace(microsecond=0)
