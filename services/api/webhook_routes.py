"""HTTP views of webhook endpoints: register, list, delete, and the delivery log."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from uuid import uuid4

from aiohttp import web

from services.api import handlers
from services.api import repository as repo
from services.api.http import body_of, ok, uuid_param
from services.api.keys import POOL, SETTINGS, workspace_of
from services.api.openapi import operation
from services.api.schemas import (
    Webhook,
    WebhookAttempt,
    WebhookCreated,
    WebhookDelivery,
    WebhookDeliveryList,
    WebhookIn,
    WebhookList,
    WebhookSecret,
)
from services.api.validation import RequestInvalid
from shared.events import FieldError
from shared.webhooks import UrlRefused, check_url, new_secret

routes = web.RouteTableDef()
#: Endpoints per workspace: every completion event is a delivery to each of them.
MAX_ENDPOINTS = 16
#: How long after a secret is replaced deliveries are still signed with it too.
SECRET_OVERLAP = timedelta(hours=24)
#: Replaced secrets still signing, at most (the newest): each is a signature on every
#: delivery.
MAX_PREVIOUS_SECRETS = 8


@routes.post("/v1/webhooks")
@operation(summary="Register an endpoint for completion events (signed, Standard Webhooks)",
           responses={201: WebhookCreated, 409: None}, body=WebhookIn, tags=("webhooks",))
async def create_webhook(request: web.Request) -> web.Response:
    data = await body_of(request, WebhookIn)
    allow = request.app[SETTINGS].webhook_allow_private
    try:
        await asyncio.to_thread(check_url, data.url, allow_private=allow)
    except UrlRefused as exc:
        raise RequestInvalid([FieldError(field="url", message=str(exc))]) from None
    workspace_id = workspace_of(request).id
    async with request.app[POOL].acquire() as conn, conn.transaction():
        count = await repo.count_locked(conn, "webhook_endpoints", workspace_id,
                                        "deleted_at IS NULL")
        if count >= MAX_ENDPOINTS:
            raise handlers.Conflict(f"a workspace may have at most {MAX_ENDPOINTS} webhook "
                                    "endpoints; delete one first")
        row = await conn.fetchrow(
            "INSERT INTO webhook_endpoints (id, workspace_id, url, secret, event_types)"
            " VALUES ($1, $2, $3, $4, $5) RETURNING *",
            uuid4(), workspace_id, data.url, new_secret(), list(data.event_types))
    assert row is not None
    return ok(WebhookCreated.model_validate(dict(row)), 201,
              {"Location": f"/v1/webhooks/{row['id']}"})


@routes.get("/v1/webhooks")
@operation(summary="The workspace's webhook endpoints", responses={200: WebhookList},
           tags=("webhooks",))
async def list_webhooks(request: web.Request) -> web.Response:
    rows = await request.app[POOL].fetch(
        "SELECT * FROM webhook_endpoints WHERE workspace_id = $1 AND deleted_at IS NULL"
        " ORDER BY created_at", workspace_of(request).id)
    return ok(WebhookList(items=[Webhook.model_validate(dict(r)) for r in rows]))


@routes.post("/v1/webhooks/{id}/secret")
@operation(summary="Replace the endpoint's secret (shown once); deliveries are signed with "
           "each replaced secret as well for 24 hours after its replacement, so that the "
           "receiver can switch over", responses={200: WebhookSecret, 404: None},
           tags=("webhooks",))
async def replace_secret(request: web.Request) -> web.Response:
    # The secret replaced now joins those replaced before that still sign; the expired
    # ones, and any beyond the newest MAX_PREVIOUS_SECRETS, are dropped.
    row = await request.app[POOL].fetchrow(
        """
        UPDATE webhook_endpoints SET secret = $3, previous_secrets = (
            SELECT coalesce(jsonb_agg(kept.p), '[]'::jsonb) FROM (
                SELECT p FROM jsonb_array_elements(previous_secrets || jsonb_build_array(
                           jsonb_build_object('secret', secret,
                                              'expires_at', now() + $4::interval))) AS e(p)
                 WHERE (p->>'expires_at')::timestamptz > now()
                 ORDER BY (p->>'expires_at')::timestamptz DESC LIMIT $5) kept)
         WHERE id = $1 AND workspace_id = $2 AND deleted_at IS NULL
        RETURNING id, secret, now() + $4::interval AS previous_secret_expires_at
        """,
        uuid_param(request), workspace_of(request).id, new_secret(), SECRET_OVERLAP,
        MAX_PREVIOUS_SECRETS)
    if row is None:
        raise handlers.NotFound()
    return ok(WebhookSecret.model_validate(dict(row)))


@routes.delete("/v1/webhooks/{id}")
@operation(summary="Remove an endpoint; its pending deliveries stop",
           responses={204: None, 404: None}, tags=("webhooks",))
async def delete_webhook(request: web.Request) -> web.Response:
    row = await request.app[POOL].fetchrow(
        "UPDATE webhook_endpoints SET deleted_at = now() WHERE id = $1 AND workspace_id = $2"
        " AND deleted_at IS NULL RETURNING id", uuid_param(request), workspace_of(request).id)
    if row is None:
        raise handlers.NotFound()
    return web.Response(status=204)


@routes.get("/v1/webhooks/{id}/deliveries")
@operation(summary="The endpoint's deliveries, newest first, with every attempt",
           responses={200: WebhookDeliveryList, 404: None}, tags=("webhooks",))
async def list_deliveries(request: web.Request) -> web.Response:
    pool = request.app[POOL]
    endpoint = await pool.fetchval(
        "SELECT id FROM webhook_endpoints WHERE id = $1 AND workspace_id = $2",
        uuid_param(request), workspace_of(request).id)
    if endpoint is None:
        raise handlers.NotFound()
    deliveries = await pool.fetch(
        "SELECT * FROM webhook_deliveries WHERE endpoint_id = $1 ORDER BY created_at DESC"
        " LIMIT 100", endpoint)
    attempts = await pool.fetch(
        "SELECT * FROM webhook_attempts WHERE delivery_id = any($1::uuid[]) ORDER BY id",
        [d["id"] for d in deliveries])
    by_delivery: dict[object, list[WebhookAttempt]] = {}
    for a in attempts:
        by_delivery.setdefault(a["delivery_id"], []).append(WebhookAttempt.model_validate(dict(a)))
    return ok(WebhookDeliveryList(items=[
        WebhookDelivery.model_validate({
            **dict(d), "next_attempt_at": d["next_attempt_at"] if d["state"] == "pending" else None,
            "attempt_log": by_delivery.get(d["id"], [])})
        for d in deliveries]))
