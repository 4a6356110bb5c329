"""Wakes the live status streams of the videos that changed (one LISTEN per api process,
held only while a stream is open)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, defaultdict
from typing import Any
from uuid import UUID

import asyncpg

log = logging.getLogger(__name__)
CHANNEL = "influgen_video_events"


#: Event streams one workspace may have open at once, per api process.
MAX_STREAMS_PER_WORKSPACE = 100


class VideoEventHub:
    """Wakes the streams waiting on a video when its `video_events` grow.

    The connection listens only while some stream waits: every commit that notifies (each
    status change of every video does) wakes every listening backend of the database and,
    through it, this process: work for nothing when nobody watches."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        #: open streams per workspace (`open_stream`)
        self._streams: Counter[UUID] = Counter()
        #: set when the first stream starts waiting or the last one stops
        self._changed = asyncio.Event()
        #: whether the connection listens now
        self.listening = False

    def open_stream(self, workspace_id: UUID) -> bool:
        """Count a stream the workspace opens; False (and not counted) if it has
        `MAX_STREAMS_PER_WORKSPACE` open in this process already. Each open stream reads
        the database every few seconds while it waits."""
        if self._streams[workspace_id] >= MAX_STREAMS_PER_WORKSPACE:
            return False
        self._streams[workspace_id] += 1
        return True

    def close_stream(self, workspace_id: UUID) -> None:
        self._streams[workspace_id] -= 1
        if self._streams[workspace_id] <= 0:
            del self._streams[workspace_id]

    def subscribe(self, video_id: UUID) -> asyncio.Event:
        event = asyncio.Event()
        if not self._waiters:
            self._changed.set()
        self._waiters[str(video_id)].add(event)
        return event

    def unsubscribe(self, video_id: UUID, event: asyncio.Event) -> None:
        waiters = self._waiters.get(str(video_id))
        if waiters is not None:
            waiters.discard(event)
            if not waiters:
                del self._waiters[str(video_id)]
                if not self._waiters:
                    self._changed.set()

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        for event in self._waiters.get(str(payload), ()):
            event.set()

    async def run(self) -> None:
        """Listen while streams wait, until cancelled; reconnect after database outages."""
        while True:
            try:
                conn = await asyncpg.connect(self._dsn)
                try:
                    await self._serve(conn)
                finally:
                    self.listening = False
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=2)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("video event listener: %r; reconnecting", exc)
                await asyncio.sleep(1)

    async def _serve(self, conn: asyncpg.Connection) -> None:
        """LISTEN when the first stream waits, UNLISTEN when the last one is gone; return
        when the connection is lost."""
        closed = asyncio.Event()

        def terminated(_conn: object) -> None:
            closed.set()
            self._changed.set()

        conn.add_termination_listener(terminated)
        while not closed.is_set():
            self._changed.clear()
            if self._waiters and not self.listening:
                await conn.add_listener(CHANNEL, self._notified)
                self.listening = True
                # Catch up: what changed before the LISTEN (or while disconnected) sent
                # no notification that reached this process.
                for waiters in list(self._waiters.values()):
                    for event in waiters:
                        event.set()
            elif self.listening and not self._waiters:
                await conn.remove_listener(CHANNEL, self._notified)
                self.listening = False
            else:
                await self._changed.wait()
