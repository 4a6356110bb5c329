"""HTTP views of videos: create (idempotent), dry run, read, list."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, time
from typing import Any

from aiohttp import web

from services.api import handlers, idempotency
from services.api.http import (
    IDEMPOTENCY_KEY_DOC,
    body_of,
    cursor_after,
    idempotency_key,
    ok,
    parse_cursor,
    query_of,
    read_json,
    uuid_param,
)
from services.api.keys import DEPS, POOL, SETTINGS, VIDEO_WRITER, workspace_of
from services.api.openapi import operation
from services.api.problems import problem
from services.api.schemas import (
    CreateQuery,
    DryRun,
    ReviewIn,
    VideoList,
    VideoQuery,
    VideoRequest,
)
from shared.events import FINAL_STATUSES, VideoResource
from shared.videos import fetch_video, list_videos

routes = web.RouteTableDef()


def _accepted(resource: VideoResource, replayed: bool = False) -> web.Response:
    headers = {"Location": f"/v1/videos/{resource.id}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return ok(resource, 202, headers)


@routes.post("/v1/videos")
@operation(
    summary="Request a video (202: the content item and job exist); ?dry_run=true judges, "
    "quotes and gives scene feedback without storing anything",
    responses={202: VideoResource, 200: DryRun, 402: None, 409: None},
    body=VideoRequest, query=CreateQuery, tags=("videos",),
    headers={"Idempotency-Key": IDEMPOTENCY_KEY_DOC},
    response_headers={202: {"Location": "the video's URL, /v1/videos/{id}",
                            "Idempotent-Replayed": "true when this is the first response "
                            "to the same Idempotency-Key and body, replayed"},
                      409: {"Retry-After": "seconds to wait before trying again"}},
)
async def create_video(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    # A dry run that is not understood must not create a video and spend credits: an
    # unknown parameter (`dryrun`) or value (`dry_run=maybe`) is a 422.
    query = query_of(request, CreateQuery)
    body = await read_json(request)
    valid = handlers.judge(body, deps.catalog)
    if query.dry_run:
        return ok(DryRun.model_validate(handlers.dry_run(valid)))
    workspace = workspace_of(request)
    writer = request.app[VIDEO_WRITER]
    key = idempotency_key(request)
    if key is None:
        return _accepted(await writer.submit(handlers.NewVideo(workspace, valid, "http")))
    digest = idempotency.request_hash(body)
    async with deps.pool.acquire() as conn:
        claim = await idempotency.claim(conn, workspace_id=workspace.id, key=key, digest=digest)
    if claim.conflict:
        return problem(422, "Idempotency-Key reused",
                       "this key was used with a different request body")
    if not claim.owned:
        if claim.status is None:
            return problem(409, "Request in progress",
                           "a request with this Idempotency-Key is still being processed",
                           headers={"Retry-After": "1"})
        return _accepted(VideoResource.model_validate(claim.body), replayed=True)
    try:
        # The response is stored under the key in the transaction that creates the video.
        resource = await writer.submit(handlers.NewVideo(workspace, valid, "http", key))
    except BaseException:
        # Refused or failed: nothing was created, so a retry with this key may run.
        async with deps.pool.acquire() as conn:
            await idempotency.release(conn, workspace_id=workspace.id, key=key)
        raise
    return _accepted(resource)


@routes.get("/v1/videos/{id}")
@operation(summary="The video's status resource", responses={200: VideoResource, 404: None},
           tags=("videos",))
async def get_video(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        resource = await fetch_video(conn, uuid_param(request), workspace_of(request).id)
    if resource is None:
        raise handlers.NotFound()
    return ok(resource)


def _instant(value: datetime | date, end: bool) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.combine(value, time.max if end else time.min).replace(tzinfo=UTC)


@routes.get("/v1/videos")
@operation(summary="The workspace's videos, newest first, with a cursor stable under inserts",
           responses={200: VideoList}, query=VideoQuery, tags=("videos",))
async def list_(request: web.Request) -> web.Response:
    q = query_of(request, VideoQuery)
    where = ["v.workspace_id = $1"]
    args: list[Any] = [workspace_of(request).id]

    def add(sql: str, *values: Any) -> None:
        for value in values:
            args.append(value)
            sql = sql.replace("?", f"${len(args)}", 1)
        where.append(sql)

    if q.status:
        add("v.status = ?", q.status)
    if q.character_id:
        add("v.character_id = ?", q.character_id)
    if q.platform:
        add("v.platform = ?", q.platform)
    if q.planned_from:
        add("v.planned_at >= ?", _instant(q.planned_from, end=False))
    if q.planned_to:
        add("v.planned_at <= ?", _instant(q.planned_to, end=True))
    if q.cursor:
        add("(v.created_at, v.id) < (?, ?)", *parse_cursor(q.cursor))
    async with request.app[POOL].acquire() as conn:
        items = await list_videos(conn, " AND ".join(where), args, q.limit + 1)
    more = len(items) > q.limit
    items = items[: q.limit]
    return ok(VideoList(items=items, next_cursor=cursor_after(items[-1].created_at,
                                                             items[-1].id) if more else None))


@routes.post("/v1/videos/{id}/cancel")
@operation(summary="Cancel a video; its job stops and its credits are released. Answers once "
           "the video is canceled (or after a few seconds, with the cancel under way)",
           responses={200: VideoResource, 404: None, 409: None}, tags=("videos",))
async def cancel_video(request: web.Request) -> web.Response:
    video_id = uuid_param(request)
    workspace = workspace_of(request)
    pool = request.app[POOL]
    async with pool.acquire() as conn:
        await handlers.request_cancel(conn, workspace, video_id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + request.app[SETTINGS].cancel_wait_seconds
    while True:
        async with pool.acquire() as conn:
            resource = await fetch_video(conn, video_id, workspace.id)
        assert resource is not None
        if resource.status in FINAL_STATUSES or loop.time() >= deadline:
            return ok(resource)
        await asyncio.sleep(0.1)


@routes.post("/v1/videos/{id}/review")
@operation(summary="Approve or reject a ready video", body=ReviewIn,
           responses={200: VideoResource, 404: None, 409: None}, tags=("videos",))
async def review_video(request: web.Request) -> web.Response:
    video_id = uuid_param(request)
    data = await body_of(request, ReviewIn)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        resource = await handlers.review(conn, workspace_of(request), video_id,
                                         decision=data.decision, note=data.note)
    return ok(resource)
