"""HTTP views except videos: health, admin, characters, models, credits, API docs.

Views parse, call one handler, and answer; `errors_and_auth` maps domain errors to RFC 9457
problems and authenticates every `/v1/` request."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from uuid import uuid4

import asyncpg
from aiohttp import web

from services.api import handlers
from services.api import repository as repo
from services.api.auth import token_matches
from services.api.http import (
    body_of,
    cursor_after,
    idempotency_key,
    ok,
    parse_cursor,
    query_of,
    uuid_param,
)
from services.api.keys import (
    BROKER,
    DEPS,
    KEY_CACHE,
    LIMITER,
    POOL,
    SETTINGS,
    WORKSPACE_KEY,
    workspace_of,
)
from services.api.openapi import build as build_openapi
from services.api.openapi import operation
from services.api.problems import PROBLEM_TYPE, invalid, problem
from services.api.ratelimit import retry_after_header
from services.api.schemas import (
    Character,
    CharacterIn,
    CharacterList,
    CharacterPatch,
    Credits,
    CreditsIn,
    Health,
    ModelInfo,
    ModelList,
    TierInfo,
    WorkspaceCreated,
    WorkspaceIn,
    WorkspaceInfo,
    WorkspaceList,
    WorkspaceQuery,
    WorkspaceSummary,
)
from services.api.tracing import request_id
from services.api.validation import RequestInvalid
from shared.db import UNAVAILABLE

log = logging.getLogger("influgen.api")
routes = web.RouteTableDef()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
STATIC = Path(__file__).resolve().parent / "static"
#: Ledger entries in a credits answer, newest first (the whole ledger is in the database).
LEDGER_SHOWN = 100


@web.middleware
async def errors_and_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every answer of the API is a resource or a problem document, also when the database
    is gone or undid a write that conflicted with another (503 with Retry-After: nothing
    was created, the same request can be sent again) or a handler has a bug (500, logged)."""
    try:
        return await _errors_and_auth(request, handler)
    except web.HTTPException:
        raise
    except UNAVAILABLE as exc:
        log.warning("%s %s [%s]: the database is unavailable (%r)", request.method,
                    request.path, request_id(request), exc)
        return problem(503, "Service unavailable", "the database is unreachable; retry shortly",
                       headers={"Retry-After": "1"})
    except asyncpg.TransactionRollbackError as exc:
        # A deadlock or a serialization failure: PostgreSQL undid the whole statement, so
        # nothing was created, and the same request may well go through a moment later.
        log.warning("%s %s [%s]: the write was undone by a conflict (%r)", request.method,
                    request.path, request_id(request), exc)
        return problem(503, "Service unavailable",
                       "the write conflicted with another and was undone; retry shortly",
                       headers={"Retry-After": "1"})
    except Exception:
        rid = request_id(request)
        log.exception("%s %s [%s] failed", request.method, request.path, rid)
        return problem(500, "Internal server error",
                       f"the error was logged with request id {rid}", request_id=rid)


async def _errors_and_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    path = request.path
    if path.startswith("/v1/admin/"):
        given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        if not token_matches(given, request.app[SETTINGS].admin_token.get_secret_value()):
            return problem(401, "Unauthorized", "a valid admin token is required")
    elif path.startswith("/v1/"):
        header = request.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return problem(401, "Unauthorized", "send Authorization: Bearer <api key>")
        ws = await handlers.authenticate(request.app[POOL], header.removeprefix("Bearer ").strip(),
                                         request.app[KEY_CACHE])
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
    except (RequestInvalid, handlers.CharacterNotFound) as exc:
        return invalid(exc.errors)
    except handlers.NotFound:
        return problem(404, "Not found")
    except handlers.Conflict as exc:
        return problem(409, "Conflict", str(exc))
    except handlers.InsufficientCredits as exc:
        return problem(
            402, "Insufficient credits", str(exc),
            quote=exc.quote, available=exc.available, shortfall=exc.quote - exc.available,
        )
    except web.HTTPRequestEntityTooLarge:
        return problem(413, "Request body too large", f"the limit is {limit} bytes")
    except web.HTTPMethodNotAllowed as exc:
        return problem(405, "Method not allowed", headers={"Allow": ",".join(exc.allowed_methods)})
    except web.HTTPNotFound:
        return problem(404, "Not found")
    except web.HTTPClientError as exc:
        if exc.content_type == PROBLEM_TYPE:  # ours (`http.read_json`), with its detail
            raise
        return problem(exc.status, exc.reason)  # aiohttp's own


# --- health and documents ---------------------------------------------------------------

@routes.get("/healthz")
@operation(summary="Liveness", responses={200: Health}, auth=None, tags=("ops",))
async def healthz(request: web.Request) -> web.Response:
    return ok(Health(status="ok"))


