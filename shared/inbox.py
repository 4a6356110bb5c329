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
    rows = await conn.fetch(record("$1", "$2"), consumer, list(event_ids))
    return {row["event_id"] for row in rows}


def record(consumer: str, event_ids: str) -> str:
    """The inbox insert as the body of a data-modifying CTE, for statements that record
    events and apply their effects in one round trip: `consumer` and `event_ids` (a uuid
    array) are placeholders; it returns the `event_id`s seen for the first time."""
    return ("INSERT INTO inbox (consumer, event_id)"
            f" SELECT {consumer}, unnest({event_ids}::uuid[])"
            " ON CONFLICT DO NOTHING RETURNING event_id")
