"""GET /v1/videos/{id}/events: server-sent events through the real services."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import Api
from tests.e2e.test_pipeline import wait_terminal

pytestmark = pytest.mark.e2e


async def read_stream(api: Api, key: str, video_id: str, last_event_id: str | None = None,
                      limit: int | None = None) -> list[dict[str, Any]]:
    headers = {"Authorization": f"Bearer {key}"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async with api.session.get(f"{api.base}/v1/videos/{video_id}/events",
                               headers=headers,
                               timeout=aiohttp.ClientTimeout(total=60)) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        async for raw in resp.content:
            line = raw.decode().rstrip("\r\n")
            if not line:
                if "data" in current:
                    events.append(current)
                    if limit is not None and len(events) >= limit:
                        break
                current = {}
                continue
            name, _, value = line.partition(": ")
            current[name] = json.loads(value) if name == "data" else value
    return events


async def test_stream_shows_every_state_and_resumes(api: Api) -> None:
    key = await api.workspace(sandbox=True)
    character = await api.character(key, "autopilot")
    created = await api.video(key, character, duration_seconds=5)
    events = await asyncio.wait_for(read_stream(api, key, created["id"]), timeout=60)
    statuses = [e["data"]["status"] for e in events]
    assert statuses[0] == "queued"
    assert "generating" in statuses
    assert statuses[-1] == "approved"  # the stream ends at the final state
    assert statuses.index("queued") < statuses.index("generating") < statuses.index("approved")
    assert [e["data"]["job"]["state"] for e in events][-1] == "succeeded"
    ids = [int(e["id"]) for e in events]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    resumed = await read_stream(api, key, created["id"], last_event_id=events[1]["id"])
    assert [e["id"] for e in resumed] == [e["id"] for e in events[2:]]
    # An id that is not one of ours, even past a bigint (that was a 500): from the start.
    for junk in ("x", "-5", "9" * 30):
        again = await read_stream(api, key, created["id"], last_event_id=junk)
        assert [e["id"] for e in again] == [e["id"] for e in events]


async def test_a_client_that_leaves_early_does_not_disturb_others(api: Api) -> None:
    key = await api.workspace()
    character = await api.character(key, "manual")
    created = await api.video(key, character, duration_seconds=5, quality_tier="draft")
    first = await read_stream(api, key, created["id"], limit=1)  # then hangs up
    assert first[0]["data"]["status"] == "queued"
    video = await wait_terminal(api, key, created["id"])
    assert video["status"] == "ready"
    events = await read_stream(api, key, created["id"])
    assert events[-1]["data"]["status"] == "ready"


async def test_another_workspaces_stream_is_404(api: Api) -> None:
    owner, other = await api.workspace(), await api.workspace()
    character = await api.character(owner, "manual")
    created = await api.video(owner, character, duration_seconds=5, quality_tier="draft")
    status, _ = await api.call("GET", f"/v1/videos/{created['id']}/events", other)
    assert status == 404