@routes.get("/readyz")
@operation(summary="Readiness: database and Kafka reachable",
           responses={200: Health, 503: Health}, auth=None, tags=("ops",))
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
    healthy = all(v == "ok" for v in checks.values())
    return ok(Health(status="ok" if healthy else "unavailable", checks=checks),
              200 if healthy else 503)


@routes.get("/openapi.json")
@operation(summary="This document", responses={200: None}, auth=None, tags=("ops",))
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(build_openapi(request.app, title="Influgen video generation API",
                                           version="1.0.0"))


@routes.get("/")
@operation(summary="The web page: generation form, live queue status card, review queue",
           responses={200: None}, auth=None, tags=("ops",))
async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


@routes.get("/asyncapi.json")
@operation(summary="The AsyncAPI document of the Kafka topics", responses={200: None},
           auth=None, tags=("ops",))
async def asyncapi(request: web.Request) -> web.Response:
    from shared.asyncapi import build

    return web.json_response(build())


@routes.get("/docs")
@operation(summary="API reference (HTML)", responses={200: None}, auth=None, tags=("ops",))
async def docs(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "docs.html")


# --- admin ------------------------------------------------------------------------------

@routes.post("/v1/admin/workspaces")
@operation(summary="Create a workspace; its API key is shown once",
           responses={201: WorkspaceCreated, 409: None}, body=WorkspaceIn,
           auth="adminToken", tags=("admin",),
           headers={"Idempotency-Key": "1 to 255 printable characters, kept with the "
                    "workspace: a creation sent again with it makes no second workspace "
                    "but answers 409 with the first one's workspace_id (its API key was "
                    "shown once: replace it); with another body, 422"})
async def create_workspace(request: web.Request) -> web.Response:
    data = await body_of(request, WorkspaceIn)
    key = idempotency_key(request)
    try:
        created = await handlers.create_workspace(
            request.app[POOL], name=data.name, credits=data.credits, sandbox=data.sandbox,
            creation_key=key)
    except handlers.CreatedBefore as exc:
        if not exc.same:
            return problem(422, "Idempotency-Key reused",
                           "this key created a workspace from another request body")
        return problem(409, "Workspace created before",
                       f"this Idempotency-Key created workspace {exc.workspace_id}; its API "
                       "key was shown once and is not kept: replace it with POST "
                       f"/v1/admin/workspaces/{exc.workspace_id}/key",
                       workspace_id=str(exc.workspace_id))
    return ok(WorkspaceCreated.model_validate(created), 201)


@routes.get("/v1/admin/workspaces")
@operation(summary="Workspaces, newest first, with their credits; ?name= finds them by name",
           responses={200: WorkspaceList}, query=WorkspaceQuery, auth="adminToken",
           tags=("admin",))
async def list_workspaces(request: web.Request) -> web.Response:
    q = query_of(request, WorkspaceQuery)
    async with request.app[POOL].acquire() as conn:
        rows = await repo.list_workspaces(
            conn, name=q.name, before=parse_cursor(q.cursor) if q.cursor else None,
            limit=q.limit + 1)
    items = [WorkspaceSummary.model_validate(dict(r)) for r in rows[: q.limit]]
    more = len(rows) > q.limit
    return ok(WorkspaceList(items=items, next_cursor=cursor_after(
        items[-1].created_at, items[-1].id) if more else None))


@routes.get("/v1/admin/workspaces/{id}")
@operation(summary="A workspace: name, sandbox, credits and the newest 100 ledger entries",
           responses={200: WorkspaceInfo, 404: None}, auth="adminToken", tags=("admin",))
async def get_workspace(request: web.Request) -> web.Response:
    ws_id = uuid_param(request)
    async with request.app[POOL].acquire() as conn, conn.transaction(
            isolation="repeatable_read", readonly=True):  # the row and its ledger agree
        row = await repo.workspace_row(conn, ws_id)
        if row is None:
            raise handlers.NotFound()
        summary = await repo.credits(conn, workspace_id=ws_id, limit=LEDGER_SHOWN)
    return ok(WorkspaceInfo.model_validate({**dict(row), "credits": summary}))


@routes.post("/v1/admin/workspaces/{id}/key")
@operation(summary="Replace a workspace's API key (a leaked one): the new key is shown once; "
           "the old one stops working at once on this api process, within 10 s on others",
           responses={200: WorkspaceCreated, 404: None}, auth="adminToken", tags=("admin",))
async def replace_key(request: web.Request) -> web.Response:
    replaced = await handlers.replace_key(request.app[POOL], request.app[KEY_CACHE],
                                          uuid_param(request))
    if replaced is None:
        raise handlers.NotFound()
    return ok(WorkspaceCreated.model_validate(replaced))


