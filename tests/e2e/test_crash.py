"""kill -9 of the generator mid-job, and two generators at once."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from devstack.proc import free_port, pid_alive, terminate
from devstack.stack import ROOT, Stack
from tests.catalogs import small_hosted_catalog
from tests.e2e.conftest import Api
from tests.e2e.test_pipeline import wait_terminal
from tests.infra import Infra
from tests.kafka_tools import read_events
from tests.standins.replicate import TOKEN, ReplicateStandIn, Script

pytestmark = pytest.mark.e2e


@pytest.fixture
async def standin() -> AsyncIterator[ReplicateStandIn]:
    fake = ReplicateStandIn()
    server = TestServer(fake.app())
    await server.start_server()
    fake.base_url = str(server.make_url("")).rstrip("/")
    yield fake
    await server.close()


@pytest.fixture
async def crash_stack(infra: Infra, standin: ReplicateStandIn,
                      tmp_path: Path) -> AsyncIterator[Stack]:
    catalog = small_hosted_catalog(tmp_path)
    run_dir = Path(tempfile.mkdtemp(prefix="influgen-crash-"))
    stack = Stack(run_dir, api_port=free_port(), database_url=infra.database_url,
                  bootstrap_servers=infra.bootstrap_servers, extra_env={
                      "INFLUGEN_LEASE_SECONDS": "3", "INFLUGEN_WATCH_INTERVAL_SECONDS": "0.5",
                      "INFLUGEN_RETRY_BASE_SECONDS": "0.1", "INFLUGEN_RETRY_CAP_SECONDS": "0.3",
                      "INFLUGEN_RATE_LIMIT_PER_SECOND": "0",
                      "INFLUGEN_CATALOG_PATH": str(catalog),
                      "INFLUGEN_REPLICATE_API_TOKEN": TOKEN,
                      "INFLUGEN_REPLICATE_BASE_URL": standin.base_url,
                      "INFLUGEN_REPLICATE_POLL_INTERVAL_SECONDS": "0.1"})
    await asyncio.to_thread(stack.up)  # the loop keeps serving the stand-in meanwhile
    yield stack
    for name in ("api", "generator", "finalizer"):
        await asyncio.to_thread(stack.stop_service, name)
    logs = Path("tests/artifacts/crash-logs")
    logs.mkdir(parents=True, exist_ok=True)
    for log in stack.logs.glob("*.log"):
        shutil.copy(log, logs / log.name)
    shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture
async def crash_api(crash_stack: Stack) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, crash_stack.api_url, crash_stack.admin_token)


def kill9(stack: Stack, name: str) -> None:
    pid = stack.service_pid(name)
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)  # the service and its render pool, as a crash would
    while pid_alive(pid):  # SIGKILL is asynchronous: wait for the death before restarting
        time.sleep(0.01)


async def job(api: Api, key: str, video_id: str) -> dict[str, Any]:
    _, video = await api.call("GET", f"/v1/videos/{video_id}", key)
    return dict(video["job"])


async def exactly_once(stack: Stack, video_id: str) -> None:
    """One generation outcome and one completion event id for the video."""
    for _ in range(100):
        completed = await read_events(stack.bootstrap, "influgen.video.completed.v1")
        mine = [e for e in completed if e["video"]["id"] == video_id]
        if mine:
            break
        await asyncio.sleep(0.1)
    assert len({e["event_id"] for e in mine}) == 1
    generated = await read_events(stack.bootstrap, "influgen.video.generated.v1")
    assert len({e["event_id"] for e in generated if e.get("video_id") == video_id}) == 1


async def test_kill9_mid_render_then_restart(crash_api: Api, crash_stack: Stack) -> None:
    key = await crash_api.workspace()
    character = await crash_api.character(key, "manual")
    created = await crash_api.video(key, character, duration_seconds=30, quality_tier="draft")
    for _ in range(300):
        state = await job(crash_api, key, created["id"])
        if state["state"] == "running" and state["progress"] > 0:
            break
        await asyncio.sleep(0.05)
    assert state["state"] == "running"
    kill9(crash_stack, "generator")
    crash_stack.start_service("generator")
    video = await wait_terminal(crash_api, key, created["id"], timeout=120)
    assert video["status"] == "ready"
    assert video["job"]["attempts"] == 2  # the first attempt died with the process
    await exactly_once(crash_stack, created["id"])


async def test_kill9_mid_hosted_job_resumes_without_resubmitting(
    crash_api: Api, crash_stack: Stack, standin: ReplicateStandIn
) -> None:
    standin.script = Script(processing_polls=40)
    key = await crash_api.workspace()
    character = await crash_api.character(key, "autopilot")
    created = await crash_api.video(key, character, duration_seconds=5,
                                    model_id="replicate-video-1")
    for _ in range(200):
        if standin.submissions and standin.polls.get("p0001", 0) > 2:
            break
        await asyncio.sleep(0.05)
    kill9(crash_stack, "generator")
    crash_stack.start_service("generator")
    video = await wait_terminal(crash_api, key, created["id"], timeout=120)
    assert video["status"] == "approved"
    assert standin.submissions == 1
    await exactly_once(crash_stack, created["id"])


async def test_two_generators_never_run_a_job_twice(crash_api: Api, crash_stack: Stack) -> None:
    second = subprocess.Popen(
        [sys.executable, "-m", "services.generator.main"], cwd=ROOT,
        env={**crash_stack.service_env(), "INFLUGEN_INSTANCE_ID": "second-generator"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        key = await crash_api.workspace(credits=10_000)
        character = await crash_api.character(key, "autopilot")
        ids = []
        for _ in range(12):
            created = await crash_api.video(key, character, duration_seconds=5,
                                            quality_tier="draft")
            ids.append(created["id"])
        videos = [await wait_terminal(crash_api, key, i, timeout=180) for i in ids]
        assert {v["status"] for v in videos} == {"approved"}
        assert {v["job"]["attempts"] for v in videos} == {1}
        for video_id in ids:
            await exactly_once(crash_stack, video_id)
    finally:
        terminate(second.pid)


async def test_a_failure_after_retries_releases_the_credits(
    crash_api: Api, crash_stack: Stack, standin: ReplicateStandIn
) -> None:
    standin.script = Script(submit=["503"] * 20, retry_after="0")
    key = await crash_api.workspace(credits=100)
    character = await crash_api.character(key, "manual")
    created = await crash_api.video(key, character, duration_seconds=5,
                                    model_id="replicate-video-1")
    video = await wait_terminal(crash_api, key, created["id"], timeout=60)
    assert (video["status"], video["job"]["state"]) == ("failed", "failed")
    assert video["job"]["attempts"] == 4
    assert video["job"]["error"]["code"] == "provider_unavailable"
    assert video["credits"] == {"quoted": 30, "reserved": 0, "charged": 0}
    _, credits = await crash_api.call("GET", "/v1/credits", key)
    assert (credits["balance"], credits["reserved"], credits["available"]) == (100, 0, 100)
    await exactly_once(crash_stack, created["id"])


async def test_up_right_after_a_stop_signal_starts_the_service_again(
        crash_api: Api, crash_stack: Stack) -> None:
    """`make up` run just after a SIGTERM counted the service on its way out as running (its
    ready file stayed while it stopped) and returned with the service gone for good."""
    old = crash_stack.service_pid("finalizer")
    assert old is not None
    os.killpg(old, signal.SIGTERM)
    await asyncio.sleep(0.05)  # it has begun to stop (which takes 0.1-1.6 s here)
    # What `up` does for each service, without its preamble (PostgreSQL, Kafka, topics),
    # which here can outlast the stop and hide the flaw.
    await asyncio.to_thread(crash_stack.start_service, "finalizer")
    await asyncio.to_thread(crash_stack.wait_services)
    new = crash_stack.service_pid("finalizer")
    assert new is not None
    assert new != old
    assert not pid_alive(old)
    assert crash_stack.ready_file("finalizer").read_text() == str(new)
    key = await crash_api.workspace()
    character = await crash_api.character(key, "autopilot")
    created = await crash_api.video(key, character, duration_seconds=5, quality_tier="draft")
    video = await wait_terminal(crash_api, key, created["id"], timeout=60)
    assert video["status"] == "approved"
