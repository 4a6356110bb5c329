"""HTTP views: parse, call one handler, map domain errors to status codes."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, time
from typing import Any
from uuid import UUID

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.api import handlers, idempotency
from services.api import repository as repo
from services.api.auth import token_matches
from services.api.keys import BROKER, DEPS, LIMITER, POOL, SETTINGS, WORKSPACE_KEY, workspace_of
from services.api.problems import invalid, problem
from services.api.ratelimit import retry_after_header
from services.api.validation import RequestInvalid
from shared.events import FieldError, Platform, ReviewMode, VideoResource, VideoStatus
from shared.videos import fetch_video
from shared.videos import list_videos as list_videos_query

routes = web.RouteTableDef()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC_PREFIXES = ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/media/")


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(data, status=status, headers=headers, dumps=_dumps)


def _dumps(data: Any) -> str:
    return json.dumps(data, default=str)


async def read_json(request: web.Request) -> Any:
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(
            text=json.dumps({"type": "about:blank", "title": "Unsupported media type",
                             "status": 415, "detail": "send Content-Type: application/json"}),
            content_type="application/problem+json",
        )
    try:
        return await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(
            text=json.dumps({"type": "about:blank", "title": "Malformed JSON", "status": 400,
                             "detail": str(exc)}),
            content_type="application/problem+json",
        ) from None


def _parse(model: type[BaseModel], body: Any) -> Any:
    if not isinstance(body, dict):
        raise RequestInvalid([FieldError(field="body", message="must be a JSON object")])
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise RequestInvalid([
            FieldError(field=".".join(str(p) for p in e["loc"]) or "body",
                       message="unknown field" if e["type"] == "extra_forbidden" else e["msg"])
            for e in exc.errors()
        ]) from None


@web.middleware
async def errors_and_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    path = request.path
    if path.startswith("/v1/admin/"):
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not token_matches(given, request.app[SETTINGS].admin_token.get_secret_value()):
            return problem(401, "Unauthorized", "a valid admin token is required")
    elif path.startswith("/v1/"):
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return problem(401, "Unauthorized", "send Authorization: Bearer <api key>")
        ws = await handlers.authenticate(request.app[POOL], header.removeprefix("Bearer ").strip())
        if ws is None:
            return problem(401, "Unauthorized", "unknown API key")
        wait = request.app[LIMITER].check(ws.id)
        if wait is not None:
            return problem(429, "Too many requests", "this workspace's rate limit is reached",
                           headers={"Retry-After": retry_after_header(wait)})
        request[WORKSPACE_KEY] = ws
    limit = request.app[SETTINGS].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        return problem(413, "Request body too large", f"the limit is {limit} bytes")
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        return problem(413, "Request body too large", f"the limit is {limit} bytes")
    except web.HTTPNotFound:
        return problem(404, "Not found")
    except web.HTTPMethodNotAllowed as exc:
        return problem(405, "Method not allowed", headers={"Allow": ",".join(exc.allowed_methods)})
    except RequestInvalid as exc:
        return invalid(exc.errors)
    except handlers.CharacterNotFound as exc:
        return invalid(exc.errors)
    except handlers.NotFound:
        return problem(404, "Not found")
    except handlers.InsufficientCredits as exc:
        return problem(
            402, "Insufficient credits", str(exc),
            quote=exc.quote, available=exc.available, shortfall=exc.quote - exc.available,
        )


# --- health ---------------------------------------------------------------------------

@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, str] = {}
    try:
        async with request.app[POOL].acquire(timeout=2) as conn:
            await conn.fetchval("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"unreachable: {exc!r}"
    try:
        reachable = await request.app[BROKER].ping(timeout=2.0)
    except Exception:
        reachable = False
    checks["kafka"] = "ok" if reachable else "unreachable"
    ok = all(v == "ok" for v in checks.values())
    return _json({"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503)


# --- admin ----------------------------------------------------------------------------

class WorkspaceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    credits: int = Field(default=0, ge=0)
    sandbox: bool = False


class CreditsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    amount: int = Field(gt=0)
    reason: str = Field(min_length=1, max_length=500)


@routes.post("/v1/admin/workspaces")
async def create_workspace(request: web.Request) -> web.Response:
    data: WorkspaceIn = _parse(WorkspaceIn, await read_json(request))
    created = await handlers.create_workspace(
        request.app[POOL], name=data.name, credits=data.credits, sandbox=data.sandbox
    )
    return _json(created, 201)


@routes.post("/v1/admin/workspaces/{id}/credits")
async def grant_credits(request: web.Request) -> web.Response:
    ws_id = _uuid(request.match_info["id"])
    data: CreditsIn = _parse(CreditsIn, await read_json(request))
    async with request.app[POOL].acquire() as conn, conn.transaction():
        if not await repo.grant(conn, workspace_id=ws_id, amount=data.amount, reason=data.reason):
            raise handlers.NotFound()
        summary = await repo.credits(conn, workspace_id=ws_id, limit=0)
    summary.pop("ledger")
    return _json(summary)


# --- characters -----------------------------------------------------------------------

class CharacterIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    review_mode: ReviewMode = "manual"
    reference_image_url: str | None = Field(default=None, max_length=2000)


class CharacterPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    review_mode: ReviewMode | None = None
    reference_image_url: str | None = Field(default=None, max_length=2000)


def _character(row: Any) -> dict[str, Any]:
    return {k: row[k] for k in
            ("id", "name", "review_mode", "reference_image_url", "created_at", "updated_at")}


def _uuid(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise handlers.NotFound() from None


@routes.post("/v1/characters")
async def create_character(request: web.Request) -> web.Response:
    data: CharacterIn = _parse(CharacterIn, await read_json(request))
    from uuid import uuid4

    async with request.app[POOL].acquire() as conn:
        row = await repo.insert_character(
            conn, id=uuid4(), workspace_id=workspace_of(request).id, name=data.name,
            review_mode=data.review_mode, reference_image_url=data.reference_image_url,
        )
    return _json(_character(row), 201, {"Location": f"/v1/characters/{row['id']}"})


@routes.get("/v1/characters")
async def list_characters(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        rows = await repo.characters(conn, workspace_id=workspace_of(request).id)
    return _json({"items": [_character(r) for r in rows]})


@routes.get("/v1/characters/{id}")
async def get_character(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        row = await repo.character(
            conn, id=_uuid(request.match_info["id"]), workspace_id=workspace_of(request).id
        )
    if row is None:
        raise handlers.NotFound()
    return _json(_character(row))


@routes.patch("/v1/characters/{id}")
async def patch_character(request: web.Request) -> web.Response:
    data: CharacterPatch = _parse(CharacterPatch, await read_json(request))
    async with request.app[POOL].acquire() as conn:
        row = await repo.update_character(
            conn, id=_uuid(request.match_info["id"]), workspace_id=workspace_of(request).id,
            changes=data.model_dump(exclude_unset=True),
        )
    if row is None:
        raise handlers.NotFound()
    return _json(_character(row))


# --- models and credits ---------------------------------------------------------------

@routes.get("/v1/models")
async def models(request: web.Request) -> web.Response:
    catalog = request.app[DEPS].catalog
    items = []
    for m in catalog.models:
        items.append({
            "id": m.id, "provider": m.provider, "description": m.description,
            "default": m.id == catalog.default_model, "fps": m.fps,
            "durations": {"min": m.min_duration_seconds, "max": m.max_duration_seconds},
            "aspect_ratios": m.aspect_ratios,
            "tiers": {
                name: {"credits_per_second": t.credits_per_second,
                       "short_side": t.short_side,
                       "resolutions": {a: "x".join(map(str, m.frame_size(name, a)))
                                       for a in m.aspect_ratios}}
                for name, t in m.tiers.items()
            },
        })
    return _json({"default_model": catalog.default_model, "items": items})


@routes.get("/v1/credits")
async def get_credits(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        summary = await repo.credits(conn, workspace_id=workspace_of(request).id, limit=100)
    return _json(summary)


# --- videos ---------------------------------------------------------------------------

def _accepted(body: Any, replayed: bool = False) -> web.Response:
    headers = {"Location": f"/v1/videos/{body['id']}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return web.Response(status=202, text=json.dumps(body), content_type="application/json",
                        headers=headers)


@routes.post("/v1/videos")
async def create_video(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    body = await read_json(request)
    valid = handlers.judge(body, deps.catalog)
    if request.query.get("dry_run") in ("true", "1"):
        return _json(handlers.dry_run(valid))
    workspace = workspace_of(request)
    key = request.headers.get("Idempotency-Key")
    if key is None:
        async with deps.pool.acquire() as conn, conn.transaction():
            resource = await handlers.create_video(deps, workspace, valid, source="http",
                                                   conn=conn)
        return _accepted(resource.model_dump(mode="json"))
    if not 1 <= len(key) <= 255:
        raise RequestInvalid([FieldError(field="Idempotency-Key",
                                         message="must be 1 to 255 characters")])
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
            return _accepted(claim.body, replayed=True)
        try:
            async with conn.transaction():
                resource = await handlers.create_video(deps, workspace, valid, source="http",
                                                       conn=conn)
                data = resource.model_dump(mode="json")
                await idempotency.complete(conn, workspace_id=workspace.id, key=key,
                                           status=202, body=data, video_id=resource.id)
        except BaseException:
            # Refused or failed: nothing was created, so a retry with this key may run.
            await idempotency.release(conn, workspace_id=workspace.id, key=key)
            raise
    return _accepted(data)


class VideoQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: VideoStatus | None = None
    character_id: UUID | None = None
    platform: Platform | None = None
    planned_from: datetime | date | None = None
    planned_to: datetime | date | None = None
    limit: int = Field(default=20, ge=1, le=100)
    cursor: str | None = None


def _cursor(resource: VideoResource) -> str:
    raw = f"{resource.created_at.isoformat()}|{resource.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _parse_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        created, vid = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        return datetime.fromisoformat(created), UUID(vid)
    except ValueError:
        raise RequestInvalid(
            [FieldError(field="cursor", message="not a cursor from this API")]
        ) from None


def _instant(value: datetime | date, end: bool) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    moment = datetime.combine(value, time.max if end else time.min)
    return moment.replace(tzinfo=UTC)


@routes.get("/v1/videos")
async def list_videos(request: web.Request) -> web.Response:
    q: VideoQuery = _parse(VideoQuery, dict(request.query))
    where = ["v.workspace_id = $1"]
    args: list[Any] = [workspace_of(request).id]

    def add(sql: str, value: Any) -> None:
        args.append(value)
        where.append(sql.replace("?", f"${len(args)}"))

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
        created, vid = _parse_cursor(q.cursor)
        args.extend([created, vid])
        where.append(f"(v.created_at, v.id) < (${len(args) - 1}, ${len(args)})")
    async with request.app[POOL].acquire() as conn:
        items = await list_videos_query(conn, " AND ".join(where), args, q.limit + 1)
    more = len(items) > q.limit
    items = items[: q.limit]
    return _json({
        "items": [i.model_dump(mode="json") for i in items],
        "next_cursor": _cursor(items[-1]) if more else None,
    })


@routes.get("/v1/videos/{id}")
async def get_video(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        resource = await fetch_video(
            conn, _uuid(request.match_info["id"]), workspace_of(request).id
        )
    if resource is None:
        raise handlers.NotFound()
    return web.Response(text=resource.model_dump_json(), content_type="application/json")
