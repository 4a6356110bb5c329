"""The finalizer's use case: turn generation outcomes into the videos' final states, their
credit settlements and their completion events, in the caller's transaction, exactly once.

A batch of outcomes is applied with a fixed number of statements, whatever its size."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from services.finalizer import repository as repo
from services.finalizer.repository import Settlement
from shared import outbox
from shared.catalog import Catalog
from shared.db import Conn
from shared.events import (
    TOPIC_COMPLETED,
    VideoCompleted,
    VideoGenerationFailed,
    VideoGenerationSucceeded,
)
from shared.inbox import first_deliveries
from shared.videos import completion_event_id, fetch_videos

CONSUMER = "finalizer"
GenerationOutcome = VideoGenerationSucceeded | VideoGenerationFailed


def settlement(event: GenerationOutcome, ctx: Any, catalog: Catalog) -> Settlement:
    """What the outcome does: the charge (the model's rate times the delivered duration,
    at most the reservation; nothing for a failure) and the video's final state."""
    reserved = ctx["credits_quoted"]
    if isinstance(event, VideoGenerationSucceeded):
        model = catalog.get(ctx["model_id"])
        rate = model.tiers[ctx["quality_tier"]].credits_per_second if model else 0.0
        charge = min(reserved, math.ceil(rate * event.media.duration_seconds - 1e-9))
        state = "approved" if ctx["review_mode"] == "autopilot" else "ready"
        return Settlement(job_id=event.job_id, video_id=event.video_id,
                          workspace_id=ctx["workspace_id"], outcome="succeeded",
                          reserved=reserved, charge=charge, status=state, review_state=state,
                          media=event.media.model_dump(mode="json"))
    outcome = "canceled" if event.canceled else "failed"
    return Settlement(job_id=event.job_id, video_id=event.video_id,
                      workspace_id=ctx["workspace_id"], outcome=outcome, reserved=reserved,
                      charge=0, status=outcome, review_state=None, media=None)


async def finalize_many(conn: Conn, events: Sequence[GenerationOutcome],
                        catalog: Catalog) -> list[VideoCompleted]:
    """Apply the events in order; the completion events they produced (an event seen
    before, of an unknown job, or of a job already settled produces none)."""
    new = await first_deliveries(conn, consumer=CONSUMER,
                                 event_ids=[event.event_id for event in events])
    contexts = await repo.job_contexts(
        conn, job_ids=list({e.job_id for e in events if e.event_id in new}))
    firsts: dict[UUID, tuple[GenerationOutcome, Settlement]] = {}
    for event in events:
        ctx = contexts.get(event.job_id)
        if event.event_id in new and ctx is not None and event.job_id not in firsts:
            firsts[event.job_id] = (event, settlement(event, ctx, catalog))
    settled = await repo.settle(conn, [s for _, s in firsts.values()])
    done = [(event, s) for event, s in firsts.values() if s.job_id in settled]
    done_settlements = [s for _, s in done]
    await repo.complete_videos(conn, done_settlements)
    resources = await fetch_videos(conn, [s.video_id for s in done_settlements])
    completed = [
        VideoCompleted(
            event_id=completion_event_id(s.job_id, f"video.{s.status}"),
            event_type=f"video.{s.status}", workspace_id=s.workspace_id,
            correlation_id=event.correlation_id, video=resources[s.video_id])
        for event, s in done
    ]
    if completed:
        await outbox.enqueue_many(conn, topic=TOPIC_COMPLETED, events=[
            (str(c.video.id), c) for c in completed])
    await repo.update_balances(conn, done_settlements)
    return completed


async def finalize(conn: Conn, event: GenerationOutcome,
                   catalog: Catalog) -> VideoCompleted | None:
    """One event (see `finalize_many`); None if it changed nothing."""
    completed = await finalize_many(conn, [event], catalog)
    return completed[0] if completed else None