@routes.post("/v1/admin/workspaces/{id}/credits")
@operation(summary="Grant credits to a workspace; with an Idempotency-Key, once",
           responses={200: Credits, 404: None}, body=CreditsIn, auth="adminToken",
           tags=("admin",),
           headers={"Idempotency-Key": "1 to 255 printable characters, kept with the grant: "
                    "the same key, amount and reason grants nothing more and answers the "
                    "workspace's credits (Idempotent-Replayed: true); another amount or "
                    "reason 422"},
           response_headers={200: {"Idempotent-Replayed": "true when the key's grant was "
                                   "made before and nothing was granted now"}})
async def grant_credits(request: web.Request) -> web.Response:
    ws_id = uuid_param(request)
    data = await body_of(request, CreditsIn)
    key = idempotency_key(request)
    async with request.app[POOL].acquire() as conn, conn.transaction():
        granted = await repo.grant(conn, workspace_id=ws_id, amount=data.amount,
                                   reason=data.reason, key=key)
        if granted is None:
            raise handlers.NotFound()
        if granted.conflict:
            return problem(422, "Idempotency-Key reused",
                           "this key was used for a grant of another amount or reason")
        summary = await repo.credits(conn, workspace_id=ws_id, limit=LEDGER_SHOWN)
    return ok(Credits.model_validate(summary),
              headers={"Idempotent-Replayed": "true"} if granted.replayed else None)


# --- characters -------------------------------------------------------------------------

#: Characters per workspace: `GET /v1/characters` lists them all, in one answer.
MAX_CHARACTERS = 1000


@routes.post("/v1/characters")
@operation(summary="Create a character", responses={201: Character, 409: None},
           body=CharacterIn, tags=("characters",))
async def create_character(request: web.Request) -> web.Response:
    data = await body_of(request, CharacterIn)
    workspace_id = workspace_of(request).id
    async with request.app[POOL].acquire() as conn, conn.transaction():
        if await repo.count_locked(conn, "characters", workspace_id) >= MAX_CHARACTERS:
            raise handlers.Conflict(f"a workspace may have at most {MAX_CHARACTERS:,} "
                                    "characters")
        row = await repo.insert_character(
            conn, id=uuid4(), workspace_id=workspace_id, name=data.name,
            review_mode=data.review_mode, reference_image_url=data.reference_image_url,
        )
    return ok(Character.model_validate(dict(row)), 201,
              {"Location": f"/v1/characters/{row['id']}"})


@routes.get("/v1/characters")
@operation(summary="The workspace's characters", responses={200: CharacterList},
           tags=("characters",))
async def list_characters(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        rows = await repo.characters(conn, workspace_id=workspace_of(request).id)
    return ok(CharacterList(items=[Character.model_validate(dict(r)) for r in rows]))


@routes.get("/v1/characters/{id}")
@operation(summary="One character", responses={200: Character, 404: None},
           tags=("characters",))
async def get_character(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        row = await repo.character(conn, id=uuid_param(request),
                                   workspace_id=workspace_of(request).id)
    if row is None:
        raise handlers.NotFound()
    return ok(Character.model_validate(dict(row)))


@routes.patch("/v1/characters/{id}")
@operation(summary="Edit a character (its review mode applies to videos completing later)",
           responses={200: Character, 404: None}, body=CharacterPatch, tags=("characters",))
async def patch_character(request: web.Request) -> web.Response:
    character_id = uuid_param(request)
    data = await body_of(request, CharacterPatch)
    changes = data.model_dump(exclude_unset=True)
    async with request.app[POOL].acquire() as conn:
        row = await repo.update_character(conn, id=character_id,
                                          workspace_id=workspace_of(request).id, changes=changes)
    if row is None:
        raise handlers.NotFound()
    return ok(Character.model_validate(dict(row)))


# --- models and credits -----------------------------------------------------------------

@routes.get("/v1/models")
@operation(summary="The model catalog", responses={200: ModelList}, tags=("catalog",))
async def models(request: web.Request) -> web.Response:
    catalog = request.app[DEPS].catalog
    return ok(ModelList(default_model=catalog.default_model, items=[
        ModelInfo(
            id=m.id, provider=m.provider, description=m.description,
            default=m.id == catalog.default_model, fps=m.fps,
            durations={"min": m.min_duration_seconds, "max": m.max_duration_seconds},
            aspect_ratios=m.aspect_ratios,
            tiers={name: TierInfo(
                credits_per_second=t.credits_per_second, short_side=t.short_side,
                resolutions={a: "x".join(map(str, m.frame_size(name, a)))
                             for a in m.aspect_ratios})
                for name, t in m.tiers.items()},
        ) for m in catalog.models]))


@routes.get("/v1/credits")
@operation(summary="Balance, reservations and the ledger (newest 100 entries)",
           responses={200: Credits}, tags=("credits",))
async def get_credits(request: web.Request) -> web.Response:
    async with request.app[POOL].acquire() as conn:
        summary = await repo.credits(conn, workspace_id=workspace_of(request).id,
                                       limit=LEDGER_SHOWN)
    return ok(Credits.model_validate(summary))
