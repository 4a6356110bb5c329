"""The local PostgreSQL server of the dev stack: further settings reach the server, and
its programs run as the server's user (what `make profile` relies on)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from bench.profile import waldump_records
from devstack.postgres import EmbeddedPostgres
from devstack.proc import free_port

pytestmark = pytest.mark.integration

#: spaces, double quotes and a `$`: pg_ctl hands the options to a shell
SEARCH_PATH = '"$user", public, pg_catalog'


async def test_settings_reach_the_server_and_its_programs_run(tmp_path: Path) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg", free_port(), settings={
        "shared_preload_libraries": "pg_stat_statements", "search_path": SEARCH_PATH})
    await asyncio.to_thread(pg.start)
    try:
        conn = await asyncpg.connect(pg.url)
        try:
            assert await conn.fetchval("SHOW shared_preload_libraries") == "pg_stat_statements"
            assert await conn.fetchval("SHOW search_path") == SEARCH_PATH
            await conn.execute("CREATE EXTENSION pg_stat_statements")
            # (its view refuses to answer unless the library was loaded at start)
            assert await conn.fetchval("SELECT count(*) FROM pg_stat_statements") >= 1
            start = await conn.fetchval("SELECT pg_current_wal_insert_lsn()::text")
            await conn.execute("CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 5)")
            end = await conn.fetchval("SELECT pg_current_wal_insert_lsn()::text")
        finally:
            await conn.close()
        stats = await asyncio.to_thread(
            pg.run_tool, "pg_waldump", "--path", str(pg.data_dir / "pg_wal"),
            "--start", start, "--end", end, "--stats=record")
        assert waldump_records(stats).get("Heap/INSERT", 0) >= 5
        with pytest.raises(RuntimeError, match="pg_waldump failed"):
            await asyncio.to_thread(pg.run_tool, "pg_waldump", "--path", "/nonexistent")
    finally:
        await asyncio.to_thread(pg.stop, "immediate")
