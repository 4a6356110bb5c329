from __future__ import annotations

import asyncio
import socket

import asyncpg
import pytest

from devstack.kafka import wait_ready
from shared.db import migrate, migration_files
from tests.infra import Infra
from tests.integration.conftest import eventually

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


async def test_churned_tables_carry_their_autovacuum_settings(pool: asyncpg.Pool) -> None:
    rows = await pool.fetch(
        "SELECT relname, reloptions FROM pg_class WHERE relname = any($1::text[])",
        ["outbox", "jobs", "videos"])
    options = {r["relname"]: set(r["reloptions"] or ()) for r in rows}
    assert {"autovacuum_vacuum_scale_factor=0", "autovacuum_vacuum_threshold=1000",
            "autovacuum_vacuum_cost_delay=0"} <= options["outbox"]
    for table in ("jobs", "videos"):
        assert {"autovacuum_vacuum_scale_factor=0.02",
                "autovacuum_vacuum_threshold=1000"} <= options[table]


async def test_dead_outbox_rows_are_vacuumed_within_seconds(infra: Infra, pool: asyncpg.Pool
                                                           ) -> None:
    """The outbox deletes every row it publishes. With PostgreSQL's defaults its dead rows
    pile up for minutes under load; with migration 0010 they are vacuumed at autovacuum's
    next look once they pass the threshold (every 5 s on the local server; an external
    server's naptime is its own, so the test waits for two of them)."""
    naptime = int(await pool.fetchval(
        "SELECT setting FROM pg_settings WHERE name = 'autovacuum_naptime'"))  # seconds
    if infra.postgres is not None:
        assert naptime == 5

    async def vacuums() -> int:
        return int(await pool.fetchval(
            "SELECT autovacuum_count FROM pg_stat_user_tables WHERE relname = 'outbox'"))

    async def vacuumed() -> bool:
        return await vacuums() > before

    before = await vacuums()
    async with pool.acquire() as conn, conn.transaction():
        # Rows inserted and deleted in one transaction: dead at commit, and never visible to
        # a relay another test may have running.
        await conn.execute(
            "INSERT INTO outbox (topic, key, event_id, payload)"
            " SELECT 'influgen.test.vacuum', 'k', gen_random_uuid(), ''::bytea"
            " FROM generate_series(1, 1500)")
        await conn.execute("DELETE FROM outbox WHERE topic = 'influgen.test.vacuum'")
    await eventually(vacuumed, timeout=2 * naptime + 20)
