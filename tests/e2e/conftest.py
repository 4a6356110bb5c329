from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from devstack.proc import free_port
from devstack.stack import Stack
from tests.infra import Infra


@pytest.fixture(scope="module")
def stack(infra: Infra) -> Iterator[Stack]:
    """The three services as real processes, on the session's Kafka and PostgreSQL."""
    run_dir = Path(tempfile.mkdtemp(prefix="influgen-e2e-"))
    s = Stack(run_dir, api_port=free_port(), database_url=infra.database_url,
              bootstrap_servers=infra.bootstrap_servers,
              # The rate limit has its own test; here it would only starve the fuzzer.
              extra_env={"INFLUGEN_RATE_LIMIT_PER_SECOND": "0",
                         # Test receivers listen on loopback; retries quickly.
                         "INFLUGEN_WEBHOOK_ALLOW_PRIVATE": "true",
                         "INFLUGEN_WEBHOOK_RETRY_BASE_SECONDS": "0.1",
                         "INFLUGEN_WEBHOOK_RETRY_CAP_SECONDS": "0.5"})
    try:
        s.up()
        yield s
    finally:
        for name in ("api", "generator", "finalizer"):
            s.stop_service(name)
        logs = Path("tests/artifacts/logs")
        logs.mkdir(parents=True, exist_ok=True)
        for log in s.logs.glob("*.log"):
            shutil.copy(log, logs / log.name)
        shutil.rmtree(run_dir, ignore_errors=True)


class Api:
    """A thin test client; the SDK proper is `influgen.client`."""

    def __init__(self, session: aiohttp.ClientSession, base: str, admin_token: str) -> None:
        self.session = session
        self.base = base
        self.admin_token = admin_token

    async def call(self, method: str, path: str, token: str, body: Any = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any]:
        hdrs = {"Authorization": f"Bearer {token}", **(headers or {})}
        async with self.session.request(method, self.base + path, json=body,
                                        headers=hdrs) as resp:
            data = await resp.json(content_type=None) if resp.content_length != 0 else None
            return resp.status, data

    async def workspace(self, credits: int = 1000, sandbox: bool = False) -> str:
        status, ws = await self.call("POST", "/v1/admin/workspaces", self.admin_token,
                                     {"name": "e2e", "credits": credits, "sandbox": sandbox})
        assert status == 201, ws
        key: str = ws["api_key"]
        return key

    async def video(self, key: str, character: str, **fields: Any) -> dict[str, Any]:
        """POST /v1/videos for `character` with the e2e scene; asserts the 202."""
        status, created = await self.call("POST", "/v1/videos", key, {
            "character_id": character, "scene_description": SCENE, **fields})
        assert status == 202, created
        return dict(created)

    async def character(self, key: str, review_mode: str) -> str:
        status, ch = await self.call("POST", "/v1/characters", key,
                                     {"name": f"{review_mode} char", "review_mode": review_mode})
        assert status == 201, ch
        cid: str = ch["id"]
        return cid


SCENE = ("Walking through a marble hotel lobby at golden hour, subtle camera push-in, "
         "confident luxury travel energy")


@pytest.fixture
async def api(stack: Stack) -> AsyncIterator[Api]:
    async with aiohttp.ClientSession() as session:
        yield Api(session, stack.api_url, stack.admin_token)
