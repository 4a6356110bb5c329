"""Redelivery safety: one inbox row per (consumer, event), written in the effect's transaction.

The primary key makes a second delivery of the same event a no-op inside the same
transaction as the effect, so the effect happens once whatever Kafka redelivers."""

from __future__ import annotations

from uuid import UUID

from shared.db import Conn


async def first_delivery(conn: Conn, *, consumer: str, event_id: UUID) -> bool:
    """Record the event; False when this consumer has already processed it.

    Call inside the transaction that applies the event's effect."""
    row = await conn.fetchval(
        "INSERT INTO inbox (consumer, event_id) VALUES ($1, $2)"
        " ON CONFLICT DO NOTHING RETURNING 1",
        consumer,
        event_id,
    )
    return row is not None
