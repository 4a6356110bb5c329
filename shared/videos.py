"""The video resource (SPEC section 6), read from the database.

Used by the api for its responses and by the finalizer for the completion events, so the
resource has one definition."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID, uuid5

from shared.db import Conn
from shared.events import CreditsView, JobError, JobView, Media, SceneFeedback, VideoResource

#: The columns `to_resource` reads besides `settled`, from videos `v` joined with their jobs
#: `j`.
COLUMNS = """v.*, j.id AS job_id, j.state AS job_state, j.attempts AS job_attempts,
       j.progress AS job_progress, j.provider AS job_provider, j.error AS job_error,
       CASE WHEN j.state = 'queued' THEN  -- among the jobs waiting for the same provider
           (SELECT count(*) + 1 FROM jobs q
             WHERE q.state = 'queued' AND q.provider = j.provider
               AND (q.created_at, q.id) < (j.created_at, j.id))
       END AS queue_position"""

_SELECT = f"""
SELECT {COLUMNS}, s.job_id IS NOT NULL AS settled
  FROM videos v
  JOIN jobs j ON j.video_id = v.id
  LEFT JOIN settlements s ON s.job_id = j.id
"""


def completion_event_id(job_id: UUID, event_type: str) -> UUID:
    """The id of a video's completion event of a type: stable across retries and across
    services, so subscribers can deduplicate on it."""
    return uuid5(job_id, event_type)


def to_resource(row: Any) -> VideoResource:
    error = row["job_error"]
    return VideoResource(
        id=row["id"],
        character_id=row["character_id"],
        status=row["status"],
        review_state=row["review_state"],
        platform=row["platform"],
        type=row["type"],
        scene_description=row["scene_description"],
        planned_date=row["planned_date"],
        caption=row["caption"],
        hashtags=list(row["hashtags"]),
        cta=row["cta"],
        duration_seconds=row["duration_seconds"],
        aspect_ratio=row["aspect_ratio"],
        model_id=row["model_id"],
        quality_tier=row["quality_tier"],
        job=JobView(
            id=row["job_id"],
            state=row["job_state"],
            attempts=row["job_attempts"],
            progress=row["job_progress"],
            queue_position=row["queue_position"],
            provider=row["job_provider"],
            error=JobError.model_validate(error) if error else None,
        ),
        media=Media.model_validate(row["media"]) if row["media"] else None,
        credits=CreditsView(
            quoted=row["credits_quoted"],
            reserved=0 if row["settled"] else row["credits_quoted"],
            charged=row["credits_charged"],
        ),
        scene_feedback=SceneFeedback.model_validate(row["scene_feedback"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        completed_at=row["completed_at"],
    )


def completed_resource(row: Any, *, status: str, review_state: str | None,
                       media: dict[str, Any] | None, charged: int, at: datetime) -> VideoResource:
    """The resource of a video (`row` with `COLUMNS`) as it reads once the finalizer's
    completion of it commits: settled, in its final state, with `completed_at` and
    `updated_at` at `at` (the time the completion writes into the row)."""
    return to_resource({
        **row, "status": status, "review_state": review_state, "media": media,
        "credits_charged": charged, "completed_at": at, "updated_at": at, "settled": True,
    })


async def fetch_video(
    conn: Conn, video_id: UUID, workspace_id: UUID | None = None
) -> VideoResource | None:
    """The resource, or None when it does not exist (or belongs to another workspace)."""
    if workspace_id is None:
        row = await conn.fetchrow(_SELECT + " WHERE v.id = $1", video_id)
    else:
        row = await conn.fetchrow(
            _SELECT + " WHERE v.id = $1 AND v.workspace_id = $2", video_id, workspace_id
        )
    return to_resource(row) if row is not None else None


async def fetch_videos(conn: Conn, video_ids: list[UUID]) -> dict[UUID, VideoResource]:
    """The resources of the videos that exist, by id."""
    if not video_ids:
        return {}
    rows = await conn.fetch(_SELECT + " WHERE v.id = any($1::uuid[])", video_ids)
    return {row["id"]: to_resource(row) for row in rows}


async def list_videos(
    conn: Conn, where: str, args: list[Any], limit: int
) -> list[VideoResource]:
    rows = await conn.fetch(
        _SELECT + f" WHERE {where} ORDER BY v.created_at DESC, v.id DESC LIMIT {int(limit)}",
        *args,
    )
    return [to_resource(r) for r in rows]
