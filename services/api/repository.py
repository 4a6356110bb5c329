"""SQL of the intake service. Functions take a connection and keyword-only arguments; the
caller owns the transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg
from pydantic import BaseModel
from pydantic_core import to_json

from services.api import idempotency
from shared import outbox
from shared.db import Conn, after_locking, columns, locked_in_id_order, one
from shared.events import TOPIC_JOBS


async def insert_workspace(
    conn: Conn, *, id: UUID, name: str, key_hash: bytes, sandbox: bool,
    creation_key: str | None = None, creation_hash: bytes | None = None,
) -> asyncpg.Record | None:
    """The new workspace's row; None if a workspace was created with `creation_key` before
    (a concurrent creation with the same key waits for the first to commit)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "INSERT INTO workspaces (id, name, api_key_hash, sandbox, creation_key, creation_hash)"
        " VALUES ($1, $2, $3, $4, $5, $6)"
        " ON CONFLICT (creation_key) WHERE creation_key IS NOT NULL DO NOTHING RETURNING *",
        id, name, key_hash, sandbox, creation_key, creation_hash,
    )
    return row


async def workspace_by_creation_key(conn: Conn, key: str) -> asyncpg.Record:
    return one(await conn.fetchrow(
        "SELECT id, creation_hash FROM workspaces WHERE creation_key = $1", key))


async def replace_key_hash(conn: Conn, *, workspace_id: UUID,
                           key_hash: bytes) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "UPDATE workspaces SET api_key_hash = $2 WHERE id = $1 RETURNING *",
        workspace_id, key_hash,
    )
    return row


async def workspace_row(conn: Conn, workspace_id: UUID) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT id, name, sandbox, created_at FROM workspaces WHERE id = $1", workspace_id)
    return row


async def list_workspaces(conn: Conn, *, name: str | None,
                          before: tuple[datetime, UUID] | None, limit: int) -> list[Any]:
    """Workspaces newest first with their credits; `name`: a part of the name, any case;
    `before`: the `(created_at, id)` a page ends at."""
    at, after = before or (None, None)
    rows: list[Any] = await conn.fetch(
        "SELECT id, name, sandbox, created_at, credits_balance AS balance,"
        " credits_reserved AS reserved, credits_balance - credits_reserved AS available"
        " FROM workspaces WHERE ($1::text IS NULL OR strpos(lower(name), lower($1)) > 0)"
        " AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3))"
        " ORDER BY created_at DESC, id DESC LIMIT $4",
        name, at, after, limit)
    return rows


async def workspace_by_key(conn: Conn, *, key_hash: bytes) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM workspaces WHERE api_key_hash = $1", key_hash
    )
    return row


@dataclass(frozen=True)
class Granted:
    """`replayed`: the key was used before with the same amount and reason, and nothing was
    granted now; `conflict`: it was used with another amount or reason."""

    replayed: bool = False
    conflict: bool = False


async def grant(conn: Conn, *, workspace_id: UUID, amount: int, reason: str,
                key: str | None = None) -> Granted | None:
    """Grant `amount` credits (in a transaction); None when there is no such workspace.
    A grant with a `key` happens once per workspace and key: the ledger row keeps the key,
    and the workspace row, locked first, orders concurrent grants with the same key."""
    if await conn.fetchrow("SELECT 1 FROM workspaces WHERE id = $1 FOR UPDATE",
                           workspace_id) is None:
        return None
    inserted = await conn.fetchrow(
        "INSERT INTO credit_ledger (workspace_id, kind, amount, reason, grant_key)"
        " VALUES ($1, 'grant', $2, $3, $4)"
        " ON CONFLICT (workspace_id, grant_key) WHERE grant_key IS NOT NULL DO NOTHING"
        " RETURNING id",
        workspace_id, amount, reason, key,
    )
    if inserted is None:
        first = one(await conn.fetchrow(
            "SELECT amount, reason FROM credit_ledger WHERE workspace_id = $1"
            " AND grant_key = $2", workspace_id, key,
        ))
        return Granted(replayed=True, conflict=(first["amount"], first["reason"]) != (
            amount, reason))
    await conn.execute(
        "UPDATE workspaces SET credits_balance = credits_balance + $2 WHERE id = $1",
        workspace_id, amount,
    )
    return Granted()


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


async def count_locked(conn: Conn, table: str, workspace_id: UUID, where: str = "TRUE") -> int:
    """How many rows of `table` (matching `where`) the workspace has, counted under a lock
    of that workspace's rows of `table` held until the transaction ends (call inside one):
    inserts that check a limit first cannot pass it together. Not the workspace's row,
    which every video's writes update. `table` and `where` are SQL written by the caller,
    never a request's input."""
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))",
                       f"{table}:{workspace_id}")
    count: int = await conn.fetchval(
        f"SELECT count(*) FROM {table} WHERE workspace_id = $1 AND {where}", workspace_id)
    return count


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


@dataclass(frozen=True)
class IntakeState:
    """What deciding a batch of requests reads: the characters named, each workspace's
    available credits, and how many jobs wait in each provider's queue."""

    characters: dict[UUID, asyncpg.Record]
    available: dict[UUID, int]
    queued: dict[str, int]


