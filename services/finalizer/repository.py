"""SQL of the finalizer: settlement (once per job, by primary key) and video completion, a
batch of jobs per statement, two statements per batch (a read, then one atomic write)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from shared import inbox, outbox
from shared.db import Conn, after_locking, locked_in_id_order
from shared.events import VideoCompleted
from shared.videos import COLUMNS


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
    #: the generation event that produced it
    source_event_id: UUID
    #: when the video is completed (its `completed_at`, as the completion event says)
    at: datetime


async def unapplied_outcomes(conn: Conn, *, consumer: str,
                             events: Sequence[tuple[UUID, UUID]]) -> dict[UUID, asyncpg.Record]:
    """For each `(event_id, job_id)` event this consumer has not applied yet whose job
    exists, by event id: its video and job (`shared.videos.COLUMNS`), the character's
    `review_mode` and `now()`. A plain read, without locks: `settle` decides, by the inbox
    and the settlement's primary key, which of the outcomes take effect."""
    rows = await conn.fetch(
        f"""
        SELECT e.event_id, {COLUMNS}, c.review_mode, now() AS now
          FROM unnest($2::uuid[], $3::uuid[]) AS e(event_id, job_id)
          JOIN jobs j ON j.id = e.job_id
          JOIN videos v ON v.id = j.video_id
          JOIN characters c ON c.id = v.character_id
         WHERE NOT EXISTS (SELECT 1 FROM inbox i
                            WHERE i.consumer = $1 AND i.event_id = e.event_id)
        """,
        consumer, [event_id for event_id, _ in events], [job_id for _, job_id in events],
    )
    return {row["event_id"]: row for row in rows}


async def settle(conn: Conn, *, consumer: str, event_ids: Sequence[UUID],
                 settlements: Sequence[tuple[Settlement, VideoCompleted]],
                 topic: str, publisher: outbox.Publisher | None = None) -> set[UUID]:
    """Record `event_ids` in the inbox and settle jobs, each with the completion event it
    produces, in one statement, atomic without a transaction; the jobs settled now. A
    settlement takes effect only if its event is new to the inbox and its job has none yet
    (the first terminal state wins: a concurrent settlement of the same job waits for the
    other's commit, then does nothing). For each job settled: the settlement; the ledger
    entries (charge `charge` of the reservation, release the rest); the video's final state;
    the event, into the outbox (as `shared.outbox.enqueue_many` writes it, with the
    relay's wake-up unless it is eager); and the credits out of the workspace's balance
    and reservation (its row locked in id order, as intake's requests lock them:
    `shared.db.locked_in_id_order`). Outside a transaction the workspace rows stay locked
    only while the statement runs, not for a round trip to the client as well: intake
    needs them for every new request. Outside a transaction, `publisher` sends the events
    at once (see `shared.outbox.OutboxWrite`)."""
    write = outbox.OutboxWrite(conn, [(str(s.video_id), event) for s, event in settlements],
                               publisher)
    rows = await conn.fetch(
        f"""
        WITH new AS ({inbox.record("$14", "$15")}),
        s AS (
            SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::bigint[],
                                 $6::bigint[], $7::text[], $8::text[], $9::text[],
                                 $10::uuid[], $11::bytea[], $16::uuid[], $17::timestamptz[])
                          WITH ORDINALITY
                AS s(job_id, video_id, workspace_id, outcome, charged, reserved, status,
                     review_state, media, event_id, payload, source, at, n)
             WHERE source IN (SELECT event_id FROM new)),
        settled AS (
            INSERT INTO settlements (job_id, outcome, charged, released)
            SELECT job_id, outcome, charged, reserved - charged FROM s ORDER BY n
            ON CONFLICT (job_id) DO NOTHING RETURNING job_id),
        done AS (SELECT s.* FROM s JOIN settled USING (job_id)),
        ledger AS (
            INSERT INTO credit_ledger (workspace_id, kind, amount, job_id, reason)
            SELECT d.workspace_id, e.kind, e.amount, d.job_id, d.outcome || ' job'
              FROM done d CROSS JOIN LATERAL (VALUES (1, 'charge', d.charged),
                                                     (2, 'release', d.reserved - d.charged))
                   AS e(k, kind, amount)
             WHERE e.amount > 0 ORDER BY d.n, e.k),
        completed AS (
            UPDATE videos v SET status = d.status, review_state = d.review_state,
                                media = d.media::jsonb, credits_charged = d.charged,
                                completed_at = d.at, updated_at = d.at
              FROM done d WHERE v.id = d.video_id),
        events AS ({outbox.insert_from(
            "(SELECT video_id::text AS key, event_id, payload, n FROM done)", topic="$12",
            eager="$13")}),
        locked AS ({locked_in_id_order("workspaces", "SELECT workspace_id FROM done")}),
        balances AS (
            UPDATE workspaces w SET credits_balance = credits_balance - t.charged,
                                    credits_reserved = credits_reserved - t.reserved
              FROM (SELECT workspace_id, sum(charged) AS charged, sum(reserved) AS reserved
                      FROM done GROUP BY workspace_id) t
             WHERE w.id = t.workspace_id AND {after_locking("locked")})
        SELECT job_id, {outbox.after_insert("events", eager="$13")} FROM done
        """,
        [s.job_id for s, _ in settlements], [s.video_id for s, _ in settlements],
        [s.workspace_id for s, _ in settlements], [s.outcome for s, _ in settlements],
        [s.charge for s, _ in settlements], [s.reserved for s, _ in settlements],
        [s.status for s, _ in settlements], [s.review_state for s, _ in settlements],
        [json.dumps(s.media) if s.media is not None else None for s, _ in settlements],
        write.event_ids, write.payloads, topic, write.eager, consumer, list(event_ids),
        [s.source_event_id for s, _ in settlements], [s.at for s, _ in settlements],
    )
    write.publish(rows[0] if rows else None, topic=topic)
    return {row["job_id"] for row in rows}
