"""SQL of the finalizer: settlement (once per job, by primary key) and video completion."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg

from shared.db import Conn


async def job_context(conn: Conn, *, job_id: UUID) -> asyncpg.Record | None:
    """The job with what settling and completing it needs, locked against a racing cancel."""
    row: asyncpg.Record | None = await conn.fetchrow(
        """
        SELECT j.id, j.video_id, j.workspace_id, v.credits_quoted, v.model_id, v.quality_tier,
               v.status, c.review_mode
          FROM jobs j JOIN videos v ON v.id = j.video_id JOIN characters c ON c.id = v.character_id
         WHERE j.id = $1
           FOR UPDATE OF v
        """,
        job_id,
    )
    return row


async def settle(
    conn: Conn, *, job_id: UUID, workspace_id: UUID, outcome: str,
    reserved: int, charge: int,
) -> bool:
    """Charge `charge` of the reservation and release the rest; False if already settled."""
    inserted = await conn.fetchval(
        "INSERT INTO settlements (job_id, outcome, charged, released) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (job_id) DO NOTHING RETURNING 1",
        job_id, outcome, charge, reserved - charge,
    )
    if inserted is None:
        return False
    await conn.execute(
        "UPDATE workspaces SET credits_balance = credits_balance - $2,"
        " credits_reserved = credits_reserved - $3 WHERE id = $1",
        workspace_id, charge, reserved,
    )
    entries = [("charge", charge), ("release", reserved - charge)]
    await conn.executemany(
        "INSERT INTO credit_ledger (workspace_id, kind, amount, job_id, reason)"
        " VALUES ($1, $2, $3, $4, $5)",
        [(workspace_id, kind, amount, job_id, f"{outcome} job")
         for kind, amount in entries if amount > 0],
    )
    return True


async def complete_video(
    conn: Conn, *, video_id: UUID, status: str, review_state: str | None,
    media: dict[str, Any] | None, charged: int,
) -> None:
    await conn.execute(
        """
        UPDATE videos SET status = $2, review_state = $3, media = $4, credits_charged = $5,
                          completed_at = now(), updated_at = now()
         WHERE id = $1
        """,
        video_id, status, review_state, media, charged,
    )
