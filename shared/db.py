"""PostgreSQL access: the connection pool and the versioned migrations."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncpg

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
_MIGRATION_LOCK = 7_201_001

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    #: A connection: a plain one or one borrowed from a pool.
    Conn = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]
else:
    Conn = asyncpg.Connection


def columns(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """The columns of `rows` (tuples of equal length), one list each: the arguments of an
    `INSERT ... SELECT * FROM unnest($1::type[], $2::type[], ...)` that writes them all."""
    return [list(column) for column in zip(*rows, strict=True)]


#: What a lost or restarting database raises: answer "retry later", not "bug".
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, timed out
    asyncpg.InterfaceError,  # the connection closed under a call
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # shutting down, starting up
)
#: What a loop that must outlive database trouble catches: unavailability and any error
#: PostgreSQL reports (asyncpg's InterfaceError is not a PostgresError).
DATABASE_ERRORS: tuple[type[BaseException], ...] = (*UNAVAILABLE, asyncpg.PostgresError)


async def _init_connection(conn: Conn) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(conn: Conn) -> None:
    """Pool release without asyncpg's reset query (`RESET ALL; UNLISTEN *; ...`), one round
    trip saved on every release: pooled connections carry no session state here (LISTEN and
    advisory locks use dedicated connections; nothing SETs a session variable). asyncpg
    still rolls back a transaction left open before this is called."""


#: Session settings of a pool whose statements PostgreSQL plans once per connection
#: (`generic_plans`). By default it plans each of a prepared statement's first five
#: executions for their arguments, then keeps the plan made without them only if that costs
#: no more than those did. Arrays of arguments defeat this: for a batch of one to three it
#: knows the array's length and estimates less than the ten elements it assumes without
#: them, so it plans on every call. The generator's accept (a CTE of an inbox insert, a
#: window over the batch, two updates) was planned on every call, 0.6 ms each: as much of
#: the server's time as executing it (`make profile`, 2026-12-03).
GENERIC_PLANS = {"plan_cache_mode": "force_generic_plan"}


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10,
                      generic_plans: bool = False) -> asyncpg.Pool:
    """A pool of connections with the JSON codecs. With `generic_plans`, every statement
    is planned once per connection, whatever its arguments (`GENERIC_PLANS`): only for a
    service whose statements look rows up by key or by indexes that hold what they look for,
    where the plan does not depend on the arguments' values."""
    pool = await asyncpg.create_pool(
        dsn, min_size=min_size, max_size=max_size, init=_init_connection,
        reset=_keep_session, command_timeout=30,
        server_settings=GENERIC_PLANS if generic_plans else None,
    )
    assert pool is not None
    return pool


#: A select-list item that makes the commit of its statement's transaction asynchronous
#: (`synchronous_commit = off` for that transaction alone: `set_config` with `is_local`):
#: the statement returns without waiting for its WAL to reach the disk, and a crash of
#: PostgreSQL (not of the client) within the next few hundred milliseconds, up to three
#: `wal_writer_delay`s, may lose the transaction. PostgreSQL evaluates it per row returned:
#: a statement that returns no row commits as usual. Only for a write whose loss is made up
#: for: its effect reaches nobody before a later synchronous commit flushes the WAL (which is
#: flushed in order, so that commit covers it), or its input is not acknowledged before a
#: `WalFlusher` flush (the generator's job events; see `services.generator.repository.accept`).
NO_FLUSH_WAIT = "set_config('synchronous_commit', 'off', true) AS no_flush_wait"


async def flush_wal(db: Conn | asyncpg.Pool, *, timeout: float | None = None) -> None:
    """Make every transaction committed before this call durable, those committed with
    `NO_FLUSH_WAIT` included: a one-row write committed synchronously flushes the WAL up to
    its own commit record, and so everything before it. (A transaction that writes nothing
    does not flush: not even one that took a transaction id.) Only commits this server
    still has: one that crashed and restarted since lost what it had not flushed, and a
    flush afterwards says nothing of it. Use `WalFlusher` to know."""
    await db.execute("UPDATE wal_flush SET at = now()", timeout=timeout)


class DurabilityUnknown(Exception):
    """PostgreSQL may have crashed since the last flush: commits made without waiting for
    the disk before now may be lost. Whatever depends on them must be done again."""


