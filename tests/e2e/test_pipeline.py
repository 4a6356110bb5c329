"""One request through all three services, over the real broker and database."""

from __future__ import annotations

import asyncio
import io
import tempfile
from pathlib import Path
from typing import Any

import av
import pytest
from PIL import Image

from tests.e2e.conftest import Api

pytestmark = pytest.mark.e2e

TERMINAL = {"ready", "approved", "rejected", "failed", "canceled"}
SCENE = ("Walking through a marble hotel lobby at golden hour, subtle camera push-in, "
         "confident luxury travel energy")


async def wait_terminal(api: Api, key: str, video_id: str, timeout: float = 120) -> Any:
    for _ in range(int(timeout / 0.2)):
        status, video = await api.call("GET", f"/v1/videos/{video_id}", key)
        assert status == 200, video
        if video["status"] in TERMINAL:
            return video
        await asyncio.sleep(0.2)
    raise AssertionError(f"video {video_id} did not finish: {video}")


async def fetch(api: Api, url: str) -> bytes:
    async with api.session.get(url) as resp:
        assert resp.status == 200, url
        return await resp.read()


@pytest.mark.parametrize(
    ("review_mode", "aspect", "size", "expected"),
    [("manual", "9:16", (480, 854), "ready"), ("autopilot", "16:9", (854, 480), "approved")],
)
async def test_request_ends_in_review_state_with_real_media(
    api: Api, review_mode: str, aspect: str, size: tuple[int, int], expected: str
) -> None:
    key = await api.workspace()
    character = await api.character(key, review_mode)
    status, created = await api.call("POST", "/v1/videos", key, {
        "character_id": character, "scene_description": SCENE, "duration_seconds": 5,
        "aspect_ratio": aspect, "quality_tier": "draft",
    })
    assert status == 202, created
    assert created["status"] == "queued"

    video = await wait_terminal(api, key, created["id"])
    assert video["status"] == expected
    assert video["review_state"] == expected
    assert video["job"]["state"] == "succeeded"
    media = video["media"]
    assert (media["width"], media["height"]) == size
    assert media["aspect_ratio"] == aspect
    assert media["video_url"].startswith("http://127.0.0.1:")

    mp4 = await fetch(api, media["video_url"])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "v.mp4"
        path.write_bytes(mp4)
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264"
            frames = [f for f in container.decode(stream)]
    assert len(frames) == 5 * 24
    assert (frames[0].width, frames[0].height) == size
    assert frames[0].format.name == "yuv420p"
    last_pts, time_base = frames[-1].pts, stream.time_base
    assert last_pts is not None
    assert time_base is not None
    assert float(last_pts * time_base) == pytest.approx(5 - 1 / 24, abs=0.01)

    thumb = Image.open(io.BytesIO(await fetch(api, media["thumbnail_url"])))
    thumb.load()
    assert thumb.format == "JPEG"
    assert thumb.size == size

    status, credits = await api.call("GET", "/v1/credits", key)
    assert credits["reserved"] == 0
    assert credits["balance"] == 1000 - video["credits"]["charged"]
    assert video["credits"]["charged"] == 3  # ceil(0.5 credits/s x 5 s)
