"""Signed webhook deliveries through the real services."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from devstack.stack import Stack
from tests.e2e.conftest import Api
from tests.e2e.test_pipeline import wait_terminal

pytestmark = pytest.mark.e2e


class Receiver:
    """Answers 500 to the first `failures` requests, then 200; keeps every request."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((dict(request.headers), await request.read()))
        return web.Response(status=500 if len(self.requests) <= self.failures else 200)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver(failures=3)
    app = web.Application()
    app.router.add_post("/hooks", hook.handle)
    server = TestServer(app)
    await server.start_server()
    hook.url = str(server.make_url("/hooks"))
    yield hook
    await server.close()


async def test_failing_receiver_gets_the_same_signed_event_until_it_accepts(
    api: Api, receiver: Receiver
) -> None:
    key = await api.workspace(sandbox=True)
    status, endpoint = await api.call("POST", "/v1/webhooks", key, {
        "url": receiver.url, "event_types": ["video.approved"]})
    assert status == 201, endpoint
    assert endpoint["secret"].startswith("whsec_")
    character = await api.character(key, "autopilot")
    created = await api.video(key, character, duration_seconds=5)
    await wait_terminal(api, key, created["id"])
    for _ in range(600):  # up to 30 s: retries are spaced by backoff with jitter
        if len(receiver.requests) >= 4:
            break
        await asyncio.sleep(0.05)
    assert len(receiver.requests) == 4
    verifier = Webhook(endpoint["secret"])
    ids = set()
    for headers, body in receiver.requests:
        event: Any = verifier.verify(body, headers)  # raises on a bad signature
        ids.add(headers["webhook-id"])
        assert event["event_type"] == "video.approved"
        assert event["video"]["id"] == created["id"]
        assert headers["webhook-id"] == event["event_id"]
    assert len(ids) == 1  # the same id on every retry
    with pytest.raises(WebhookVerificationError):  # another secret does not verify
        Webhook("whsec_" + "A" * 44).verify(receiver.requests[0][1], receiver.requests[0][0])
    _, log = await api.call("GET", f"/v1/webhooks/{endpoint['id']}/deliveries", key)
    [delivery] = log["items"]
    assert (delivery["state"], delivery["attempts"]) == ("succeeded", 4)
    assert [a["status_code"] for a in delivery["attempt_log"]] == [500, 500, 500, 200]


async def test_endpoints_filter_list_and_delete(api: Api, receiver: Receiver) -> None:
    key = await api.workspace(sandbox=True)
    _, only_failed = await api.call("POST", "/v1/webhooks", key, {
        "url": receiver.url, "event_types": ["video.failed"]})
    status, listed = await api.call("GET", "/v1/webhooks", key)
    assert [w["id"] for w in listed["items"]] == [only_failed["id"]]
    assert "secret" not in listed["items"][0]
    character = await api.character(key, "autopilot")
    created = await api.video(key, character, duration_seconds=5)
    await wait_terminal(api, key, created["id"])
    await asyncio.sleep(1)
    assert receiver.requests == []  # video.approved is not what it asked for
    status, problem = await api.call("POST", "/v1/webhooks", key, {"url": "ftp://x"})
    assert (status, problem["errors"][0]["field"]) == (422, "url")
    status, _ = await api.call("DELETE", f"/v1/webhooks/{only_failed['id']}", key)
    assert status == 204
    _, listed = await api.call("GET", "/v1/webhooks", key)
    assert listed["items"] == []
    status, _ = await api.call("DELETE", f"/v1/webhooks/{only_failed['id']}", key)
    assert status == 404


async def test_a_replaced_secret_signs_beside_the_new_one_until_it_expires(
        api: Api, stack: Stack) -> None:
    """The receiver switches its verification over at its own pace: for 24 hours after the
    secret is replaced, each delivery verifies with the old secret and with the new, and
    with every other secret replaced within its own 24 hours (the newest 8)."""
    hook = Receiver(failures=0)
    app = web.Application()
    app.router.add_post("/hooks", hook.handle)
    server = TestServer(app)
    await server.start_server()
    try:
        key = await api.workspace(sandbox=True)
        _, endpoint = await api.call("POST", "/v1/webhooks", key, {
            "url": str(server.make_url("/hooks")), "event_types": ["video.approved"]})
        status, replaced = await api.call("POST", f"/v1/webhooks/{endpoint['id']}/secret", key)
        assert status == 200, replaced
        assert replaced["secret"].startswith("whsec_")
        assert replaced["secret"] != endpoint["secret"]
        character = await api.character(key, "autopilot")

        async def delivered() -> tuple[dict[str, str], bytes]:
            count = len(hook.requests)
            created = await api.video(key, character, duration_seconds=5)
            await wait_terminal(api, key, created["id"])
            for _ in range(200):
                if len(hook.requests) > count:
                    break
                await asyncio.sleep(0.05)
            return hook.requests[count]

        headers, body = await delivered()
        assert len(headers["webhook-signature"].split(" ")) == 2
        for secret in (endpoint["secret"], replaced["secret"]):
            Webhook(secret).verify(body, headers)  # raises on a bad signature
        # Replaced again within the 24 hours: the first replaced secret still signs too
        # (a receiver may not have switched yet).
        status, again = await api.call("POST", f"/v1/webhooks/{endpoint['id']}/secret", key)
        assert status == 200, again
        headers, body = await delivered()
        assert len(headers["webhook-signature"].split(" ")) == 3
        for secret in (endpoint["secret"], replaced["secret"], again["secret"]):
            Webhook(secret).verify(body, headers)
        conn = await asyncpg.connect(stack.database_url)
        try:  # the 24 hours of the first replacement are over
            await conn.execute(
                "UPDATE webhook_endpoints SET previous_secrets = (SELECT jsonb_agg(CASE"
                "  WHEN p->>'secret' = $2 THEN jsonb_set(p, '{expires_at}',"
                "                                         to_jsonb(now() - interval '1 s'))"
                "  ELSE p END) FROM jsonb_array_elements(previous_secrets) x(p))"
                " WHERE id = $1", UUID(endpoint["id"]), endpoint["secret"])
        finally:
            await conn.close()
        headers, body = await delivered()
        assert len(headers["webhook-signature"].split(" ")) == 2
        for secret in (replaced["secret"], again["secret"]):
            Webhook(secret).verify(body, headers)
        with pytest.raises(WebhookVerificationError):
            Webhook(endpoint["secret"]).verify(body, headers)
        for _ in range(10):  # only the newest replaced secrets sign
            status, _ = await api.call("POST", f"/v1/webhooks/{endpoint['id']}/secret", key)
            assert status == 200
        conn = await asyncpg.connect(stack.database_url)
        try:
            assert await conn.fetchval(
                "SELECT jsonb_array_length(previous_secrets) FROM webhook_endpoints"
                " WHERE id = $1", UUID(endpoint["id"])) == 8
        finally:
            await conn.close()
        other = await api.workspace(sandbox=True)
        for who, path in ((other, endpoint["id"]), (key, str(uuid4()))):
            status, _ = await api.call("POST", f"/v1/webhooks/{path}/secret", who)
            assert status == 404
    finally:
        await server.close()
