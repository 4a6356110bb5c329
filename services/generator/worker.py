"""Drives claimed jobs to completion. A job's state lives in PostgreSQL, never in a Kafka
message: the consumer only accepts jobs, and these workers pick them up from the table."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg

from services.generator import repository as repo
from services.generator.media import MediaStore, mismatch, probe
from services.generator.providers.base import JobHandle, Provider, ProviderError
from shared import outbox
from shared.db import Conn
from shared.events import (
    TOPIC_GENERATED,
    JobError,
    JobSpec,
    Media,
    VideoGenerationFailed,
    VideoGenerationSucceeded,
)

log = logging.getLogger("influgen.generator.worker")


class LeaseLost(Exception):
    pass


@dataclass
class WorkerConfig:
    owner: str
    concurrency: int
    lease_seconds: float
    poll_interval: float


class _Handle(JobHandle):
    def __init__(self, pool: asyncpg.Pool, job_id: UUID, cfg: WorkerConfig,
                 provider_job_id: str | None) -> None:
        self._pool = pool
        self._job_id = job_id
        self._cfg = cfg
        self._provider_job_id = provider_job_id

    @property
    def provider_job_id(self) -> str | None:
        return self._provider_job_id

    async def progress(self, percent: int) -> None:
        await self.heartbeat(progress=percent, state="running")

    async def heartbeat(self, progress: int | None = None, state: str | None = None) -> None:
        async with self._pool.acquire() as conn:
            row = await repo.renew(
                conn, job_id=self._job_id, owner=self._cfg.owner,
                lease_seconds=self._cfg.lease_seconds, progress=progress, state=state,
            )
        if row is None:
            raise LeaseLost(str(self._job_id))

    async def remember_provider_job(self, provider_job_id: str) -> None:
        async with self._pool.acquire() as conn:
            await repo.set_provider_job(
                conn, job_id=self._job_id, owner=self._cfg.owner, provider_job_id=provider_job_id
            )
        self._provider_job_id = provider_job_id


class Worker:
    def __init__(self, *, pool: asyncpg.Pool, providers: dict[str, Provider],
                 media: MediaStore, cfg: WorkerConfig) -> None:
        self._pool = pool
        self._providers = providers
        self._media = media
        self._cfg = cfg
        self._wake = asyncio.Event()
        self._active: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        try:
            while True:
                self._wake.clear()
                free = self._cfg.concurrency - len(self._active)
                if free > 0:
                    try:
                        claimed = await repo.claim(
                            self._pool, owner=self._cfg.owner, limit=free,
                            lease_seconds=self._cfg.lease_seconds,
                        )
                    except (OSError, asyncpg.PostgresError) as exc:
                        log.warning("claiming jobs failed: %r", exc)
                        claimed = []
                    for row in claimed:
                        task = asyncio.create_task(self._drive(row), name=f"job-{row['id']}")
                        self._active.add(task)
                        task.add_done_callback(self._done)
                    if len(claimed) == free:
                        continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._cfg.poll_interval)
        finally:
            for task in self._active:
                task.cancel()
            await asyncio.gather(*self._active, return_exceptions=True)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._active.discard(task)
        self._wake.set()

    async def _drive(self, row: Any) -> None:
        spec = JobSpec.model_validate(row["spec"])
        handle = _Handle(self._pool, spec.job_id, self._cfg, row["provider_job_id"])
        provider = self._providers.get(spec.provider)
        workdir = Path(tempfile.mkdtemp(prefix=f"job-{spec.job_id}-"))
        heartbeat = asyncio.create_task(self._keep_lease(handle))
        try:
            if provider is None:
                raise ProviderError("provider_unavailable",
                                    f"no provider {spec.provider!r} is configured",
                                    retryable=False)
            output = await provider.generate(spec, handle, workdir)
            media = await asyncio.to_thread(self._store, spec, output.video, output.thumbnail)
            await self._succeed(spec, media)
        except LeaseLost:
            log.warning("lost the lease of job %s; another process took it over", spec.job_id)
        except ProviderError as exc:
            await self._fail(spec, JobError(code=exc.code, message=exc.message,
                                            retryable=exc.retryable))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("job %s failed unexpectedly", spec.job_id)
            await self._fail(spec, JobError(code="internal_error", message=repr(exc)[:500],
                                            retryable=False))
        finally:
            heartbeat.cancel()
            shutil.rmtree(workdir, ignore_errors=True)

    async def _keep_lease(self, handle: _Handle) -> None:
        while True:
            await asyncio.sleep(self._cfg.lease_seconds / 3)
            with contextlib.suppress(OSError, asyncpg.PostgresError):
                await handle.heartbeat()

    def _store(self, spec: JobSpec, video: Path, thumbnail: Path | None) -> Media:
        found = probe(video)
        problem = mismatch(found, width=spec.width, height=spec.height,
                           duration_seconds=spec.duration_seconds)
        if problem is not None:
            raise ProviderError("bad_output", f"the provider's output does not match: {problem}",
                                retryable=False)
        base = f"{spec.video_id}"
        video_url = self._media.put(video, f"{base}/video.mp4")
        thumb_url = self._media.put(thumbnail, f"{base}/thumbnail.jpg") if thumbnail else ""
        return Media(video_url=video_url, thumbnail_url=thumb_url,
                     duration_seconds=round(found.duration_seconds, 3),
                     aspect_ratio=spec.aspect_ratio, width=found.width, height=found.height)

    async def _succeed(self, spec: JobSpec, media: Media) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            if not await repo.finish(conn, job_id=spec.job_id, owner=self._cfg.owner,
                                     state="succeeded"):
                raise LeaseLost(str(spec.job_id))
            event = VideoGenerationSucceeded(
                workspace_id=await _workspace(conn, spec.job_id),
                correlation_id=str(spec.video_id), job_id=spec.job_id, video_id=spec.video_id,
                provider=spec.provider, media=media,
            )
            await outbox.enqueue(conn, topic=TOPIC_GENERATED, key=str(spec.video_id), event=event)
        log.info("job %s succeeded: %s", spec.job_id, media.video_url)

    async def _fail(self, spec: JobSpec, error: JobError) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            if not await repo.finish(conn, job_id=spec.job_id, owner=self._cfg.owner,
                                     state="failed", error=error.model_dump()):
                return
            event = VideoGenerationFailed(
                workspace_id=await _workspace(conn, spec.job_id),
                correlation_id=str(spec.video_id), job_id=spec.job_id, video_id=spec.video_id,
                provider=spec.provider, error=error,
            )
            await outbox.enqueue(conn, topic=TOPIC_GENERATED, key=str(spec.video_id), event=event)
        log.info("job %s failed: %s %s", spec.job_id, error.code, error.message)


async def _workspace(conn: Conn, job_id: UUID) -> UUID:
    ws: UUID = await conn.fetchval("SELECT workspace_id FROM jobs WHERE id = $1", job_id)
    return ws
