"""The built-in providers: `local` (the preview renderer) and `sandbox` (a small clip, at once).

Both render with `render.render` in a process pool, so the event loop stays responsive."""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import Executor
from pathlib import Path

from services.generator.providers.base import JobHandle, Output, Provider
from services.generator.providers.render import RenderRequest, render
from shared.events import JobSpec

PREVIEW_BADGE = "PREVIEW RENDER - not a generative model"


class LocalProvider(Provider):
    name = "local"

    def __init__(self, executor: Executor, *, preset: str = "veryfast") -> None:
        self._executor = executor
        self._preset = preset

    async def generate(self, spec: JobSpec, job: JobHandle, workdir: Path) -> Output:
        frames = spec.duration_seconds * spec.fps
        progress_file = workdir / "progress"
        req = RenderRequest(
            width=spec.width, height=spec.height, fps=spec.fps, frames=frames,
            title=spec.character_name, text=spec.scene_description, badge=PREVIEW_BADGE,
            out_video=str(workdir / "video.mp4"), out_thumbnail=str(workdir / "thumbnail.jpg"),
            progress_file=str(progress_file), preset=self._preset,
        )
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, render, req)
        while not future.done():
            await asyncio.wait([future], timeout=1.0)
            with contextlib.suppress(FileNotFoundError, ValueError):
                done = int(progress_file.read_text() or 0)
                await job.progress(min(99, done * 100 // frames))
        await future
        return Output(video=Path(req.out_video), thumbnail=Path(req.out_thumbnail))


class SandboxProvider(Provider):
    """A small valid clip of the requested duration and aspect ratio, rendered once per
    (duration, size) and handed to every later job as it is (the media store links it):
    no rendering or copying cost under load."""

    name = "sandbox"
    uses_workdir = False
    stores_quickly = True

    def __init__(self, executor: Executor, cache_dir: Path) -> None:
        self._executor = executor
        self._cache = cache_dir
        self._locks: dict[str, asyncio.Lock] = {}

    async def generate(self, spec: JobSpec, job: JobHandle, workdir: Path) -> Output:
        key = f"{spec.duration_seconds}s-{spec.width}x{spec.height}-{spec.fps}"
        video, thumb = self._cache / f"{key}.mp4", self._cache / f"{key}.jpg"
        async with self._locks.setdefault(key, asyncio.Lock()):
            if not video.exists():
                self._cache.mkdir(parents=True, exist_ok=True)
                tmp = self._cache / f"{key}.tmp.mp4"
                req = RenderRequest(
                    width=spec.width, height=spec.height, fps=spec.fps,
                    frames=spec.duration_seconds * spec.fps, title="sandbox",
                    text="Sandbox clip: the whole pipeline, no rendering cost.",
                    badge="SANDBOX", out_video=str(tmp), out_thumbnail=str(thumb),
                    preset="ultrafast",
                )
                await asyncio.get_running_loop().run_in_executor(self._executor, render, req)
                tmp.rename(video)
        return Output(video=video, thumbnail=thumb)
