"""Wakes the live status streams of the videos that changed (one LISTEN per api process)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from typing import Any
from uuid import UUID

import asyncpg

log = logging.getLogger(__name__)
CHANNEL = "influgen_video_events"


class VideoEventHub:
    """Wakes the streams waiting on a video when its `video_events` grow."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)

    def subscribe(self, video_id: UUID) -> asyncio.Event:
        event = asyncio.Event()
        self._waiters[str(video_id)].add(event)
        return event

    def unsubscribe(self, video_id: UUID, event: asyncio.Event) -> None:
        waiters = self._waiters.get(str(video_id))
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._waiters[str(video_id)]

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        for event in self._waiters.get(str(payload), ()):
            event.set()

    async def run(self) -> None:
        """Listen until cancelled, reconnecting after database outages."""
        while True:
            try:
                conn = await asyncpg.connect(self._dsn)
                closed = asyncio.Event()
                conn.add_termination_listener(lambda _conn, done=closed: done.set())
                try:
                    await conn.add_listener(CHANNEL, self._notified)
                    for waiters in list(self._waiters.values()):  # catch up after a gap
                        for event in waiters:
                            event.set()
                    await closed.wait()
                finally:
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=2)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("video event listener: %r; reconnecting", exc)
                await asyncio.sleep(1)
