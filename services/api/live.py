"""Live status: GET /v1/videos/{id}/events as server-sent events (aiohttp-sse).

The history comes from `video_events` (written by triggers on every change); one LISTEN
connection per api process wakes the streams of the videos that changed."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from aiohttp import web
from aiohttp_sse import sse_response

from services.api import handlers
from services.api.event_hub import MAX_STREAMS_PER_WORKSPACE
from services.api.http import uuid_param
from services.api.keys import HUB, POOL, workspace_of
from services.api.openapi import operation
from services.api.problems import problem
from shared.db import Conn, delete_in_batches
from shared.events import FINAL_STATUSES
from shared.runtime import wait_event

routes = web.RouteTableDef()


def _payload(row: Any) -> str:
    return json.dumps({
        "video_id": str(row["video_id"]), "status": row["status"],
        "review_state": row["review_state"],
        "job": {"state": row["job_state"], "progress": row["progress"],
                "attempts": row["attempts"], "error": row["error"]},
        "at": row["created_at"].isoformat(),
    })


async def purge(conn: Conn, *, older_than: timedelta, batch: int = 10_000) -> int:
    """Delete the history rows older than `older_than` of videos that are over (a stream of
    one then shows its state as it is now: `video_events`); how many were deleted."""
    return await delete_in_batches(
        conn, "video_events",
        "created_at < now() - $1::interval AND video_id IN"
        " (SELECT id FROM videos WHERE status = any($2::text[]))",
        older_than, sorted(FINAL_STATUSES), batch=batch)


#: A video's state as it is now, in the columns of a `video_events` row.
_NOW = """SELECT v.id AS video_id, v.status, v.review_state, j.state AS job_state,
                 j.progress, j.attempts, j.error, v.updated_at AS created_at
            FROM videos v JOIN jobs j ON j.video_id = v.id WHERE v.id = $1"""


@routes.get("/v1/videos/{id}/events")
@operation(summary="Server-sent events: each status change until generation is over "
           "(resumable with Last-Event-ID)", responses={200: None, 404: None, 429: None},
           tags=("videos",))
async def video_events(request: web.Request) -> web.StreamResponse:
    video_id = uuid_param(request)
    workspace_id = workspace_of(request).id
    pool = request.app[POOL]
    owner = await pool.fetchval("SELECT 1 FROM videos WHERE id = $1 AND workspace_id = $2",
                                video_id, workspace_id)
    if owner is None:
        raise handlers.NotFound()
    try:
        last = int(request.headers.get("Last-Event-ID", "0") or 0)
    except ValueError:
        last = 0
    if not 0 <= last < 2**63:  # not an id of ours (a bigint): from the start, as for junk
        last = 0
    hub = request.app[HUB]
    if not hub.open_stream(workspace_id):
        return problem(429, "Too many requests", f"at most {MAX_STREAMS_PER_WORKSPACE} "
                       "event streams of a workspace may be open at once; close one",
                       headers={"Retry-After": "1"})
    wake = hub.subscribe(video_id)
    try:
        async with sse_response(request) as sse:
            first = True
            while sse.is_connected():
                wake.clear()
                rows = await pool.fetch(
                    "SELECT * FROM video_events WHERE video_id = $1 AND id > $2 ORDER BY id",
                    video_id, last)
                for row in rows:
                    await sse.send(_payload(row), id=str(row["id"]), event="status")
                    last = row["id"]
                if rows and rows[-1]["status"] in FINAL_STATUSES:
                    break
                if first and not rows and (now := await pool.fetchrow(_NOW, video_id)) \
                        and now["status"] in FINAL_STATUSES:
                    # Over, and no change after `last` (its history purged, or `last` the
                    # final one's id already): its state as it is now, then the end.
                    await sse.send(_payload(now), id=str(last), event="status")
                    break
                first = False
                await wait_event(wake, 5)
            return sse
    finally:
        hub.unsubscribe(video_id, wake)
        hub.close_stream(workspace_id)
