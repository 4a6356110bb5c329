"""HTTP views: parse, call one handler, map domain errors to status codes."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.api import handlers
from services.api import repository as repo
from services.api.auth import token_matches
from services.api.keys import BROKER, DEPS, POOL, SETTINGS, WORKSPACE_KEY, workspace_of
from services.api.problems import invalid, problem
from services.api.validation import RequestInvalid
from shared.events import FieldError, ReviewMode
from shared.videos import fetch_video

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
        request[WORKSPACE_KEY] = ws
    try:
        return await handler(request)
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

@routes.post("/v1/videos")
async def create_video(request: web.Request) -> web.Response:
    deps = request.app[DEPS]
    body = await read_json(request)
    valid = handlers.judge(body, deps.catalog)
    if request.query.get("dry_run") in ("true", "1"):
        return _json(handlers.dry_run(valid))
    async with deps.pool.acquire() as conn, conn.transaction():
        resource = await handlers.create_video(
            deps, workspace_of(request), valid, source="http", conn=conn
        )
    return web.Response(
        status=202, text=resource.model_dump_json(), content_type="application/json",
        headers={"Location": f"/v1/videos/{resource.id}"},
    )


@routes.get("/v1/videos/{id}")
async def get_video(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        resource = await fetch_video(
            conn, _uuid(request.match_info["id"]), workspace_of(request).id
        )
    if resource is None:
        raise handlers.NotFound()
    return web.Response(text=resource.model_dump_json(), content_type="application/json")
