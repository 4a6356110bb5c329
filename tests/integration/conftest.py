from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer
from pydantic import SecretStr

from services.api.main import build_app
from services.api.settings import ApiSettings
from shared.kafka import make_broker
from tests.infra import Infra

ADMIN = "test-admin-token"


@asynccontextmanager
async def rolled_back(pool: asyncpg.Pool) -> AsyncIterator[Any]:
    """A connection in a transaction that is rolled back at the end, whatever happens: rows
    made for one test (thousands of queued jobs) that no other test or worker may see."""
    async with pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            yield conn
        finally:
            await transaction.rollback()


@pytest.fixture(scope="package", autouse=True)
def cancel_leftover_jobs(infra: Infra) -> Iterator[None]:
    """These tests run no generator, and leave queued jobs whose events later reach the
    end-to-end tests' stacks (same database and broker): cancel them once these tests are
    done, so that those stacks do not spend their two render slots on a hundred of them."""
    yield

    async def cancel() -> None:
        conn = await asyncpg.connect(infra.database_url)
        try:
            await conn.execute("UPDATE jobs SET cancel_requested = true WHERE state = 'queued'")
        finally:
            await conn.close()

    asyncio.run(cancel())


class Statements:
    """The statements a connection sends while in this context (asyncpg's query logger):
    what the tests that count a use case's round trips read."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._sent: list[str] = []

    def _log(self, record: Any) -> None:
        self._sent.append(record.query)

    def __enter__(self) -> Statements:
        self._conn.add_query_logger(self._log)
        return self

    def __exit__(self, *_: object) -> None:
        self._conn.remove_query_logger(self._log)

    async def sent(self) -> list[str]:
        """The statements sent so far (asyncpg calls its loggers soon after each query)."""
        await asyncio.sleep(0)
        return list(self._sent)

    async def restart(self) -> None:
        """Count from here."""
        await asyncio.sleep(0)
        self._sent.clear()


class Client:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def call(self, method: str, path: str, token: str | None, body: Any = None, *,
                   headers: dict[str, str] | None = None, data: Any = None,
                   ) -> tuple[int, Any, dict[str, str]]:
        hdrs = dict(headers or {})
        if token is not None:
            hdrs["Authorization"] = f"Bearer {token}"
        kwargs: dict[str, Any] = {"json": body} if data is None else {"data": data}
        async with self.session.request(method, self.base + path, headers=hdrs,
                                        **kwargs) as resp:
            text = await resp.text()
            payload = None
            if text and resp.content_type.endswith("json"):
                import json

                payload = json.loads(text)
            return resp.status, payload, dict(resp.headers)

    async def workspace(self, credits: int = 1000, sandbox: bool = False) -> dict[str, Any]:
        status, ws, _ = await self.call("POST", "/v1/admin/workspaces", ADMIN,
                                        {"name": "t", "credits": credits, "sandbox": sandbox})
        assert status == 201, ws
        return dict(ws)

    async def character(self, key: str, review_mode: str = "manual") -> str:
        status, ch, _ = await self.call("POST", "/v1/characters", key,
                                        {"name": "Mila", "review_mode": review_mode})
        assert status == 201, ch
        return str(ch["id"])


def api_settings(infra: Infra, **overrides: Any) -> ApiSettings:
    return ApiSettings(database_url=infra.database_url,
                       kafka_bootstrap_servers=infra.bootstrap_servers,
                       admin_token=SecretStr(ADMIN), **overrides)


@asynccontextmanager
async def serving_api(infra: Infra, pool: asyncpg.Pool, client_id: str,
                      **overrides: Any) -> AsyncIterator[Client]:
    """The api's real aiohttp app in this process with these settings (no relay)."""
    broker = make_broker(infra.bootstrap_servers, client_id)
    server = TestServer(build_app(api_settings(infra, **overrides), pool, broker))
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            yield Client(session, str(server.make_url("")).rstrip("/"))
    finally:
        await server.close()


@pytest.fixture
async def client(infra: Infra, pool: asyncpg.Pool) -> AsyncIterator[Client]:
    """The api on the real database, without rate limits."""
    async with serving_api(infra, pool, "test-api", rate_limit_per_second=0) as api:
        yield api


async def eventually(check: Any, timeout: float = 20) -> Any:
    """The first true result of `check()`, polled every 0.1 s for `timeout` seconds."""
    for _ in range(int(timeout / 0.1)):
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached")