class WalFlusher:
    """`flush_wal` that knows whether it covers the commits before it. It flushes on a
    connection of its own, opened (`start`) before those commits were made. PostgreSQL
    ends every connection when it crashes, stops or restarts after a crash (and in a crash
    loses the WAL it had not flushed), so a flush on a connection that has stayed open
    since covers every commit made in between. When that connection is gone, it opens
    another and raises `DurabilityUnknown` once: commits made before the new one may have
    been lost, and those made after it are covered by the next flush. (A connection
    ended for another reason, say `pg_terminate_backend`, raises it too: redoing work
    that was not lost is safe, assuming it lost is not.) Needs a direct connection to
    the server, not one through a pooler that may swap the server connection under it."""

    #: How long a flush may take before it counts as failed (and is tried again later).
    TIMEOUT_SECONDS = 10.0

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: asyncpg.Connection[asyncpg.Record] | None = None

    async def start(self) -> None:
        """Open the connection: before the first commit this flusher is to cover."""
        self._conn = await self._connect()

    async def _connect(self) -> asyncpg.Connection[asyncpg.Record]:
        # its commits wait for the flush whatever the server's default
        conn: asyncpg.Connection[asyncpg.Record] = await asyncpg.connect(
            self._dsn, server_settings={"synchronous_commit": "on"})
        return conn

    async def __call__(self) -> None:
        """Flush; `DurabilityUnknown` when the connection was lost since the last call (or
        `start`), once a new one is open; the database's error when it cannot be reached
        (call again later: the loss is still reported then)."""
        if self._conn is not None and not self._conn.is_closed():
            try:
                await flush_wal(self._conn, timeout=self.TIMEOUT_SECONDS)
                return
            except Exception:
                if not self._conn.is_closed():
                    raise  # a failed or slow statement on a live connection: nothing lost
        self._conn = await self._connect()
        raise DurabilityUnknown("the connection to PostgreSQL was lost since the last flush")

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
            self._conn = None


def locked_in_id_order(table: str, ids: str) -> str:
    """The body of a CTE that locks the rows of `table` whose id is in `ids` (a subquery),
    in id order (FOR NO KEY UPDATE, the lock an UPDATE that keeps the key takes). For a
    statement that updates several of them: an UPDATE locks rows in the order its plan
    reads them, which is the id order with a nested loop over a sorted list but the rows'
    order on disk with a hash join over a sequential scan, and the planner picks one or the
    other by the table's and the batch's sizes. Two such statements over the same rows in
    the two orders deadlock (PostgreSQL breaks it after `deadlock_timeout`, 1 s, by failing
    one of them). Put `after_locking(cte)` in the UPDATE's WHERE."""
    return f"SELECT id FROM {table} WHERE id IN ({ids}) ORDER BY id FOR NO KEY UPDATE"


def after_locking(cte: str) -> str:
    """A condition that makes an UPDATE start only once the CTE `cte` (`locked_in_id_order`)
    has locked all its rows: it does not depend on the row, so PostgreSQL evaluates it once,
    before the UPDATE reads any (a one-time filter), and it is always true."""
    return f"(SELECT count(*) FROM {cte}) >= 0"


async def delete_in_batches(conn: Conn, table: str, where: str, *args: Any,
                            batch: int = 10_000) -> int:
    """Delete the rows of `table` that match `where` (placeholders $1.. for `args`), `batch`
    rows per statement, each its own transaction (no long lock or transaction), until fewer
    come back; how many in all."""
    deleted = 0
    while True:
        status: str = await conn.execute(
            f"DELETE FROM {table} WHERE ctid = ANY (ARRAY(SELECT ctid FROM {table}"
            f" WHERE {where} LIMIT ${len(args) + 1}))", *args, batch)
        count = int(status.split()[-1])
        deleted += count
        if count < batch:
            return deleted


def one(row: asyncpg.Record | None) -> asyncpg.Record:
    """The row a statement that always returns one (INSERT ... RETURNING) returned."""
    assert row is not None
    return row


def migration_files() -> list[tuple[int, str, str]]:
    found = []
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        version = int(path.name.split("_", 1)[0])
        found.append((version, path.name, path.read_text()))
    return found


async def migrate(dsn: str) -> list[str]:
    """Apply the migrations not yet applied, in order; return the names applied.

    Safe to run twice and from several processes at once (an advisory lock serialises them)."""
    conn = await asyncpg.connect(dsn)
    applied: list[str] = []
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name
                )
            applied.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _MIGRATION_LOCK)
        await conn.close()
    return applied
