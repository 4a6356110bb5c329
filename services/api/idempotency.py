"""Idempotency keys (SPEC section 8): kept 24 hours per workspace.

HTTP: the key is claimed in its own committed statement before the work starts, so a
concurrent duplicate sees it in flight (409) instead of waiting. The response is stored in the
same transaction as the effect. A claim whose request died (no response after
`ABANDONED_AFTER`) is taken over by the next attempt, so a crash never wedges a key.

Kafka: the `request_id` is recorded in the transaction that creates the video (the consumer is
the only writer for its partition), so a redelivered or repeated event creates nothing new.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

from shared.db import Conn

TTL = timedelta(hours=24)
ABANDONED_AFTER = timedelta(seconds=60)


def request_hash(body: Any) -> bytes:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).digest()


@dataclass(frozen=True)
class Claim:
    """`owned`: go ahead. Otherwise `status`/`body` is the stored response, or both None
    while the first request is still in flight; `conflict` when the body differs."""

    owned: bool
    conflict: bool = False
    status: int | None = None
    body: Any = None


async def claim(conn: Conn, *, workspace_id: UUID, key: str, digest: bytes) -> Claim:
    """Claim `key` for this request (autocommit: call outside a transaction)."""
    await conn.execute(
        "DELETE FROM idempotency_keys WHERE workspace_id = $1 AND key = $2"
        " AND created_at < now() - $3::interval",
        workspace_id, key, TTL,
    )
    row = await conn.fetchrow(
        "INSERT INTO idempotency_keys (workspace_id, key, request_hash) VALUES ($1, $2, $3)"
        " ON CONFLICT DO NOTHING RETURNING key",
        workspace_id, key, digest,
    )
    if row is not None:
        return Claim(owned=True)
    existing = await conn.fetchrow(
        "SELECT request_hash, response_status, response_body, created_at < now() - $3::interval"
        " AS abandoned FROM idempotency_keys WHERE workspace_id = $1 AND key = $2",
        workspace_id, key, ABANDONED_AFTER,
    )
    if existing is None:  # expired and deleted by a concurrent request: try once more
        return await claim(conn, workspace_id=workspace_id, key=key, digest=digest)
    if bytes(existing["request_hash"]) != digest:
        return Claim(owned=False, conflict=True)
    if existing["response_status"] is not None:
        return Claim(owned=False, status=existing["response_status"],
                     body=existing["response_body"])
    if existing["abandoned"]:
        taken = await conn.fetchrow(
            "UPDATE idempotency_keys SET created_at = now() WHERE workspace_id = $1"
            " AND key = $2 AND response_status IS NULL"
            " AND created_at < now() - $3::interval RETURNING key",
            workspace_id, key, ABANDONED_AFTER,
        )
        if taken is not None:
            return Claim(owned=True)
    return Claim(owned=False)


async def record(
    conn: Conn, *, workspace_id: UUID, key: str, digest: bytes, status: int, body: Any,
    video_id: UUID | None = None,
) -> None:
    """Claim and complete a key at once, inside the effect's transaction (the Kafka path)."""
    await conn.execute(
        "INSERT INTO idempotency_keys (workspace_id, key, request_hash, video_id,"
        " response_status, response_body) VALUES ($1, $2, $3, $4, $5, $6)",
        workspace_id, key, digest, video_id, status, body,
    )


def complete_from(rows: str) -> str:
    """Storing the responses of claimed keys, as the body of a data-modifying CTE of the
    statement that writes their effects: `rows` is a relation named `c`, with the columns
    `workspace_id`, `key`, `status`, `body` (the JSON text) and `video_id`."""
    return ("UPDATE idempotency_keys k SET response_status = c.status,"
            " response_body = c.body::jsonb, video_id = c.video_id"
            f" FROM {rows} WHERE k.workspace_id = c.workspace_id AND k.key = c.key")


async def release(conn: Conn, *, workspace_id: UUID, key: str) -> None:
    """Forget an in-flight claim whose request failed unexpectedly, so a retry can run."""
    await conn.execute(
        "DELETE FROM idempotency_keys WHERE workspace_id = $1 AND key = $2"
        " AND response_status IS NULL",
        workspace_id, key,
    )


async def lookup(conn: Conn, *, workspace_id: UUID, key: str) -> Any:
    """The stored row of a key younger than the TTL, or None."""
    return await conn.fetchrow(
        "SELECT request_hash, response_status, response_body FROM idempotency_keys"
        " WHERE workspace_id = $1 AND key = $2 AND created_at >= now() - $3::interval",
        workspace_id, key, TTL,
    )


async def purge_expired(conn: Conn) -> str:
    result: str = await conn.execute(
        "DELETE FROM idempotency_keys WHERE created_at < now() - $1::interval", TTL
    )
    return result
