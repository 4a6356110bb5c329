"""Entrypoint for `influgen.video.requested.v1`: the same judging and creation as HTTP.

A valid event creates the video and its job; an invalid one produces `video.rejected` with
every error; bytes that are not a request event go to the DLQ. The offset is committed only
after the transaction holding the effect (and the inbox row) committed."""

from __future__ import annotations

import json
from collections.abc import Sequence

from faststream.kafka import KafkaBroker
from pydantic import TypeAdapter

from services.api.handlers import INTAKE_CONSUMER, IntakeDeps, intake_events
from shared.consumer import subscribe
from shared.db import Conn
from shared.events import TOPIC_REQUESTED, VideoRequested


def register(broker: KafkaBroker, *, deps: IntakeDeps, group_id: str,
             fetch_max_wait_ms: int, instance_id: str = "") -> None:
    async def handle(conn: Conn, events: Sequence[tuple[VideoRequested, bytes]]) -> None:
        await intake_events(deps, conn, [(event, json.loads(raw)) for event, raw in events])

    subscribe(
        broker, topic=TOPIC_REQUESTED, adapter=TypeAdapter(VideoRequested),
        consumer=INTAKE_CONSUMER, group_id=group_id, fetch_max_wait_ms=fetch_max_wait_ms,
        description="Video requests from upstream systems, judged like POST /v1/videos.",
        pool=deps.pool, handle=handle, instance_id=instance_id,
    )
