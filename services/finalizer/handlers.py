"""The finalizer's use case: turn generation outcomes into the videos' final states, their
credit settlements and their completion events, exactly once.

A batch of outcomes is applied with two statements, whatever its size: a read, then one
write that is atomic on its own, so that no transaction is needed around them (in one, the
workspace rows the write locks would stay locked for the round trip of the COMMIT)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from services.finalizer import repository as repo
from services.finalizer.repository import Settlement
from shared.catalog import Catalog
from shared.db import Conn
from shared.events import (
    TOPIC_COMPLETED,
    VideoCompleted,
    VideoGenerationFailed,
    VideoGenerationSucceeded,
)
from shared.outbox import Publisher
from shared.videos import completed_resource, completion_event_id

CONSUMER = "finalizer"
GenerationOutcome = VideoGenerationSucceeded | VideoGenerationFailed


def settlement(event: GenerationOutcome, ctx: Any, catalog: Catalog) -> Settlement:
    """What the outcome does: the charge (the model's rate times the delivered duration,
    at most the reservation; nothing for a failure) and the video's final state. `ctx` is
    the job's row from `unapplied_outcomes` (the video's own id and workspace, whatever the
    event says)."""
    reserved = ctx["credits_quoted"]
    if isinstance(event, VideoGenerationSucceeded):
        model = catalog.get(ctx["model_id"])
        rate = model.tiers[ctx["quality_tier"]].credits_per_second if model else 0.0
        charge = min(reserved, math.ceil(rate * event.media.duration_seconds - 1e-9))
        state = "approved" if ctx["review_mode"] == "autopilot" else "ready"
        return Settlement(job_id=event.job_id, video_id=ctx["id"],
                          workspace_id=ctx["workspace_id"], outcome="succeeded",
                          reserved=reserved, charge=charge, status=state, review_state=state,
                          media=event.media.model_dump(mode="json"),
                          source_event_id=event.event_id, at=ctx["now"])
    outcome = "canceled" if event.canceled else "failed"
    return Settlement(job_id=event.job_id, video_id=ctx["id"],
                      workspace_id=ctx["workspace_id"], outcome=outcome, reserved=reserved,
                      charge=0, status=outcome, review_state=None, media=None,
                      source_event_id=event.event_id, at=ctx["now"])


async def finalize_many(conn: Conn, events: Sequence[GenerationOutcome],
                        catalog: Catalog, publisher: Publisher | None = None
                        ) -> list[VideoCompleted]:
    """Apply the events in order; the completion events they produced (an event seen
    before, of an unknown job, or of a job already settled produces none). Two round trips
    whatever the batch's size: what the jobs' settlement needs, then the inbox and every
    effect at once."""
    rows = await repo.unapplied_outcomes(
        conn, consumer=CONSUMER, events=[(event.event_id, event.job_id) for event in events])
    firsts: dict[UUID, tuple[Settlement, VideoCompleted]] = {}
    for event in events:
        row = rows.get(event.event_id)
        if row is None or event.job_id in firsts:
            continue
        s = settlement(event, row, catalog)
        firsts[event.job_id] = (s, VideoCompleted(
            event_id=completion_event_id(s.job_id, f"video.{s.status}"),
            event_type=f"video.{s.status}", workspace_id=s.workspace_id,
            correlation_id=event.correlation_id,
            video=completed_resource(row, status=s.status, review_state=s.review_state,
                                     media=s.media, charged=s.charge, at=row["now"])))
    settled = await repo.settle(conn, consumer=CONSUMER,
                                event_ids=[event.event_id for event in events],
                                settlements=list(firsts.values()), topic=TOPIC_COMPLETED,
                                publisher=publisher)
    return [completed for s, completed in firsts.values() if s.job_id in settled]


async def finalize(conn: Conn, event: GenerationOutcome,
                   catalog: Catalog) -> VideoCompleted | None:
    """One event (see `finalize_many`); None if it changed nothing."""
    completed = await finalize_many(conn, [event], catalog)
    return completed[0] if completed else None
