"""Drives claimed jobs to completion. A job's state lives in PostgreSQL, never in a Kafka
message: the consumer only accepts jobs, and these workers pick them up from the table.

Each job ends in exactly one of: succeeded, failed (with code, message, retryable), canceled
(a cancel request seen by the watcher), or failed with `deadline_exceeded`. A retryable
failure goes back to the queue with exponential backoff and full jitter (Retry-After as a
floor) until `max_attempts`; the sweeper ends the jobs nobody drives that were canceled or
ran past their deadline, so nothing stays `generating` forever."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg

from services.generator import repository as repo
from services.generator.media import MediaStore, make_thumbnail, media_keys, mismatch, probe
from services.generator.metrics import Metrics
from services.generator.providers.base import JobHandle, Provider, ProviderError
from shared import outbox
from shared.db import DATABASE_ERRORS, UNAVAILABLE, Conn
from shared.events import (
    TOPIC_GENERATED,
    JobError,
    JobSpec,
    Media,
    VideoGenerationFailed,
    VideoGenerationSucceeded,
    utcnow,
)
from shared.group_commit import GroupCommit
from shared.runtime import stop_task, wait_event

log = logging.getLogger("influgen.generator.worker")


class LeaseLost(Exception):
    pass


@dataclass
class WorkerConfig:
    owner: str
    #: jobs at once per provider, unless `provider_concurrency` names the provider
    concurrency: int
    lease_seconds: float
    poll_interval: float
    max_attempts: int = 4
    retry_base_seconds: float = 2.0
    retry_cap_seconds: float = 60.0
    watch_interval: float = 1.0
    sweep_interval: float = 1.0
    provider_concurrency: dict[str, int] = field(default_factory=dict)
    #: `owner` is a stable instance id: on start, take back the jobs it held before a crash
    reclaim_on_start: bool = False

    def limit(self, provider: str) -> int:
        return self.provider_concurrency.get(provider, self.concurrency)


class _Handle(JobHandle):
    def __init__(self, pool: asyncpg.Pool, job_id: UUID, cfg: WorkerConfig,
                 provider_job_id: str | None) -> None:
        self._pool = pool
        self._job_id = job_id
        self._cfg = cfg
        self._provider_job_id = provider_job_id
        self.canceled = asyncio.Event()

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
        if row["cancel_requested"]:
            self.canceled.set()

    async def remember_provider_job(self, provider_job_id: str) -> None:
        async with self._pool.acquire() as conn:
            await repo.set_provider_job(
                conn, job_id=self._job_id, owner=self._cfg.owner, provider_job_id=provider_job_id
            )
        self._provider_job_id = provider_job_id

    async def mark_submitting(self) -> str | None:
        async with self._pool.acquire() as conn:
            return await repo.mark_submitting(conn, job_id=self._job_id, owner=self._cfg.owner)


async def emit_failed(conn: Conn, *, job_id: UUID, video_id: UUID, workspace_id: UUID,
                      provider: str, error: JobError, canceled: bool = False) -> None:
    event = VideoGenerationFailed(
        workspace_id=workspace_id, correlation_id=str(video_id), job_id=job_id,
        video_id=video_id, provider=provider, error=error, canceled=canceled,
    )
    await outbox.enqueue(conn, topic=TOPIC_GENERATED, key=str(video_id), event=event)


def remove_workdir(workdir: Path) -> None:
    """Remove a job's scratch directory, if it was made (see `Provider.uses_workdir`)."""
    try:
        workdir.rmdir()  # one system call for an empty or missing directory
    except FileNotFoundError:
        pass
    except OSError:
        shutil.rmtree(workdir, ignore_errors=True)


_OTHER = "*"  # the key of jobs whose provider this process does not have
CANCELED = JobError(code="canceled", message="the video was canceled", retryable=False)


