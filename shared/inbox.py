"""Redelivery safety: one inbox row per (consumer, event), written in the effect's transaction.

The primary key makes a second delivery of the same event a no-op inside the same
transaction as the effect, so the effect happens once whatever Kafka redelivers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from uuid import UUID

from shared.db import Conn, delete_in_batches


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


async def purge(conn: Conn, *, older_than: timedelta, batch: int = 10_000) -> int:
    """Delete inbox rows received more than `older_than` ago, `batch` rows per statement
    (each its own transaction, so no long lock or transaction); how many were deleted.

    A row guards against a redelivery of its event, which Kafka can make only while the
    event is still in its topic: `older_than` must exceed the longest a record stays there
    (the topic's `retention.ms` plus its `segment.ms`: a segment is deleted only once its
    newest record is past retention)."""
    return await delete_in_batches(conn, "inbox", "received_at < now() - $1::interval",
                                   older_than, batch=batch)
