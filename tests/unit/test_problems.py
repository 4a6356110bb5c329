"""What the API answers when a handler fails in a way it does not handle itself."""

from __future__ import annotations

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.api.keys import SETTINGS
from services.api.routes import errors_and_auth
from services.api.settings import ApiSettings


async def _answer(error: Exception) -> tuple[int, str, dict[str, object], str | None]:
    async def fail(request: web.Request) -> web.Response:
        raise error

    app = web.Application(middlewares=[errors_and_auth])
    app[SETTINGS] = ApiSettings()
    app.router.add_post("/boom", fail)
    async with TestClient(TestServer(app)) as client:
        resp = await client.post("/boom")
        return (resp.status, resp.headers["Content-Type"], await resp.json(),
                resp.headers.get("Retry-After"))


@pytest.mark.parametrize("error", [asyncpg.exceptions.DeadlockDetectedError("deadlock"),
                                   asyncpg.exceptions.SerializationError("serialization")])
async def test_a_write_undone_by_a_conflict_answers_503_with_retry_after(
        error: Exception) -> None:
    status, content_type, body, retry_after = await _answer(error)
    assert (status, retry_after) == (503, "1")
    assert content_type.startswith("application/problem+json")
    assert "retry" in str(body["detail"])


async def test_a_bug_answers_500() -> None:
    status, content_type, body, retry_after = await _answer(RuntimeError("bug"))
    assert (status, retry_after) == (500, None)
    assert content_type.startswith("application/problem+json")
    assert body["title"] == "Internal server error"
