from __future__ import annotations

import asyncio
from uuid import uuid4

import asyncpg
import pytest

from services.api.event_hub import CHANNEL, VideoEventHub
from shared.runtime import stop_task, wait_event
from tests.infra import Infra
from tests.integration.conftest import eventually

pytestmark = pytest.mark.integration


async def test_the_hub_listens_only_while_a_stream_waits(infra: Infra,
                                                          pool: asyncpg.Pool) -> None:
    hub = VideoEventHub(infra.database_url)
    running = asyncio.create_task(hub.run())
    try:
        await asyncio.sleep(0.3)
        assert not hub.listening  # nobody waits: no LISTEN, no wake-ups for nothing

        video, other = uuid4(), uuid4()
        wake = hub.subscribe(video)
        assert await wait_event(wake, 10)  # the catch-up after the LISTEN
        assert hub.listening
        wake.clear()
        await pool.execute("SELECT pg_notify($1, $2)", CHANNEL, str(other))
        assert not await wait_event(wake, 0.5)  # another video's change
        await pool.execute("SELECT pg_notify($1, $2)", CHANNEL, str(video))
        assert await wait_event(wake, 10)

        hub.unsubscribe(video, wake)
        await eventually(lambda: _async(not hub.listening))
        again = hub.subscribe(video)  # the next stream listens again, and catches up
        assert await wait_event(again, 10)
        assert hub.listening
    finally:
        await stop_task(running)


async def _async(value: bool) -> bool:
    return value
