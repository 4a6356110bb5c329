from __future__ import annotations

import asyncio
import socket

import asyncpg
import pytest

from devstack.kafka import wait_ready
from shared.db import migrate, migration_files
from tests.infra import Infra

pytestmark = pytest.mark.integration


def test_readiness_needs_a_metadata_answer_not_an_open_port(infra: Infra) -> None:
    wait_ready(infra.bootstrap_servers, timeout=10)  # the real broker answers
    with socket.socket() as listener:  # a port that accepts connections but is no broker
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        with pytest.raises(TimeoutError):
            wait_ready(f"127.0.0.1:{port}", timeout=3)


async def test_migrations_apply_twice_and_concurrently(infra: Infra, pool: asyncpg.Pool) -> None:
    assert await migrate(infra.database_url) == []  # the session fixture applied them
    results = await asyncio.gather(*(migrate(infra.database_url) for _ in range(3)))
    assert results == [[], [], []]
    versions = [r["version"] for r in await pool.fetch(
        "SELECT version FROM schema_migrations ORDER BY version")]
    assert versions == [v for v, _, _ in migration_files()]
    tables = {r["tablename"] for r in await pool.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"workspaces", "videos", "jobs", "outbox", "inbox", "settlements"} <= tables


async def test_migrations_on_a_fresh_database(infra: Infra, unique: str) -> None:
    admin = await asyncpg.connect(infra.database_url)
    name = f"fresh_{unique}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        url = infra.database_url.rsplit("/", 1)[0] + "/" + name
        assert await migrate(url) == [n for _, n, _ in migration_files()]
        assert await migrate(url) == []
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
