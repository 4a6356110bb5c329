"""An async client for the Influgen video generation API (aiohttp), with typed results.

    async with Client("http://127.0.0.1:8080", api_key) as client:
        video = await client.create_video(character_id=..., scene_description="...")
        video = await client.wait(video.id)

Errors come back as `ApiError` carrying the RFC 9457 problem (status, title, detail and the
per-field `errors` of a validation failure)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, TypeVar
from uuid import UUID

import aiohttp
from pydantic import BaseModel

from services.api.schemas import (
    Character,
    CharacterList,
    Credits,
    DryRun,
    ModelList,
    VideoList,
    Webhook,
    WebhookCreated,
    WebhookDeliveryList,
    WebhookList,
    WebhookSecret,
    WorkspaceCreated,
    WorkspaceInfo,
    WorkspaceList,
)
from shared.events import FieldError, VideoResource

M = TypeVar("M", bound=BaseModel)


class ApiError(Exception):
    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.errors = [FieldError.model_validate(e) for e in problem.get("errors") or []]
        detail = problem.get("detail") or ""
        fields = "; ".join(f"{e.field}: {e.message}" for e in self.errors)
        super().__init__(f"{status} {problem.get('title', 'error')}"
                         + (f": {detail}" if detail else "") + (f" ({fields})" if fields else ""))


class Client:
    def __init__(self, base_url: str, api_key: str | None = None, *,
                 admin_token: str | None = None, timeout: float = 30.0) -> None:
        self._base = base_url.rstrip("/")
        self._key = api_key
        self._admin = admin_token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Client:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def _call(self, method: str, path: str, *, body: Any = None, admin: bool = False,
                    params: dict[str, str] | None = None,
                    headers: dict[str, str] | None = None) -> Any:
        token = self._admin if admin else self._key
        hdrs = {**({"Authorization": f"Bearer {token}"} if token else {}), **(headers or {})}
        async with self._http().request(method, self._base + path, json=body, params=params,
                                        headers=hdrs) as resp:
            text = await resp.text()
            data = json.loads(text) if text else None
            if resp.status >= 400:
                raise ApiError(resp.status, data if isinstance(data, dict) else {"detail": text})
            return data

    async def _model(self, model: type[M], method: str, path: str, **kwargs: Any) -> M:
        return model.model_validate(await self._call(method, path, **kwargs))

    # --- admin ----------------------------------------------------------------------

    async def create_workspace(self, name: str, credits: int = 0, sandbox: bool = False, *,
                               idempotency_key: str | None = None) -> WorkspaceCreated:
        """With an `idempotency_key`, sending it again makes no second workspace: ApiError
        409 names the first (`workspace_id`), whose key `replace_key` can renew."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return await self._model(WorkspaceCreated, "POST", "/v1/admin/workspaces", admin=True,
                                 body={"name": name, "credits": credits, "sandbox": sandbox},
                                 headers=headers)

    async def workspaces(self, **filters: str | int) -> WorkspaceList:
        """A page of workspaces, newest first (`name`, `limit`, `cursor`)."""
        return await self._model(WorkspaceList, "GET", "/v1/admin/workspaces", admin=True,
                                 params={k: str(v) for k, v in filters.items()})

    async def workspace(self, workspace_id: UUID | str) -> WorkspaceInfo:
        return await self._model(WorkspaceInfo, "GET", f"/v1/admin/workspaces/{workspace_id}",
                                 admin=True)

    async def replace_key(self, workspace_id: UUID | str) -> WorkspaceCreated:
        """A new API key for the workspace (shown once); the old one stops working."""
        return await self._model(WorkspaceCreated, "POST",
                                 f"/v1/admin/workspaces/{workspace_id}/key", admin=True)

    async def grant_credits(self, workspace_id: UUID | str, amount: int, reason: str, *,
                            idempotency_key: str | None = None) -> Credits:
        """With an `idempotency_key`, sending the same grant again grants nothing more."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return await self._model(Credits, "POST", f"/v1/admin/workspaces/{workspace_id}/credits",
                                 admin=True, body={"amount": amount, "reason": reason},
                                 headers=headers)

    # --- characters, models, credits -----------------------------------------------

    async def create_character(self, name: str, review_mode: str = "manual",
                               reference_image_url: str | None = None) -> Character:
        body = {"name": name, "review_mode": review_mode}
        if reference_image_url is not None:
            body["reference_image_url"] = reference_image_url
        return await self._model(Character, "POST", "/v1/characters", body=body)

    async def characters(self) -> list[Character]:
        return (await self._model(CharacterList, "GET", "/v1/characters")).items

    async def update_character(self, character_id: UUID | str, **changes: Any) -> Character:
        return await self._model(Character, "PATCH", f"/v1/characters/{character_id}",
                                 body=changes)

    async def models(self) -> ModelList:
        return await self._model(ModelList, "GET", "/v1/models")

    async def credits(self) -> Credits:
        return await self._model(Credits, "GET", "/v1/credits")

    # --- videos -----------------------------------------------------------------------

    async def create_video(self, *, idempotency_key: str | None = None,
                           **fields: Any) -> VideoResource:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        return await self._model(VideoResource, "POST", "/v1/videos", body=_json(fields),
                                 headers=headers)

    async def dry_run(self, **fields: Any) -> DryRun:
        return await self._model(DryRun, "POST", "/v1/videos", body=_json(fields),
                                 params={"dry_run": "true"})

    async def video(self, video_id: UUID | str) -> VideoResource:
        return await self._model(VideoResource, "GET", f"/v1/videos/{video_id}")

    async def videos(self, **filters: str | int) -> VideoList:
        return await self._model(VideoList, "GET", "/v1/videos",
                                 params={k: str(v) for k, v in filters.items()})

    async def cancel(self, video_id: UUID | str) -> VideoResource:
        return await self._model(VideoResource, "POST", f"/v1/videos/{video_id}/cancel")

    async def review(self, video_id: UUID | str, decision: str,
                     note: str | None = None) -> VideoResource:
        body = {"decision": decision, **({"note": note} if note else {})}
        return await self._model(VideoResource, "POST", f"/v1/videos/{video_id}/review",
                                 body=body)

    async def events(self, video_id: UUID | str,
                     last_event_id: str | None = None) -> AsyncIterator[dict[str, Any]]:
        """The video's status changes (server-sent events) until generation is over."""
        headers = {"Authorization": f"Bearer {self._key}"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
        async with self._http().get(f"{self._base}/v1/videos/{video_id}/events",
                                    headers=headers, timeout=timeout) as resp:
            if resp.status >= 400:
                raise ApiError(resp.status, await resp.json(content_type=None))
            event: dict[str, Any] = {}
            async for raw in resp.content:
                line = raw.decode().rstrip("\r\n")
                if not line:
                    if "data" in event:
                        yield event
                    event = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(":")
                    value = value.removeprefix(" ")
                    event[name] = json.loads(value) if name == "data" else value

    async def wait(self, video_id: UUID | str) -> VideoResource:
        """Follow the live stream until generation is over; the final resource."""
        async for _ in self.events(video_id):
            pass
        return await self.video(video_id)

    # --- webhooks ---------------------------------------------------------------------

    async def create_webhook(self, url: str, event_types: list[str] | None = None
                             ) -> WebhookCreated:
        return await self._model(WebhookCreated, "POST", "/v1/webhooks",
                                 body={"url": url, "event_types": event_types or []})

    async def webhooks(self) -> list[Webhook]:
        return (await self._model(WebhookList, "GET", "/v1/webhooks")).items

    async def replace_webhook_secret(self, webhook_id: UUID | str) -> WebhookSecret:
        """A new secret (shown once); the previous one signs deliveries too for 24 hours."""
        return await self._model(WebhookSecret, "POST", f"/v1/webhooks/{webhook_id}/secret")

    async def delete_webhook(self, webhook_id: UUID | str) -> None:
        await self._call("DELETE", f"/v1/webhooks/{webhook_id}")

    async def deliveries(self, webhook_id: UUID | str) -> WebhookDeliveryList:
        return await self._model(WebhookDeliveryList, "GET",
                                 f"/v1/webhooks/{webhook_id}/deliveries")


def _json(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: str(v) if isinstance(v, UUID) else v for k, v in fields.items()}
