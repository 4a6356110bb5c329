"""SQL of the finalizer: settlement (once per job, by primary key) and video completion, a
batch of jobs per statement."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from shared.db import Conn, columns


@dataclass(frozen=True)
class Settlement:
    """What a generation outcome does to its job's credits and video."""

    job_id: UUID
    video_id: UUID
    workspace_id: UUID
    outcome: str  # succeeded, failed or canceled
    reserved: int
    charge: int
    status: str  # the video's: ready, approved, failed or canceled
    review_state: str | None
    media: dict[str, Any] | None


async def job_contexts(conn: Conn, *, job_ids: Sequence[UUID]) -> dict[UUID, asyncpg.Record]:
    """The jobs with what settling and completing them needs, their videos locked (in id
    order) against a racing cancel (NO KEY UPDATE: foreign-key checks need not wait)."""
    rows = await conn.fetch(
        """
        SELECT j.id, j.video_id, j.workspace_id, v.credits_quoted, v.model_id, v.quality_tier,
               v.status, c.review_mode
          FROM jobs j JOIN videos v ON v.id = j.video_id JOIN characters c ON c.id = v.character_id
         WHERE j.id = any($1::uuid[])
         ORDER BY v.id
           FOR NO KEY UPDATE OF v
        """,
        list(job_ids),
    )
    return {row["id"]: row for row in rows}


async def settle(conn: Conn, settlements: Sequence[Settlement]) -> set[UUID]:
    """Record each job's settlement and its ledger entries (charge `charge` of the
    reservation, release the rest); the jobs settled now (a job settled before is left as it
    is: the first terminal state wins). The balances follow with `update_balances`."""
    if not settlements:
        return set()
    rows = await conn.fetch(
        "INSERT INTO settlements (job_id, outcome, charged, released)"
        " SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::bigint[])"
        " ON CONFLICT (job_id) DO NOTHING RETURNING job_id",
        [s.job_id for s in settlements], [s.outcome for s in settlements],
        [s.charge for s in settlements], [s.reserved - s.charge for s in settlements],
    )
    settled = {row["job_id"] for row in rows}
    entries = [(s.workspace_id, kind, amount, s.job_id, f"{s.outcome} job")
               for s in settlements if s.job_id in settled
               for kind, amount in (("charge", s.charge), ("release", s.reserved - s.charge))
               if amount > 0]
    if entries:
        await conn.execute(
            "INSERT INTO credit_ledger (workspace_id, kind, amount, job_id, reason)"
            " SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::uuid[], $5::text[])",
            *columns(entries),
        )
    return settled


async def update_balances(conn: Conn, settled: Sequence[Settlement]) -> None:
    """Move the settled jobs' credits out of the workspaces' balances and reservations. Call
    last in the transaction: the workspace rows stay locked until commit, and intake needs
    them for every new request."""
    totals: dict[UUID, list[int]] = defaultdict(lambda: [0, 0])
    for s in settled:
        totals[s.workspace_id][0] += s.charge
        totals[s.workspace_id][1] += s.reserved
    for workspace_id in sorted(totals):  # in id order, as intake locks them
        charged, reserved = totals[workspace_id]
        await conn.execute(
            "UPDATE workspaces SET credits_balance = credits_balance - $2,"
            " credits_reserved = credits_reserved - $3 WHERE id = $1",
            workspace_id, charged, reserved,
        )


async def complete_videos(conn: Conn, settlements: Sequence[Settlement]) -> None:
    if not settlements:
        return
    await conn.execute(
        """
        UPDATE videos v SET status = s.status, review_state = s.review_state,
                            media = s.media::jsonb, credits_charged = s.charged,
                            completed_at = now(), updated_at = now()
          FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[])
               AS s(id, status, review_state, media, charged)
         WHERE v.id = s.id
        """,
        [s.video_id for s in settlements], [s.status for s in settlements],
        [s.review_state for s in settlements],
        [json.dumps(s.media) if s.media is not None else None for s in settlements],
        [s.charge for s in settlements],
    )
