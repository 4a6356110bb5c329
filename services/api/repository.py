"""SQL of the intake service. Functions take a connection and keyword-only arguments; the
caller owns the transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from shared.db import Conn, columns, one


async def insert_workspace(
    conn: Conn, *, id: UUID, name: str, key_hash: bytes, sandbox: bool
) -> asyncpg.Record:
    row = one(await conn.fetchrow(
        "INSERT INTO workspaces (id, name, api_key_hash, sandbox) VALUES ($1, $2, $3, $4)"
        " RETURNING *",
        id, name, key_hash, sandbox,
    ))
    return row


async def workspace_by_key(conn: Conn, *, key_hash: bytes) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM workspaces WHERE api_key_hash = $1", key_hash
    )
    return row


async def grant(conn: Conn, *, workspace_id: UUID, amount: int, reason: str) -> bool:
    row = await conn.fetchrow(
        "UPDATE workspaces SET credits_balance = credits_balance + $2 WHERE id = $1 RETURNING id",
        workspace_id, amount,
    )
    if row is None:
        return False
    await conn.execute(
        "INSERT INTO credit_ledger (workspace_id, kind, amount, reason)"
        " VALUES ($1, 'grant', $2, $3)",
        workspace_id, amount, reason,
    )
    return True


async def credits(conn: Conn, *, workspace_id: UUID, limit: int) -> dict[str, Any]:
    ws = one(await conn.fetchrow(
        "SELECT credits_balance, credits_reserved FROM workspaces WHERE id = $1", workspace_id
    ))
    ledger = await conn.fetch(
        "SELECT id, kind, amount, job_id, reason, created_at FROM credit_ledger"
        " WHERE workspace_id = $1 ORDER BY id DESC LIMIT $2",
        workspace_id, limit,
    )
    return {
        "balance": ws["credits_balance"],
        "reserved": ws["credits_reserved"],
        "available": ws["credits_balance"] - ws["credits_reserved"],
        "ledger": [dict(r) for r in ledger],
    }


async def insert_character(
    conn: Conn, *, id: UUID, workspace_id: UUID, name: str, review_mode: str,
    reference_image_url: str | None,
) -> asyncpg.Record:
    row = one(await conn.fetchrow(
        "INSERT INTO characters (id, workspace_id, name, review_mode, reference_image_url)"
        " VALUES ($1, $2, $3, $4, $5) RETURNING *",
        id, workspace_id, name, review_mode, reference_image_url,
    ))
    return row


async def characters_by_id(conn: Conn, *, ids: list[UUID]) -> dict[UUID, asyncpg.Record]:
    rows = await conn.fetch(
        "SELECT id, workspace_id, name, reference_image_url FROM characters"
        " WHERE id = any($1::uuid[])", ids,
    )
    return {row["id"]: row for row in rows}


async def available_credits(conn: Conn, *, workspace_ids: list[UUID],
                            lock: bool) -> dict[UUID, int]:
    """Each workspace's available credits; with `lock`, its row locked until commit (in id
    order, so that concurrent callers cannot deadlock). NO KEY UPDATE, the lock an UPDATE of
    the balance takes: FOR UPDATE would also block every foreign-key check on the workspace
    (the finalizer's ledger rows) until this transaction ends."""
    rows = await conn.fetch(
        "SELECT id, credits_balance - credits_reserved AS available FROM workspaces"
        " WHERE id = any($1::uuid[]) ORDER BY id" + (" FOR NO KEY UPDATE" if lock else ""),
        workspace_ids,
    )
    return {row["id"]: int(row["available"]) for row in rows}


async def reserve_many(conn: Conn, *, holds: list[tuple[UUID, UUID, int]],
                       check: bool) -> bool:
    """Hold credits for jobs, `(workspace_id, job_id, amount)` each, with their ledger rows.
    With `check`, only if every workspace still has the credits available (else False, and
    the caller must undo the statement's effects: its ledger rows are written regardless);
    without, the caller has checked the amounts against rows it locked."""
    workspaces = {h[0] for h in holds}
    updated = await conn.fetch(
        """
        WITH hold AS (SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::bigint[])
                                 AS h(workspace_id, job_id, amount)),
        led AS (
            INSERT INTO credit_ledger (workspace_id, kind, amount, job_id, reason)
            SELECT workspace_id, 'reserve', amount, job_id, 'video request' FROM hold)
        UPDATE workspaces w SET credits_reserved = credits_reserved + t.total
          FROM (SELECT workspace_id, sum(amount) AS total FROM hold GROUP BY workspace_id
                 ORDER BY workspace_id) t
         WHERE w.id = t.workspace_id
           AND (NOT $4 OR w.credits_balance - w.credits_reserved >= t.total)
        RETURNING w.id
        """,
        [h[0] for h in holds], [h[1] for h in holds], [h[2] for h in holds], check,
    )
    return len(updated) == len(workspaces)


async def queued_jobs(conn: Conn, *, providers: list[str]) -> dict[str, int]:
    """How many jobs wait in each provider's queue (what a new job's position counts from)."""
    rows = await conn.fetch(
        "SELECT provider, count(*) AS n FROM jobs WHERE state = 'queued'"
        " AND provider = any($1::text[]) GROUP BY provider", providers,
    )
    return {row["provider"]: int(row["n"]) for row in rows}


async def character(
    conn: Conn, *, id: UUID, workspace_id: UUID
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM characters WHERE id = $1 AND workspace_id = $2", id, workspace_id
    )
    return row


async def characters(conn: Conn, *, workspace_id: UUID) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT * FROM characters WHERE workspace_id = $1 ORDER BY created_at, id", workspace_id
    )
    return rows


async def update_character(
    conn: Conn, *, id: UUID, workspace_id: UUID, changes: dict[str, Any]
) -> asyncpg.Record | None:
    allowed = {"name", "review_mode", "reference_image_url"}
    cols = [c for c in changes if c in allowed]
    sets = ", ".join(f"{c} = ${i + 3}" for i, c in enumerate(cols))
    row: asyncpg.Record | None = await conn.fetchrow(
        f"UPDATE characters SET {sets + ', ' if sets else ''}updated_at = now()"
        " WHERE id = $1 AND workspace_id = $2 RETURNING *",
        id, workspace_id, *[changes[c] for c in cols],
    )
    return row


async def insert_videos(conn: Conn, rows: list[dict[str, Any]]) -> None:
    """Insert videos, each a dict of column values (all with the same columns)."""
    names = list(rows[0])
    params = ", ".join(f"${i + 1}" for i in range(len(names)))
    await conn.executemany(
        f"INSERT INTO videos ({', '.join(names)}) VALUES ({params})",
        [[row[name] for name in names] for row in rows],
    )


async def insert_jobs(conn: Conn, jobs: list[tuple[UUID, UUID, UUID, str, datetime, datetime]]
                      ) -> None:
    """Queued jobs, `(id, video_id, workspace_id, provider, deadline_at, created_at)` each,
    in one statement."""
    await conn.execute(
        "INSERT INTO jobs (id, video_id, workspace_id, state, provider, deadline_at, created_at,"
        " updated_at) SELECT id, video_id, workspace_id, 'queued', provider, deadline_at,"
        " created_at, created_at FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[],"
        " $5::timestamptz[], $6::timestamptz[])"
        " AS j(id, video_id, workspace_id, provider, deadline_at, created_at)",
        *columns(jobs),
    )