async def intake_state(conn: Conn, *, character_ids: list[UUID], workspace_ids: list[UUID],
                       providers: list[str]) -> IntakeState:
    """`IntakeState` in one statement (without locks: see `available_credits`)."""
    rows = await conn.fetch(
        """
        SELECT 'character' AS kind, id, workspace_id, name, reference_image_url,
               NULL::bigint AS n
          FROM characters WHERE id = any($1::uuid[])
        UNION ALL
        SELECT 'workspace', id, NULL, NULL, NULL, credits_balance - credits_reserved
          FROM workspaces WHERE id = any($2::uuid[])
        UNION ALL
        SELECT 'queue', NULL, NULL, provider, NULL, count(*)
          FROM jobs WHERE state = 'queued' AND provider = any($3::text[]) GROUP BY provider
        """,
        character_ids, workspace_ids, providers,
    )
    return IntakeState(
        characters={r["id"]: r for r in rows if r["kind"] == "character"},
        available={r["id"]: int(r["n"]) for r in rows if r["kind"] == "workspace"},
        queued={r["name"]: int(r["n"]) for r in rows if r["kind"] == "queue"},
    )


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


#: SQLSTATE of `influgen_require` (migration 0008): the statement's condition failed.
REQUIREMENT_FAILED = "IG001"


async def create(conn: Conn, *, videos: list[dict[str, Any]],
                 jobs: list[tuple[UUID, UUID, UUID, str, datetime, datetime]],
                 events: Sequence[tuple[str, BaseModel]],
                 claims: Sequence[tuple[UUID, str, int, str, UUID | None]], check: bool,
                 publisher: outbox.Publisher | None = None) -> bool:
    """Insert videos (dicts of column values, all with the same columns, as `to_json`
    writes them: models, UUIDs and instants included), their queued jobs (`(id, video_id,
    workspace_id, provider, deadline_at, created_at)`), the job events (into the outbox),
    the credit reservations (each job holds its video's `credits_quoted`) with their ledger
    rows, and the responses of claimed idempotency keys (`(workspace_id, key, status, body
    as JSON text, video_id)`), in one statement, atomic on its own. With `check`, only if
    every workspace still has the credits available: False when not, and nothing was
    written (in a transaction, the caller must roll back to before the statement). Without,
    the caller has checked the amounts against rows it locked. The workspace rows are
    locked in id order (`shared.db.locked_in_id_order`, as the finalizer's settlements lock
    them) until commit: outside a transaction, only while the statement runs; inside one,
    call it last. Outside a transaction, `publisher` sends the job events at once (see
    `shared.outbox.OutboxWrite`)."""
    write = outbox.OutboxWrite(conn, events, publisher)
    names = list(videos[0])
    workspaces = {job[2] for job in jobs}
    quotes = {video["id"]: video["credits_quoted"] for video in videos}
    job_columns = columns(jobs)
    try:
        result = await conn.fetchrow(
            f"""
            WITH v AS (
                INSERT INTO videos ({", ".join(names)})
                SELECT {", ".join(names)}
                  FROM jsonb_populate_recordset(NULL::videos, $1::text::jsonb)),
            j AS (
                INSERT INTO jobs (id, video_id, workspace_id, state, provider, deadline_at,
                                  created_at, updated_at)
                SELECT id, video_id, workspace_id, 'queued', provider, deadline_at, created_at,
                       created_at
                  FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::text[],
                              $6::timestamptz[], $7::timestamptz[])
                       AS j(id, video_id, workspace_id, provider, deadline_at, created_at)),
            e AS (SELECT * FROM unnest($9::text[], $10::uuid[], $11::bytea[])
                      WITH ORDINALITY AS e(key, event_id, payload, n)),
            queued AS ({outbox.insert_from("e", topic="$12", eager="$14")}),
            claimed AS ({idempotency.complete_from(
                "unnest($15::uuid[], $16::text[], $17::int[], $18::text[], $19::uuid[])"
                " AS c(workspace_id, key, status, body, video_id)")}),
            hold AS (SELECT * FROM unnest($4::uuid[], $2::uuid[], $8::bigint[])
                                     AS h(workspace_id, job_id, amount)),
            locked AS ({locked_in_id_order("workspaces", "SELECT workspace_id FROM hold")}),
            led AS (
                INSERT INTO credit_ledger (workspace_id, kind, amount, job_id, reason)
                SELECT workspace_id, 'reserve', amount, job_id, 'video request' FROM hold),
            reserved AS (
                UPDATE workspaces w SET credits_reserved = credits_reserved + t.total
                  FROM (SELECT workspace_id, sum(amount) AS total FROM hold
                         GROUP BY workspace_id) t
                 WHERE w.id = t.workspace_id AND {after_locking("locked")}
                   AND (NOT $13 OR w.credits_balance - w.credits_reserved >= t.total)
                RETURNING w.id)
            SELECT influgen_require((SELECT count(*) FROM reserved) = $20,
                                    'the credits available changed'),
                   {outbox.after_insert("queued", eager="$14")}
            """,
            to_json(videos).decode(), *job_columns, [quotes[v] for v in job_columns[1]],
            write.keys, write.event_ids, write.payloads, TOPIC_JOBS, check, write.eager,
            [c[0] for c in claims], [c[1] for c in claims],
            [c[2] for c in claims], [c[3] for c in claims], [c[4] for c in claims],
            len(workspaces),
        )
    except asyncpg.PostgresError as exc:
        if exc.sqlstate == REQUIREMENT_FAILED:
            return False
        raise
    write.publish(result, topic=TOPIC_JOBS)
    return True
