"""Redelivery safety: one inbox row per (consumer, event), written in the effect's transaction.

The primary key makes a second delivery of the same event a no-op inside the same
transaction as the effect, so the effect happens once whatever Kafka redelivers."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from shared.db import Conn


async def first_delivery(conn: Conn, *, consumer: str, event_id: UUID) -> bool:
    """Record the event; False when this consumer has already processed it.

    Call inside the transaction that applies the event's effect."""
    return event_id in await first_deliveries(conn, consumer=consumer, event_ids=[event_id])


async def first_deliveries(conn: Conn, *, consumer: str,
                           event_ids: Sequence[UUID]) -> set[UUID]:
    """Record the events in one statement; the ids this consumer had not processed yet.

    Call inside the transaction that applies the events' effects."""
    rows = await conn.fetch(
        "INSERT INTO inbox (consumer, event_id) SELECT $1, unnest($2::uuid[])"
        " ON CONFLICT DO NOTHING RETURNING event_id",
        consumer,
        list(event_ids),
    )
    return {row["event_id"] for row in rows}
