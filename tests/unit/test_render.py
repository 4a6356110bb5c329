from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import uuid4

import av
import numpy as np
import pytest
from PIL import Image

from services.generator.media import LocalMediaStore, media_keys, mismatch, probe
from services.generator.providers.render import PUSH_IN, RenderRequest, draw_canvas, render


@pytest.mark.parametrize(("width", "height"), [(144, 256), (256, 144), (160, 160)])
def test_render_makes_exact_h264_frames_and_a_thumbnail(tmp_path: Path, width: int,
                                                        height: int) -> None:
    req = RenderRequest(width=width, height=height, fps=8, frames=40, title="Mila",
                        text="A scene", badge="PREVIEW", out_video=str(tmp_path / "v.mp4"),
                        out_thumbnail=str(tmp_path / "t.jpg"),
                        progress_file=str(tmp_path / "progress"), preset="ultrafast")
    assert render(req) == 40
    found = probe(tmp_path / "v.mp4")
    assert (found.width, found.height, found.frames, found.codec) == (width, height, 40, "h264")
    assert found.duration_seconds == pytest.approx(5.0)
    assert mismatch(found, width=width, height=height, duration_seconds=5) is None
    assert mismatch(found, width=width, height=height, duration_seconds=8) is not None
    assert mismatch(found, width=width + 2, height=height, duration_seconds=5) is not None
    with av.open(str(tmp_path / "v.mp4")) as c:
        first, *_ = c.decode(video=0)
        assert first.format.name == "yuv420p"
    assert Image.open(tmp_path / "t.jpg").size == (width, height)
    assert (tmp_path / "progress").read_text() == "40"


def test_frames_push_in(tmp_path: Path) -> None:
    """Consecutive frames differ (the camera moves); the first and last differ most."""
    req = RenderRequest(width=160, height=288, fps=8, frames=24, title="Theo",
                        text="Walking", badge="PREVIEW", out_video=str(tmp_path / "v.mp4"),
                        out_thumbnail=str(tmp_path / "t.jpg"), preset="ultrafast")
    render(req)
    with av.open(str(tmp_path / "v.mp4")) as c:
        frames = [f.to_ndarray(format="gray").astype(int) for f in c.decode(video=0)]
    step = abs(frames[1] - frames[0]).mean()
    whole = abs(frames[-1] - frames[0]).mean()
    assert whole > step > 0


def test_the_first_frame_is_the_canvas_in_its_colours(tmp_path: Path) -> None:
    """The frames are cut from the canvas's yuv420p planes: a chroma plane cut at the wrong
    place or swapped shows as a colour shift against the canvas itself."""
    req = RenderRequest(width=360, height=640, fps=8, frames=8, title="Mila",
                        text="A beach at sunset", badge="PREVIEW",
                        out_video=str(tmp_path / "v.mp4"), out_thumbnail=str(tmp_path / "t.jpg"),
                        preset="ultrafast")
    render(req)
    canvas = Image.fromarray(draw_canvas(req))
    cw, ch = canvas.size
    w, h = cw / PUSH_IN, ch / PUSH_IN  # the first frame: the whole frame, before the push-in
    expected = np.asarray(canvas.crop(((cw - w) / 2, (ch - h) / 2, (cw + w) / 2, (ch + h) / 2))
                          .resize((req.width, req.height))).astype(int)
    with av.open(str(tmp_path / "v.mp4")) as c:
        first = next(c.decode(video=0)).to_ndarray(format="rgb24").astype(int)
    per_channel = abs(first - expected).mean(axis=(0, 1))
    assert per_channel.max() < 14, per_channel


def test_media_store_links_when_it_can_and_copies_when_it_cannot(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"video")
    store = LocalMediaStore(tmp_path / "media", "http://example.test:8080/")
    store.put(src, "a/video.mp4")
    assert (tmp_path / "media" / "a" / "video.mp4").stat().st_ino == src.stat().st_ino

    def cross_device(*_: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr("services.generator.media.os.link", cross_device)
    store.put(src, "b/video.mp4")
    copied = tmp_path / "media" / "b" / "video.mp4"
    assert copied.read_bytes() == b"video"
    assert copied.stat().st_ino != src.stat().st_ino


def test_media_store_writes_atomically_and_returns_absolute_urls(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"video")
    store = LocalMediaStore(tmp_path / "media", "http://example.test:8080/")
    url = store.put(src, "abc/video.mp4")
    assert url == "http://example.test:8080/media/abc/video.mp4"
    assert (tmp_path / "media" / "abc" / "video.mp4").read_bytes() == b"video"
    assert not list((tmp_path / "media").rglob("*.part"))


def test_media_store_makes_a_directory_only_when_a_key_needs_a_new_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"video")
    (tmp_path / "media").mkdir()
    store = LocalMediaStore(tmp_path / "media", "http://example.test:8080/")
    made: list[Path] = []
    mkdir = Path.mkdir

    def counting_mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
        made.append(self)
        mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", counting_mkdir)
    first, second = uuid4(), uuid4()
    for video_id in (first, second):
        for key in media_keys(video_id):
            store.put(src, key)
    assert (tmp_path / "media" / str(first)[:2] / f"{first}.jpg").read_bytes() == b"video"
    # Two videos, four files: a directory per shard the keys name, none per video.
    assert sorted(made) == sorted({tmp_path / "media" / str(v)[:2] for v in (first, second)})
    assert media_keys(first) == (f"{str(first)[:2]}/{first}.mp4", f"{str(first)[:2]}/{first}.jpg")
