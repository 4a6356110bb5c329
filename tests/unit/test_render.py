from __future__ import annotations

from pathlib import Path

import av
import pytest
from PIL import Image

from services.generator.media import LocalMediaStore, mismatch, probe
from services.generator.providers.render import RenderRequest, render


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


def test_media_store_writes_atomically_and_returns_absolute_urls(tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(b"video")
    store = LocalMediaStore(tmp_path / "media", "http://example.test:8080/")
    url = store.put(src, "abc/video.mp4")
    assert url == "http://example.test:8080/media/abc/video.mp4"
    assert (tmp_path / "media" / "abc" / "video.mp4").read_bytes() == b"video"
    assert not list((tmp_path / "media").rglob("*.part"))