class Worker:
    def __init__(self, *, pool: asyncpg.Pool, providers: dict[str, Provider],
                 media: MediaStore, cfg: WorkerConfig, metrics: Metrics | None = None,
                 publisher: outbox.Publisher | None = None) -> None:
        self._pool = pool
        #: sends the success events as soon as they are written (see `shared.outbox`)
        self._publisher = publisher
        self._providers = providers
        self._media = media
        self._cfg = cfg
        self._metrics = metrics or Metrics()
        self._wake = asyncio.Event()
        #: where jobs' scratch directories go (one per job and attempt): this process's own
        self._scratch = Path(tempfile.mkdtemp(prefix="influgen-jobs-"))
        #: providers to claim for at the next wake-up; every `poll_interval`, all of them
        self._wanted: set[str] = set()
        #: providers whose last claim took as many jobs as it had slots for: more may wait
        #: for a slot, so a job's end claims again (otherwise it would be a query for nothing)
        self._waiting: set[str] = set()
        #: successes that finish together are written in one transaction
        self._successes: GroupCommit[VideoGenerationSucceeded, bool] = GroupCommit(
            self._record_successes, retry_alone=lambda exc: not isinstance(exc, UNAVAILABLE))
        #: running jobs by provider; `_OTHER` holds jobs of providers not configured here,
        #: which are claimed only to be failed with a reason
        self._active: dict[str, set[asyncio.Task[None]]] = {
            name: set() for name in (*providers, _OTHER)}
        #: slots handed to the consumer's accept (`take_slots`) and not yet given back
        self._lent: dict[str, int] = dict.fromkeys(providers, 0)

    def wake(self, providers: Iterable[str] | None = None) -> None:
        """Claim jobs now: of `providers` (jobs just accepted), or of every provider."""
        names = self._active if providers is None else (
            name if name in self._active else _OTHER for name in providers)
        self._wanted.update(names)
        self._wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = next_poll = 0.0
        if self._cfg.reclaim_on_start:
            try:
                if taken := await repo.expire_leases(self._pool, owner=self._cfg.owner):
                    log.info("taking back %d jobs this instance held before it restarted",
                             taken)
            except DATABASE_ERRORS as exc:
                log.warning("taking back jobs failed (their leases will run out): %r", exc)
        try:
            while True:
                self._wake.clear()
                if loop.time() >= next_sweep:
                    await self._sweep()
                    next_sweep = loop.time() + self._cfg.sweep_interval
                wanted, self._wanted = self._wanted, set()
                if loop.time() >= next_poll:  # retries fall due without a wake-up
                    wanted = set(self._active)
                    next_poll = loop.time() + self._cfg.poll_interval
                if await self._claim(wanted):
                    self._wanted.update(wanted)
                    continue  # a provider filled all its free slots: there may be more
                await wait_event(self._wake, self._cfg.poll_interval)
        finally:
            tasks = [task for active in self._active.values() for task in active]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._successes.close()
            shutil.rmtree(self._scratch, ignore_errors=True)

    @property
    def in_flight(self) -> int:
        return sum(len(active) for active in self._active.values())

    def _free(self, name: str) -> int:
        return self._cfg.limit(name) - len(self._active[name]) - self._lent.get(name, 0)

    def take_slots(self) -> repo.Slots:
        """Lend the free slots of this process's providers to an accept that claims the
        jobs it accepts (`repo.accept`); `adopt` gives them back."""
        free = {name: n for name in self._lent if (n := self._free(name)) > 0}
        for name, n in free.items():
            self._lent[name] += n
        return repo.Slots(owner=self._cfg.owner, lease_seconds=self._cfg.lease_seconds,
                          free=free)

    def adopt(self, slots: repo.Slots, claimed: Sequence[Any]) -> None:
        """Drive the jobs an accept claimed into `slots`, and take the slots back."""
        for name, n in slots.free.items():
            self._lent[name] -= n
        for row in claimed:
            self._start(row["provider"], row)
        for name, n in slots.free.items():
            if sum(1 for row in claimed if row["provider"] == name) == n:
                self._waiting.add(name)  # every slot filled: more may wait for one

    async def _claim(self, wanted: set[str]) -> bool:
        """Claim jobs for the `wanted` providers with free slots; True if one filled them."""
        filled = False
        configured = [name for name in self._active if name != _OTHER]
        for name in self._active:
            if name not in wanted:
                continue
            free = self._free(name)
            if free <= 0:
                continue
            try:
                claimed = await repo.claim(
                    self._pool, owner=self._cfg.owner, limit=free,
                    lease_seconds=self._cfg.lease_seconds,
                    **({"exclude": configured} if name == _OTHER else {"provider": name}))
            except DATABASE_ERRORS as exc:
                log.warning("claiming %s jobs failed: %r", name, exc)
                self._waiting.add(name)
                continue
            if len(claimed) == free:
                self._waiting.add(name)
            else:
                self._waiting.discard(name)
            for row in claimed:
                self._start(name, row)
            filled = filled or len(claimed) == free
        return filled

    def _start(self, name: str, row: Any) -> None:
        task = asyncio.create_task(self._drive(row), name=f"job-{row['id']}")
        self._active[name].add(task)
        task.add_done_callback(functools.partial(self._done, name))
        self._metrics.in_flight.set(self.in_flight)

    def _done(self, provider: str, task: asyncio.Task[None]) -> None:
        active = self._active[provider]
        active.discard(task)
        self._metrics.in_flight.set(self.in_flight)
        # Jobs may be waiting for a slot: claim once a quarter of the slots are free (one
        # claim for several jobs; sandbox jobs end by the thousand per second), or at the
        # next poll, whichever comes first.
        limit = self._cfg.limit(provider)
        if provider in self._waiting and limit - len(active) >= max(1, limit // 4):
            self.wake([provider])

    # --- one job ---------------------------------------------------------------------

    async def _drive(self, row: Any) -> None:
        try:
            await self._drive_job(row)
        except UNAVAILABLE as exc:
            # Whatever was committed stands; a job left leased is taken up again (by this
            # or another process) when its lease runs out.
            log.warning("job %s: the database is unavailable (%r); left to its lease",
                        row["id"], exc)
        except Exception:
            # Recording the job's outcome failed (a bug): said here, where it happened,
            # rather than by asyncio whenever the task is collected; left to its lease too.
            log.exception("job %s: recording its outcome failed; left to its lease",
                          row["id"])

    async def _drive_job(self, row: Any) -> None:
        spec = JobSpec.model_validate(row["spec"])
        handle = _Handle(self._pool, spec.job_id, self._cfg, row["provider_job_id"])
        provider = self._providers.get(spec.provider)
        workdir = self._scratch / f"job-{spec.job_id}-{row['attempts']}"
        if provider is None or provider.uses_workdir:
            workdir.mkdir(parents=True, exist_ok=True)
        started = asyncio.get_running_loop().time()
        work = asyncio.create_task(self._generate(provider, spec, handle, workdir))
        watcher = asyncio.create_task(self._watch(handle))
        try:
            remaining = (spec.deadline_at - utcnow()).total_seconds()
            canceled = asyncio.create_task(handle.canceled.wait())
            done, _ = await asyncio.wait({work, canceled, watcher}, timeout=max(0.0, remaining),
                                         return_when=asyncio.FIRST_COMPLETED)
            canceled.cancel()
            if work in done:
                media = work.result()
                await self._succeed(spec, row["workspace_id"], media)
                self._metrics.observe(spec.provider, "succeeded",
                                      asyncio.get_running_loop().time() - started)
                return
            await stop_task(work)
            if watcher in done:
                watcher.result()  # raises LeaseLost: another process has the job now
            if handle.canceled.is_set():
                await self._abandon_provider_job(provider, handle)
                await self._end(spec, row["workspace_id"], "canceled", CANCELED)
            else:
                await self._abandon_provider_job(provider, handle)
                await self._end(spec, row["workspace_id"], "failed", JobError(
                    code="deadline_exceeded", retryable=False,
                    message=f"the job did not finish before its deadline "
                    f"({spec.deadline_at.isoformat()})"))
        except LeaseLost:
            log.warning("lost the lease of job %s; another process took it over", spec.job_id)
        except ProviderError as exc:
            self._metrics.errors.labels(spec.provider, exc.code).inc()
            await self._failed_attempt(spec, row, exc)
        except UNAVAILABLE:
            raise
        except Exception as exc:
            log.exception("job %s failed unexpectedly", spec.job_id)
            self._metrics.errors.labels(spec.provider, "internal_error").inc()
            await self._end(spec, row["workspace_id"], "failed", JobError(
                code="internal_error", message=repr(exc)[:500], retryable=False))
        finally:
            await stop_task(work)
            await stop_task(watcher)
            remove_workdir(workdir)

    async def _generate(self, provider: Provider | None, spec: JobSpec, handle: _Handle,
                        workdir: Path) -> Media:
        if provider is None:
            raise ProviderError("provider_unavailable",
                                f"no provider {spec.provider!r} is configured", retryable=False)
        output = await provider.generate(spec, handle, workdir)
        if provider.stores_quickly:
            return self._store(spec, output.video, output.thumbnail, workdir)
        return await asyncio.to_thread(self._store, spec, output.video, output.thumbnail,
                                       workdir)

    async def _watch(self, handle: _Handle) -> None:
        """Renew the lease and notice cancel requests, every `watch_interval` seconds."""
        failures = 0
        while True:
            await asyncio.sleep(self._cfg.watch_interval)
            try:
                await handle.heartbeat()
                failures = 0
            except DATABASE_ERRORS as exc:
                failures += 1
                log.warning("renewing a lease failed (%d): %r", failures, exc)

    async def _abandon_provider_job(self, provider: Provider | None, handle: _Handle) -> None:
        if provider is not None and handle.provider_job_id is not None:
            with contextlib.suppress(Exception):
                await provider.cancel(handle.provider_job_id)

    async def _failed_attempt(self, spec: JobSpec, row: Any, exc: ProviderError) -> None:
        error = JobError(code=exc.code, message=exc.message, retryable=exc.retryable)
        attempts = int(row["attempts"])
        if exc.retryable and attempts < self._cfg.max_attempts:
            delay = max(exc.retry_after or 0.0, random.uniform(
                0, min(self._cfg.retry_cap_seconds, self._cfg.retry_base_seconds * 2 ** attempts)))
            async with self._pool.acquire() as conn:
                await repo.release(conn, job_id=spec.job_id, owner=self._cfg.owner, delay=delay,
                                   resubmit=exc.resubmit, error=error.model_dump())
            log.info("job %s attempt %d failed (%s); retrying in %.1fs", spec.job_id, attempts,
                     exc.code, delay)
            return
        if exc.retryable:
            error = JobError(code=exc.code, retryable=True,
                             message=f"{exc.message} (gave up after {attempts} attempts)")
        await self._end(spec, row["workspace_id"], "failed", error)

    def _store(self, spec: JobSpec, video: Path, thumbnail: Path | None,
               workdir: Path) -> Media:
        found = probe(video)
        problem = mismatch(found, width=spec.width, height=spec.height,
                           duration_seconds=spec.duration_seconds)
        if problem is not None:
            raise ProviderError("bad_output", f"the provider's output does not match: {problem}",
                                retryable=False)
        if thumbnail is None:
            workdir.mkdir(parents=True, exist_ok=True)
            thumbnail = make_thumbnail(video, workdir / "thumbnail.jpg")
        video_key, thumbnail_key = media_keys(spec.video_id)
        video_url = self._media.put(video, video_key)
        thumb_url = self._media.put(thumbnail, thumbnail_key)
        return Media(video_url=video_url, thumbnail_url=thumb_url,
                     duration_seconds=round(found.duration_seconds, 3),
                     aspect_ratio=spec.aspect_ratio, width=found.width, height=found.height)

    async def _succeed(self, spec: JobSpec, workspace_id: UUID, media: Media) -> None:
        event = VideoGenerationSucceeded(
            workspace_id=workspace_id, correlation_id=str(spec.video_id),
            job_id=spec.job_id, video_id=spec.video_id, provider=spec.provider, media=media,
        )
        if not await self._successes.submit(event):
            raise LeaseLost(str(spec.job_id))
        log.info("job %s succeeded: %s", spec.job_id, media.video_url)

    async def _record_successes(self, events: list[VideoGenerationSucceeded]) -> list[bool]:
        """End the jobs as succeeded and enqueue their events, in one statement that does not
        wait for the disk (see `repo.succeed`); for each, whether this process still held
        it."""
        done = await repo.succeed(self._pool, owner=self._cfg.owner, events=events,
                                  publisher=self._publisher, flush_wait=False)
        return [e.job_id in done for e in events]

    async def _end(self, spec: JobSpec, workspace_id: UUID, state: str, error: JobError) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            if not await repo.finish(conn, job_ids=[spec.job_id], owner=self._cfg.owner,
                                     state=state, error=None if state == "canceled"
                                     else error.model_dump()):
                return
            await emit_failed(conn, job_id=spec.job_id, video_id=spec.video_id,
                              workspace_id=workspace_id, provider=spec.provider, error=error,
                              canceled=state == "canceled")
        log.info("job %s %s: %s %s", spec.job_id, state, error.code, error.message)

    # --- jobs nobody drives ----------------------------------------------------------

    async def _sweep(self) -> None:
        abandoned: list[tuple[str, str]] = []
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                for row in await repo.sweep(conn):
                    canceled = row["state"] == "canceled"
                    error = CANCELED if canceled else JobError.model_validate(row["error"])
                    await emit_failed(conn, job_id=row["id"], video_id=row["video_id"],
                                      workspace_id=row["workspace_id"], provider=row["provider"],
                                      error=error, canceled=canceled)
                    if row["provider_job_id"]:
                        abandoned.append((row["provider"], row["provider_job_id"]))
                    log.info("job %s ended by the sweeper: %s", row["id"], row["state"])
        except DATABASE_ERRORS as exc:
            log.warning("sweeping jobs failed: %r", exc)
        for provider_name, provider_job_id in abandoned:
            provider = self._providers.get(provider_name)
            if provider is not None:
                with contextlib.suppress(Exception):
                    await provider.cancel(provider_job_id)

