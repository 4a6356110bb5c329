"""What the API answers when a handler fails in a way it does not handle itself."""

from __future__ import annotations

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from services.api.keys import SETTINGS
from services.api.routes import errors_and_auth
from services.api.settings import ApiSettings
from services.api.tracing import add_request_id


def _app(error: Exception) -> web.Application:
    async def fail(request: web.Request) -> web.Response:
        raise error

    async def fine(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application(middlewares=[errors_and_auth])
    app.on_response_prepare.append(add_request_id)
    app[SETTINGS] = ApiSettings()
    app.router.add_post("/boom", fail)
    app.router.add_get("/fine", fine)
    return app


async def _answer(error: Exception) -> tuple[int, str, dict[str, object], str | None]:
    async with TestClient(TestServer(_app(error))) as client:
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


async def test_every_answer_has_a_request_id_which_a_500_and_its_log_name(
        caplog: pytest.LogCaptureFixture) -> None:
    """A client's plain id is kept; any other (spaces, too long, a line break) is replaced."""
    async with TestClient(TestServer(_app(RuntimeError("bug")))) as client:
        resp = await client.post("/boom")
        rid = resp.headers["X-Request-ID"]
        body = await resp.json()
        assert (resp.status, body["request_id"]) == (500, rid)
        assert rid in body["detail"]
        assert any(rid in r.getMessage() and r.exc_info for r in caplog.records)
        for given, kept in (("abc-123.x:y_Z", True), ("a b", False), ("x" * 129, False),
                            ("é", False), ("", False)):
            resp = await client.get("/fine", headers={"X-Request-ID": given})
            assert resp.status == 200
            assert (resp.headers["X-Request-ID"] == given) is kept, given
        ids = set()
        for _ in range(3):
            resp = await client.get("/fine")
            ids.add(resp.headers["X-Request-ID"])
        assert len(ids) == 3
        resp = await client.get("/nowhere")
        assert resp.status == 404
        assert len(resp.headers["X-Request-ID"]) == 32
