"""SQL of the intake service. Functions take a connection and keyword-only arguments; the
caller owns the transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from shared.db import Conn, one


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


async def reserve(conn: Conn, *, workspace_id: UUID, job_id: UUID, amount: int) -> asyncpg.Record:
    """Hold `amount` credits, with its ledger row, in one statement; `ok` false when short.

    This locks the workspace's row until commit, so every request of a workspace passes
    through it one at a time: call it last in the transaction, to hold the lock briefly."""
    return one(await conn.fetchrow(
        """
        WITH upd AS (
            UPDATE workspaces SET credits_reserved = credits_reserved + $2
             WHERE id = $1 AND credits_balance - credits_reserved >= $2
         RETURNING id),
        led AS (
            INSERT INTO credit_ledger (workspace_id, kind, amount, job_id, reason)
            SELECT id, 'reserve', $2, $3, 'video request' FROM upd)
        SELECT (SELECT count(*) FROM upd) = 1 AS ok,
               (SELECT credits_balance - credits_reserved FROM workspaces WHERE id = $1)
                   AS available
        """,
        workspace_id, amount, job_id,
    ))


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


async def insert_video(conn: Conn, **cols: Any) -> None:
    names = ", ".join(cols)
    params = ", ".join(f"${i + 1}" for i in range(len(cols)))
    await conn.execute(f"INSERT INTO videos ({names}) VALUES ({params})", *cols.values())


async def insert_job(
    conn: Conn, *, id: UUID, video_id: UUID, workspace_id: UUID, provider: str,
    deadline_at: datetime,
) -> None:
    await conn.execute(
        "INSERT INTO jobs (id, video_id, workspace_id, state, provider, deadline_at)"
        " VALUES ($1, $2, $3, 'queued', $4, $5)",
        id, video_id, workspace_id, provider, deadline_at,
    )
