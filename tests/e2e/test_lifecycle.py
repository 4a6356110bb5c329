"""Cancel, review and sandbox workspaces through the three real services."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from devstack.stack import Stack
from tests.e2e.conftest import Api
from tests.e2e.test_pipeline import wait_terminal
from tests.kafka_tools import read_events

pytestmark = pytest.mark.e2e


async def completions(stack: Stack, video_id: str) -> list[dict[str, Any]]:
    events = await read_events(stack.bootstrap, "influgen.video.completed.v1")
    return [e for e in events if e.get("video", {}).get("id") == video_id]


async def test_review_moves_ready_to_approved_and_emits_events(api: Api, stack: Stack) -> None:
    key = await api.workspace()
    character = await api.character(key, "manual")
    created = await api.video(key, character, duration_seconds=5, quality_tier="draft")
    video = await wait_terminal(api, key, created["id"])
    assert video["status"] == "ready"
    status, _ = await api.call("POST", f"/v1/videos/{video['id']}/review", key,
                                     {"decision": "maybe"})
    assert status == 422
    status, reviewed = await api.call("POST", f"/v1/videos/{video['id']}/review", key,
                                      {"decision": "approve", "note": "lovely"})
    assert (status, reviewed["status"], reviewed["review_state"]) == (200, "approved",
                                                                      "approved")
    status, _ = await api.call("POST", f"/v1/videos/{video['id']}/review", key,
                                     {"decision": "reject"})
    assert status == 409
    for _ in range(100):
        events = await completions(stack, video["id"])
        if len({e["event_type"] for e in events}) == 2:
            break
        await asyncio.sleep(0.1)
    assert sorted(e["event_type"] for e in events) == ["video.approved", "video.ready"]
    assert len({e["event_id"] for e in events}) == 2


async def test_cancel_releases_the_credits(api: Api, stack: Stack) -> None:
    key = await api.workspace(credits=200)
    character = await api.character(key, "autopilot")
    # A long premium render, so that the cancel meets it queued or running.
    created = await api.video(key, character, duration_seconds=60, quality_tier="premium")
    status, _ = await api.call("POST", f"/v1/videos/{created['id']}/cancel", key)
    assert status == 200
    video = await wait_terminal(api, key, created["id"])
    assert (video["status"], video["job"]["state"]) == ("canceled", "canceled")
    assert video["credits"] == {"quoted": 120, "reserved": 0, "charged": 0}
    _, credits = await api.call("GET", "/v1/credits", key)
    assert (credits["balance"], credits["reserved"], credits["available"]) == (200, 0, 200)
    status, _ = await api.call("POST", f"/v1/videos/{created['id']}/cancel", key)
    assert status == 409
    for _ in range(100):
        events = await completions(stack, created["id"])
        if events:
            break
        await asyncio.sleep(0.1)
    assert [e["event_type"] for e in events] == ["video.canceled"]


async def test_sandbox_workspace_runs_the_pipeline_with_the_sandbox_provider(api: Api) -> None:
    key = await api.workspace(sandbox=True)
    character = await api.character(key, "autopilot")
    created = await api.video(key, character, duration_seconds=12, aspect_ratio="1:1",
                              quality_tier="premium")
    assert created["job"]["provider"] == "sandbox"
    video = await wait_terminal(api, key, created["id"], timeout=60)
    assert video["status"] == "approved"
    media = video["media"]
    assert (media["duration_seconds"], media["aspect_ratio"]) == (12.0, "1:1")
    assert media["width"] == media["height"] == 144
    assert video["credits"]["charged"] == 24  # quoted at the requested model's premium rate
