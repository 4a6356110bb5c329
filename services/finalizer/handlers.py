"""The finalizer's use case: turn a generation outcome into the video's final state, its
credit settlement and its completion event, in one transaction, exactly once."""

from __future__ import annotations

import math

from services.finalizer import repository as repo
from shared import outbox
from shared.catalog import Catalog
from shared.db import Conn
from shared.events import (
    TOPIC_COMPLETED,
    VideoCompleted,
    VideoGenerationFailed,
    VideoGenerationSucceeded,
)
from shared.inbox import first_delivery
from shared.videos import completion_event_id, fetch_video

CONSUMER = "finalizer"


async def finalize(
    conn: Conn, event: VideoGenerationSucceeded | VideoGenerationFailed,
    catalog: Catalog,
) -> VideoCompleted | None:
    """Apply the event inside the caller's transaction; None if it changed nothing."""
    if not await first_delivery(conn, consumer=CONSUMER, event_id=event.event_id):
        return None
    ctx = await repo.job_context(conn, job_id=event.job_id)
    if ctx is None:
        return None
    reserved = ctx["credits_quoted"]
    if isinstance(event, VideoGenerationSucceeded):
        model = catalog.get(ctx["model_id"])
        rate = model.tiers[ctx["quality_tier"]].credits_per_second if model else 0.0
        charge = min(reserved, math.ceil(rate * event.media.duration_seconds - 1e-9))
        outcome = "succeeded"
    else:
        charge, outcome = 0, "canceled" if event.canceled else "failed"
    if not await repo.settle(conn, job_id=event.job_id, workspace_id=ctx["workspace_id"],
                             outcome=outcome, reserved=reserved, charge=charge):
        return None  # another terminal state won the race; this one is recorded and ignored
    if isinstance(event, VideoGenerationSucceeded):
        state = "approved" if ctx["review_mode"] == "autopilot" else "ready"
        await repo.complete_video(conn, video_id=event.video_id, status=state, review_state=state,
                                  media=event.media.model_dump(), charged=charge)
    else:
        state = outcome
        await repo.complete_video(conn, video_id=event.video_id, status=state, review_state=None,
                                  media=None, charged=0)
    resource = await fetch_video(conn, event.video_id)
    assert resource is not None
    event_type = f"video.{state}"
    completed = VideoCompleted(
        event_id=completion_event_id(event.job_id, event_type),
        event_type=event_type,
        workspace_id=ctx["workspace_id"], correlation_id=event.correlation_id, video=resource,
    )
    await outbox.enqueue(conn, topic=TOPIC_COMPLETED, key=str(event.video_id), event=completed)
    return completed
