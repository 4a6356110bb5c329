"""The webhook consumer's write: one delivery per matching endpoint and event, in one
statement, and nothing more when Kafka delivers an event again."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any, cast
from uuid import UUID, uuid4

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from devstack.proc import free_port
from services.api import handlers
from services.finalizer.webhooks import (
    WebhookConfig,
    WebhookSender,
    http_session,
    record_deliveries,
)
from shared.events import CompletedType, VideoCompleted, VideoResource, utcnow
from shared.runtime import stop_task
from shared.webhooks import new_secret
from tests.integration.conftest import Statements

pytestmark = pytest.mark.integration
CFG = WebhookConfig()


@pytest.fixture
async def endpoints(pool: asyncpg.Pool) -> AsyncIterator[list[UUID]]:
    """The endpoints a test makes; removed with their deliveries afterwards, so that no
    finalizer sharing the database (the end-to-end tests') tries to deliver them."""
    made: list[UUID] = []
    yield made
    await pool.execute("DELETE FROM webhook_attempts WHERE delivery_id IN (SELECT id FROM"
                       " webhook_deliveries WHERE endpoint_id = any($1))", made)
    await pool.execute("DELETE FROM webhook_deliveries WHERE endpoint_id = any($1)", made)
    await pool.execute("DELETE FROM webhook_endpoints WHERE id = any($1)", made)


async def _workspace(pool: asyncpg.Pool) -> UUID:
    ws = await handlers.create_workspace(pool, name="hooks", credits=0, sandbox=True)
    return UUID(ws["id"])


async def _endpoint(pool: asyncpg.Pool, made: list[UUID], workspace_id: UUID, *,
                    types: list[str], created_at: datetime, deleted: bool = False,
                    url: str | None = None) -> UUID:
    endpoint_id = uuid4()
    made.append(endpoint_id)
    await pool.execute(
        "INSERT INTO webhook_endpoints (id, workspace_id, url, secret, event_types,"
        " created_at, deleted_at) VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $7 THEN now() END)",
        endpoint_id, workspace_id, url or f"http://127.0.0.1:{free_port()}/hook", new_secret(),
        types, created_at, deleted)
    return endpoint_id


async def _first_attempt(pool: asyncpg.Pool, endpoint: UUID, cfg: WebhookConfig
                         ) -> str | None:
    """Run a sender (with the HTTP client the finalizer builds for `cfg`) until it has
    made its first attempt of `endpoint`'s delivery; that attempt's error (None if it
    succeeded). The sender must still be running then."""
    async with http_session(cfg) as http:
        sender = asyncio.create_task(WebhookSender(pool, http, cfg).run())
        try:
            attempt = None
            for _ in range(200):
                attempt = await pool.fetchrow(
                    "SELECT a.error FROM webhook_attempts a JOIN webhook_deliveries d"
                    " ON d.id = a.delivery_id WHERE d.endpoint_id = $1", endpoint)
                if attempt is not None:
                    break
                await asyncio.sleep(0.05)
            assert attempt is not None
            assert not sender.done()
            return cast(str | None, attempt["error"])
        finally:
            await stop_task(sender)


def _event(workspace_id: UUID, event_type: CompletedType, occurred_at: datetime
           ) -> tuple[VideoCompleted, bytes]:
    # Only the envelope's fields decide the deliveries, and the payload is stored as given:
    # the event is built without its video resource.
    event = VideoCompleted.model_construct(
        event_id=uuid4(), event_type=event_type, workspace_id=workspace_id,
        occurred_at=occurred_at, correlation_id="t", video=cast(VideoResource, None))
    return event, f'{{"event_id": "{event.event_id}"}}'.encode()


async def _deliveries(pool: asyncpg.Pool, *events: tuple[VideoCompleted, bytes]
                      ) -> set[tuple[UUID, UUID]]:
    rows = await pool.fetch(
        "SELECT endpoint_id, event_id FROM webhook_deliveries WHERE event_id = any($1)",
        [event.event_id for event, _ in events])
    return {(row["endpoint_id"], row["event_id"]) for row in rows}


async def test_one_delivery_per_matching_endpoint_in_one_statement(
    pool: asyncpg.Pool, endpoints: list[UUID]
) -> None:
    ws, other = await _workspace(pool), await _workspace(pool)
    before = utcnow() - timedelta(minutes=1)
    every = await _endpoint(pool, endpoints, ws, types=[], created_at=before)
    approved_only = await _endpoint(pool, endpoints, ws, types=["video.approved"],
                                    created_at=before)
    await _endpoint(pool, endpoints, ws, types=["video.failed"], created_at=before, deleted=True)
    await _endpoint(pool, endpoints, other, types=[], created_at=before)  # another workspace's
    approved = _event(ws, "video.approved", utcnow())
    failed = _event(ws, "video.failed", utcnow())
    async with pool.acquire() as conn:  # as the consumer runs it: no BEGIN, no COMMIT
        # asyncpg introspects array types once per connection: not the use case's cost
        await record_deliveries(conn, [_event(other, "video.ready", before)], CFG)
        with Statements(conn) as statements:
            assert await record_deliveries(conn, [approved, failed], CFG) == 3
            assert len(await statements.sent()) == 1
    assert await _deliveries(pool, approved, failed) == {
        (every, approved[0].event_id), (approved_only, approved[0].event_id),
        (every, failed[0].event_id)}
    payload = await pool.fetchval(
        "SELECT payload FROM webhook_deliveries WHERE event_id = $1 AND endpoint_id = $2",
        approved[0].event_id, every)
    assert bytes(payload) == approved[1]


async def test_a_redelivered_event_adds_nothing(pool: asyncpg.Pool, endpoints: list[UUID]
                                                ) -> None:
    ws = await _workspace(pool)
    endpoint = await _endpoint(pool, endpoints, ws, types=[],
                               created_at=utcnow() - timedelta(minutes=1))
    event = _event(ws, "video.ready", utcnow())
    async with pool.acquire() as conn:
        assert await record_deliveries(conn, [event, event], CFG) == 1  # twice in a batch
        assert await record_deliveries(conn, [event], CFG) == 0  # and again later
    assert await _deliveries(pool, event) == {(endpoint, event[0].event_id)}


class _CountingSender(WebhookSender):
    woken = 0

    def wake(self) -> None:
        self.woken += 1


async def test_the_sender_is_woken_only_for_recorded_deliveries(
    pool: asyncpg.Pool, endpoints: list[UUID]
) -> None:
    without, ws = await _workspace(pool), await _workspace(pool)
    await _endpoint(pool, endpoints, ws, types=["video.approved"],
                    created_at=utcnow() - timedelta(minutes=1))
    async with aiohttp.ClientSession() as http, pool.acquire() as conn:
        sender = _CountingSender(pool, http, CFG)
        # No endpoint of the workspace, none that wants the type: nothing to claim.
        assert await sender.record(conn, [_event(without, "video.approved", utcnow()),
                                          _event(ws, "video.failed", utcnow())]) == 0
        assert sender.woken == 0
        assert await sender.record(conn, [_event(ws, "video.approved", utcnow())]) == 1
        assert sender.woken == 1


async def test_an_endpoint_gets_only_events_that_occurred_after_it_existed(
    pool: asyncpg.Pool, endpoints: list[UUID]
) -> None:
    # Kafka may deliver an old event again after a new endpoint was registered.
    ws = await _workspace(pool)
    old = _event(ws, "video.ready", utcnow() - timedelta(minutes=5))
    await _endpoint(pool, endpoints, ws, types=[], created_at=utcnow() - timedelta(minutes=1))
    async with pool.acquire() as conn:
        assert await record_deliveries(conn, [old], CFG) == 0
    assert await _deliveries(pool, old) == set()


async def test_a_delivery_that_cannot_be_signed_fails_alone(
    pool: asyncpg.Pool, endpoints: list[UUID]
) -> None:
    """A row the sender cannot use (here a secret that does not decode) is that delivery's
    failed attempt; the sender goes on, rather than ending the process at every restart."""
    ws = await _workspace(pool)
    endpoint = await _endpoint(pool, endpoints, ws, types=[],
                               created_at=utcnow() - timedelta(minutes=1))
    await pool.execute("UPDATE webhook_endpoints SET secret = 'whsec_x' WHERE id = $1", endpoint)
    event = _event(ws, "video.ready", utcnow())
    async with pool.acquire() as conn:
        assert await record_deliveries(conn, [event], CFG) == 1
    cfg = WebhookConfig(allow_private=True, poll_interval=0.05, retry_base_seconds=60)
    error = await _first_attempt(pool, endpoint, cfg)
    assert error is not None
    assert error.startswith("internal error"), error
    state = await pool.fetchval(
        "SELECT state FROM webhook_deliveries WHERE endpoint_id = $1", endpoint)
    assert state == "pending"  # retried later, like any failed attempt


async def test_a_host_that_resolves_to_loopback_when_connecting_is_refused(
    pool: asyncpg.Pool, endpoints: list[UUID], monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the host resolves to a public address when the sender checks its URL,
    and to 127.0.0.1 (where a receiver listens) when the client connects. The client checks
    the addresses it connects to, so nothing is posted to the receiver."""
    received: list[bytes] = []

    async def receive(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", receive)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    answers = iter(["93.184.216.34"])  # the first answer public (example.com's), then not
    real_getaddrinfo = socket.getaddrinfo

    def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "rebind.invalid":
            return real_getaddrinfo(host, port, *args, **kwargs)
        address = next(answers, "127.0.0.1")
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "",
                 (address, int(port or 0)))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    try:
        ws = await _workspace(pool)
        endpoint = await _endpoint(pool, endpoints, ws, types=[],
                                   created_at=utcnow() - timedelta(minutes=1),
                                   url=f"http://rebind.invalid:{server.port}/hook")
        event = _event(ws, "video.ready", utcnow())
        async with pool.acquire() as conn:
            assert await record_deliveries(conn, [event], CFG) == 1
        cfg = WebhookConfig(allow_private=False, poll_interval=0.05, retry_base_seconds=60)
        error = await _first_attempt(pool, endpoint, cfg)
    finally:
        await server.close()
    assert error == "refused: the host resolves to a non-public address (127.0.0.1)", error
    assert received == []
