"""The Python SDK against the real services."""

from __future__ import annotations

import pytest

from devstack.stack import Stack
from influgen.client import ApiError, Client

pytestmark = pytest.mark.e2e
SCENE = "Dancing on a rooftop at night, handheld close-up, playful energy, quick cuts"


async def test_sdk_drives_a_video_to_review(stack: Stack) -> None:
    async with Client(stack.api_url, admin_token=stack.admin_token) as admin:
        ws = await admin.create_workspace("sdk", credits=400, sandbox=True)
        for _ in range(2):  # sent again (an answer lost): granted once
            topped = await admin.grant_credits(ws.id, 100, "top-up", idempotency_key="sdk-t")
        assert (topped.balance, [e.amount for e in topped.ledger]) == (500, [100, 400])
        found = await admin.workspaces(name=ws.name, limit=100)
        assert ws.id in {w.id for w in found.items}
        assert (await admin.workspace(ws.id)).credits.balance == 500
    async with Client(stack.api_url, ws.api_key) as client:
        character = await client.create_character("Mila", review_mode="manual")
        assert [c.id for c in await client.characters()] == [character.id]
        quote = await client.dry_run(character_id=character.id, scene_description=SCENE,
                                     platform="tiktok")
        assert quote.credits.quoted == 8
        assert "setting" in quote.scene_feedback.present
        video = await client.create_video(character_id=character.id,
                                          scene_description=SCENE, duration_seconds=5,
                                          idempotency_key="sdk-1")
        states = [e["data"]["status"] async for e in client.events(video.id)]
        assert states[0] == "queued"
        assert states[-1] == "ready"
        done = await client.wait(video.id)
        assert done.status == "ready"
        assert done.media is not None
        approved = await client.review(video.id, "approve", note="ok")
        assert approved.review_state == "approved"
        listing = await client.videos(status="approved")
        assert [v.id for v in listing.items] == [video.id]
        credits = await client.credits()
        assert (credits.reserved, credits.balance) == (0, 500 - 5)
        with pytest.raises(ApiError) as info:
            await client.create_video(character_id=character.id, scene_description=" ",
                                      duration_seconds=99)
        assert info.value.status == 422
        assert {e.field for e in info.value.errors} == {"scene_description", "duration_seconds"}
        with pytest.raises(ApiError) as info:
            await client.review(video.id, "reject")
        assert info.value.status == 409
    async with Client(stack.api_url, "wrong-key") as stranger:
        with pytest.raises(ApiError) as info:
            await stranger.credits()
        assert info.value.status == 401
