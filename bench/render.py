"""Renderer: seconds of video rendered per second of wall time, at 480p, 720p and 1080p
(9:16), beside FFmpeg's own synthetic source (`testsrc2`, generated in C) encoded with
libx264 at the same size, frame rate and preset, in the same run and process."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import av

from bench.common import write_result
from services.generator.providers.render import RenderRequest, render
from shared.catalog import frame_size

SECONDS = 10
FPS = 24
SIZES = (480, 720, 1080)
PRESETS = ("veryfast", "ultrafast")


def baseline(width: int, height: int, preset: str, out: Path) -> float:
    """FFmpeg's testsrc2 through libx264 (yuv420p), as `ffmpeg -f lavfi -i testsrc2 ...`."""
    started = time.perf_counter()
    source = av.open(f"testsrc2=size={width}x{height}:rate={FPS}:duration={SECONDS}",
                     format="lavfi")
    sink = av.open(str(out), mode="w")
    stream = sink.add_stream("libx264", rate=FPS)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    stream.options = {"preset": preset, "crf": "23"}
    for frame in source.decode(video=0):
        frame.pts = None
        for packet in stream.encode(frame):
            sink.mux(packet)
    for packet in stream.encode():
        sink.mux(packet)
    sink.close()
    source.close()
    return time.perf_counter() - started


def ours(width: int, height: int, preset: str, tmp: Path) -> float:
    started = time.perf_counter()
    render(RenderRequest(width=width, height=height, fps=FPS, frames=SECONDS * FPS,
                         title="Mila Rivers", text="Walking through a marble hotel lobby at "
                         "golden hour, subtle camera push-in, confident luxury travel energy",
                         badge="PREVIEW RENDER", out_video=str(tmp / "ours.mp4"),
                         out_thumbnail=str(tmp / "ours.jpg"), preset=preset))
    return time.perf_counter() - started


def run() -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in PRESETS:
            for short in SIZES:
                width, height = frame_size(short, "9:16")
                base = min(baseline(width, height, preset, Path(tmp) / "b.mp4") for _ in range(2))
                mine = min(ours(width, height, preset, Path(tmp)) for _ in range(2))
                row: dict[str, Any] = {"preset": preset, "resolution": f"{width}x{height}",
                       "video_seconds": SECONDS,
                       "ours_video_seconds_per_second": round(SECONDS / mine, 2),
                       "baseline_video_seconds_per_second": round(SECONDS / base, 2),
                       "ratio_ours_to_baseline": round(base / mine, 3)}
                rows.append(row)
                print(f"render {preset:9} {row['resolution']:>9}: ours "
                      f"{row['ours_video_seconds_per_second']}x real time, testsrc2+libx264 "
                      f"{row['baseline_video_seconds_per_second']}x, ratio "
                      f"{row['ratio_ours_to_baseline']}")
    result: dict[str, Any] = {
        "results": rows, "goal": "ratio >= 0.5 (at least half the baseline's speed)",
        "met": all(r["ratio_ours_to_baseline"] >= 0.5 for r in rows),
        "method": "best of 2 runs each; one process; the renderer's production preset is "
                  "veryfast",
    }
    write_result("render", result)
    return result
