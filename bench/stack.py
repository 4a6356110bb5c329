"""The stack itself: `up` cold (empty Maven repository, no broker jars, new data
directories) and warm (everything cached, processes stopped); time from POST to `ready` for
an 8-second 9:16 video beside the time to render that video alone; memory at idle."""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from bench.common import rss_mb, service_rss_mb, write_result
from devstack.proc import free_port
from devstack.stack import Stack, call_api
from services.generator.providers.render import RenderRequest, render

SCENE = ("Walking through a marble hotel lobby at golden hour, subtle camera push-in, "
         "confident luxury travel energy")


def post_to_ready(stack: Stack, key: str, character: str) -> float:
    started = time.perf_counter()
    video = call_api("POST", f"{stack.api_url}/v1/videos", key, {
        "character_id": character, "scene_description": SCENE, "duration_seconds": 8,
        "aspect_ratio": "9:16", "quality_tier": "standard"})
    while video["status"] not in ("ready", "failed"):
        time.sleep(0.02)
        video = call_api("GET", f"{stack.api_url}/v1/videos/{video['id']}", key)
    assert video["status"] == "ready", video
    return time.perf_counter() - started


def render_alone() -> float:
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        render(RenderRequest(width=720, height=1280, fps=24, frames=8 * 24, title="Mila",
                             text=SCENE, badge="PREVIEW", out_video=f"{tmp}/v.mp4",
                             out_thumbnail=f"{tmp}/t.jpg"))
        return time.perf_counter() - started


def run() -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="influgen-bench-stack-"))
    os.environ["INFLUGEN_KAFKA_LIBS"] = str(base / "kafka-libs")
    os.environ["INFLUGEN_MAVEN_REPO"] = str(base / "m2")
    stack = Stack(base / "run", api_port=free_port(), pg_port=free_port(),
                  kafka_port=free_port(), kafka_controller_port=free_port())
    try:
        started = time.perf_counter()
        stack.up()
        cold = time.perf_counter() - started
        stack.down()
        started = time.perf_counter()
        stack.up()
        warm = time.perf_counter() - started
        ws = call_api("POST", f"{stack.api_url}/v1/admin/workspaces", stack.admin_token,
                   {"name": "bench", "credits": 100_000})
        character = call_api("POST", f"{stack.api_url}/v1/characters", ws["api_key"],
                          {"name": "Mila", "review_mode": "manual"})
        post_to_ready(stack, ws["api_key"], character["id"])  # warm the render pool
        timings = [post_to_ready(stack, ws["api_key"], character["id"]) for _ in range(3)]
        renders = [render_alone() for _ in range(3)]
        time.sleep(10)
        idle = service_rss_mb(stack)
        kafka_pid, pg_pid = stack.kafka.pid(), stack.postgres.pid()
        if kafka_pid:
            idle["kafka (JVM, heap 512m)"] = rss_mb(kafka_pid)
        if pg_pid:
            idle["postgres (all backends)"] = round(rss_mb(pg_pid), 1)
    finally:
        stack.down()
        os.environ.pop("INFLUGEN_KAFKA_LIBS")
        os.environ.pop("INFLUGEN_MAVEN_REPO")
        shutil.rmtree(base, ignore_errors=True)
    ready = statistics.median(timings)
    alone = statistics.median(renders)
    result = {
        "make_up_seconds": {"cold": round(cold, 1), "warm": round(warm, 1),
                            "cold_means": "empty Maven repository (jars downloaded from Maven "
                                          "Central), new PostgreSQL and Kafka data; the "
                                          "virtual environment already installed"},
        "post_to_ready_8s_9x16_720p_seconds": {"median_of_3": round(ready, 2),
                                               "runs": [round(t, 2) for t in timings]},
        "baseline_render_alone_seconds": {"median_of_3": round(alone, 2)},
        "ratio_post_to_ready_vs_render_alone": round(ready / alone, 2),
        "rss_mb_idle": idle,
        "cpu_count": psutil.cpu_count(),
    }
    write_result("stack", result)
    print(f"stack: make up cold {cold:.1f}s, warm {warm:.1f}s; POST->ready (8s 9:16 720p) "
          f"{ready:.2f}s vs render alone {alone:.2f}s (x{ready / alone:.2f}); idle RSS {idle}")
    return result
