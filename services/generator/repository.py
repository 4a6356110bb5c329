"""SQL of the generator: jobs are claimed with leases, so several processes share them and
the jobs of a dead process are taken over when its lease runs out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from shared import inbox, outbox
from shared.db import NO_FLUSH_WAIT, Conn
from shared.events import TOPIC_GENERATED, JobSpec, VideoGenerationSucceeded

_TERMINAL = ("succeeded", "failed", "canceled")


@dataclass(frozen=True)
class Slots:
    """Free job slots of one process, by provider, for `accept` to fill with the jobs it
    accepts: claimed for `owner` with a lease of `lease_seconds`."""

    owner: str
    lease_seconds: float
    free: dict[str, int]


@dataclass(frozen=True)
class Accepted:
    #: providers of jobs accepted now and left queued (no free slot): claim them later
    queued: set[str]
    #: jobs accepted now and claimed into the free slots (the columns `claim` returns)
    claimed: list[asyncpg.Record]


async def accept(conn: Conn, *, consumer: str, events: Sequence[tuple[UUID, JobSpec]],
                 slots: Slots | None = None, flush_wait: bool = True) -> Accepted:
    """Record `(event_id, spec)` job events in `consumer`'s inbox and the specs of those
    seen for the first time on their jobs, which become claimable (a job accepted before
    is left as it is); one statement. With `slots`, the statement also claims jobs it
    accepts into them (per provider, in the batch's order; their videos become
    `generating`), as
    `claim` would a moment later: a statement, a row version and a wake-up fewer per job.
    Only outside a transaction: a claim rolled back after its job started would leave it
    driven by a process that does not hold it.

    Without `flush_wait` the commit does not wait for the disk (`shared.db.NO_FLUSH_WAIT`;
    inside a transaction, that transaction's commit would not either). A crash of PostgreSQL
    may then lose the accept: the caller must not acknowledge the events (commit their Kafka
    offsets) before a `shared.db.WalFlusher` flush, so that they come again. Until then
    nothing outside the database depends on it: a job's provider is called only after
    `mark_submitting`, whose synchronous commit flushes the accept too, and the sandbox's
    success is not durable either (see `succeed`)."""
    free = slots.free if slots is not None else {}
    take = ("(s.take AND j.state = 'queued' AND NOT j.cancel_requested"
            " AND j.deadline_at > now() AND j.next_attempt_at IS NULL)")
    rows = await conn.fetch(
        f"""
        WITH new AS ({inbox.record("$1", "$2")}),
        s AS (
            SELECT s.event_id, s.id, s.spec,
                   row_number() OVER (PARTITION BY s.provider ORDER BY s.n)
                       <= coalesce(f.free, 0) AS take
              FROM unnest($2::uuid[], $3::uuid[], $4::text[], $5::text[])
                       WITH ORDINALITY AS s(event_id, id, spec, provider, n)
              LEFT JOIN unnest($6::text[], $7::int[]) AS f(provider, free)
                ON f.provider = s.provider
             WHERE s.event_id IN (SELECT event_id FROM new)),
        accepted AS (
            UPDATE jobs j
               SET spec = s.spec::jsonb, accepted_at = now(), updated_at = now(),
                   state = CASE WHEN {take} THEN 'submitted' ELSE j.state END,
                   lease_owner = CASE WHEN {take} THEN $8 ELSE j.lease_owner END,
                   lease_expires_at = CASE WHEN {take}
                       THEN now() + make_interval(secs => $9) ELSE j.lease_expires_at END,
                   attempts = j.attempts + CASE WHEN {take} THEN 1 ELSE 0 END
              FROM s WHERE j.id = s.id AND j.accepted_at IS NULL
            -- A job not accepted before had no lease: one held by `owner` was taken now.
            RETURNING j.id, j.spec, j.state, j.attempts, j.provider_job_id, j.deadline_at,
                      j.cancel_requested, j.workspace_id, j.provider, j.video_id,
                      coalesce(j.lease_owner = $8, false) AS claimed),
        generating AS (
            UPDATE videos SET status = 'generating', updated_at = now()
             WHERE id IN (SELECT video_id FROM accepted WHERE claimed) AND status = 'queued')
        SELECT *{"" if flush_wait else ", " + NO_FLUSH_WAIT} FROM accepted
        """,
        consumer, [event_id for event_id, _ in events],
        [spec.job_id for _, spec in events], [spec.model_dump_json() for _, spec in events],
        [spec.provider for _, spec in events], list(free), list(free.values()),
        slots.owner if slots is not None else None,
        slots.lease_seconds if slots is not None else 0.0,
    )
    return Accepted(queued={row["provider"] for row in rows if not row["claimed"]},
                    claimed=[row for row in rows if row["claimed"]])


_RUNNABLE = "accepted_at IS NOT NULL AND NOT cancel_requested AND deadline_at > now()"


async def claim(
    pool: asyncpg.Pool | Conn, *, owner: str, limit: int, lease_seconds: float,
    provider: str | None = None, exclude: Sequence[str] = (),
) -> list[asyncpg.Record]:
    """Take up to `limit` runnable jobs of `provider` (or of any provider not in `exclude`):
    first active jobs whose lease expired (their process died), then queued ones, oldest
    first. Two scans, each served by its own partial index; one statement (the videos
    become `generating` in it too), so one round trip and no explicit transaction."""
    arg: str | list[str]
    queued_of = """
            SELECT id, created_at FROM jobs
             WHERE state = 'queued' AND provider = {provider} AND {runnable}
               AND (next_attempt_at IS NULL OR next_attempt_at <= now())
             ORDER BY created_at LIMIT $3
             FOR UPDATE SKIP LOCKED"""
    if provider is not None:
        which, arg = "provider = $4", provider
        queued = queued_of.format(provider="$4", runnable=_RUNNABLE)
    else:
        which, arg = "NOT (provider = ANY($4::text[]))", list(exclude)
        # The providers that have queued jobs, read off the index one at a time (a loose
        # index scan), and the oldest jobs of those not excluded. A filter on the provider
        # instead scans every queued job (all the queue's index, or the table when most
        # jobs are queued): 10 ms with 20,000 queued, at every poll, for jobs that are
        # almost never there.
        queued = f"""
            WITH RECURSIVE present AS (
                (SELECT provider FROM jobs WHERE state = 'queued' ORDER BY provider LIMIT 1)
                UNION ALL
                SELECT (SELECT j.provider FROM jobs j
                         WHERE j.state = 'queued' AND j.provider > p.provider
                         ORDER BY j.provider LIMIT 1)
                  FROM present p WHERE p.provider IS NOT NULL)
            SELECT x.id, x.created_at FROM present p CROSS JOIN LATERAL ({
                queued_of.format(provider="p.provider", runnable=_RUNNABLE)}) x
             WHERE NOT (p.provider = ANY($4::text[]))
             ORDER BY x.created_at LIMIT $3"""
    rows: list[asyncpg.Record] = await pool.fetch(
        f"""
        WITH expired AS (
            SELECT id FROM jobs
             WHERE state IN ('submitted', 'running') AND lease_expires_at < now()
               AND {which} AND {_RUNNABLE}
             ORDER BY lease_expires_at LIMIT $3
             FOR UPDATE SKIP LOCKED),
        queued AS ({queued}),
        picked AS (
            SELECT id FROM (SELECT id, 0 AS o FROM expired
                            UNION ALL SELECT id, 1 FROM queued) x
             ORDER BY o LIMIT $3),
        claimed AS (
            UPDATE jobs j
               SET lease_owner = $1,
                   lease_expires_at = now() + make_interval(secs => $2),
                   state = CASE WHEN j.state = 'queued' THEN 'submitted' ELSE j.state END,
                   attempts = j.attempts + 1,
                   updated_at = now()
              FROM picked WHERE j.id = picked.id
            RETURNING j.id, j.spec, j.state, j.attempts, j.provider_job_id, j.deadline_at,
                      j.cancel_requested, j.workspace_id, j.provider, j.video_id),
        generating AS (
            UPDATE videos SET status = 'generating', updated_at = now()
             WHERE id IN (SELECT video_id FROM claimed) AND status = 'queued')
        SELECT * FROM claimed
        """,
        owner, lease_seconds, limit, arg,
    )
    return rows


async def expire_leases(pool: asyncpg.Pool, *, owner: str) -> int:
    """End the leases `owner` holds: called by a process that starts under a stable instance
    id, whose earlier incarnation (dead, since two live processes never share an id) left
    them, so that its jobs are taken over now rather than when the leases run out."""
    result: str = await pool.execute(
        "UPDATE jobs SET lease_expires_at = now() - interval '1 second', updated_at = now()"
        " WHERE lease_owner = $1 AND state IN ('submitted', 'running')", owner)
    return int(result.split()[-1])


async def renew(
    conn: Conn, *, job_id: UUID, owner: str, lease_seconds: float,
    progress: int | None = None, state: str | None = None,
) -> asyncpg.Record | None:
    """Extend the lease (and record progress); None when the lease was lost."""
    row: asyncpg.Record | None = await conn.fetchrow(
        """
        UPDATE jobs SET lease_expires_at = now() + make_interval(secs => $3),
                        progress = GREATEST(progress, COALESCE($4, progress)),
                        state = COALESCE($5, state), updated_at = now()
         WHERE id = $1 AND lease_owner = $2 AND state IN ('submitted', 'running')
        RETURNING cancel_requested
        """,
        job_id, owner, lease_seconds, progress, state,
    )
    return row


async def set_provider_job(
    conn: Conn, *, job_id: UUID, owner: str, provider_job_id: str
) -> None:
    await conn.execute(
        "UPDATE jobs SET provider_job_id = $3, updated_at = now()"
        " WHERE id = $1 AND lease_owner = $2",
        job_id, owner, provider_job_id,
    )


_FINISH = """
    UPDATE jobs SET state = $3, error = $4, finished_at = now(), updated_at = now(),
                    progress = CASE WHEN $3 = 'succeeded' THEN 100 ELSE progress END,
                    lease_owner = NULL, lease_expires_at = NULL
     WHERE id = any($1::uuid[]) AND lease_owner = $2
       AND state IN ('submitted', 'running')
    RETURNING id"""


async def finish(
    conn: Conn, *, job_ids: Sequence[UUID], owner: str, state: str,
    error: dict[str, Any] | None = None,
) -> set[UUID]:
    """Move the jobs to a terminal state, those this process still holds; their ids."""
    rows = await conn.fetch(_FINISH, list(job_ids), owner, state, error)
    return {row["id"] for row in rows}


async def succeed(conn: Conn | asyncpg.Pool, *, owner: str,
                  events: Sequence[VideoGenerationSucceeded],
                  publisher: outbox.Publisher | None = None,
                  flush_wait: bool = True) -> set[UUID]:
    """End the events' jobs as succeeded, those this process still holds, and put their
    events into the outbox; one statement (atomic without a transaction of its own), whose
    events `publisher` sends at once (see `shared.outbox.OutboxWrite`). The ids of the jobs
    ended.

    Without `flush_wait` the commit does not wait for the disk (`shared.db.NO_FLUSH_WAIT`):
    the events' only reader, the finalizer, settles with a synchronous commit, which flushes
    the WAL up to it and so this commit too; if PostgreSQL crashes before that, the job is
    left running under a lease that runs out, and is driven again (the finalizer settles a
    job once, whichever of its outcomes comes first)."""
    write = outbox.OutboxWrite(conn, [(str(e.video_id), e) for e in events], publisher)
    rows = await conn.fetch(
        f"""
        WITH done AS ({_FINISH}),
        e AS (SELECT * FROM unnest($1::uuid[], $5::text[], $6::uuid[], $7::bytea[])
                  WITH ORDINALITY AS e(job_id, key, event_id, payload, n)
               WHERE job_id IN (SELECT id FROM done)),
        events AS ({outbox.insert_from("e", topic="$8", eager="$9")})
        SELECT id, {outbox.after_insert("events", eager="$9")}
               {"" if flush_wait else ", " + NO_FLUSH_WAIT} FROM done
        """,
        [e.job_id for e in events], owner, "succeeded", None,
        write.keys, write.event_ids, write.payloads, TOPIC_GENERATED, write.eager,
    )
    write.publish(rows[0] if rows else None, topic=TOPIC_GENERATED)
    return {row["id"] for row in rows}


async def release(conn: Conn, *, job_id: UUID, owner: str, delay: float, resubmit: bool,
                  error: dict[str, Any]) -> bool:
    """Give the job back to the queue, to retry after `delay` seconds. With `resubmit`, the
    provider's job is forgotten so that the retry submits a new one."""
    row = await conn.fetchrow(
        """
        UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires_at = NULL,
                        next_attempt_at = now() + make_interval(secs => $3), updated_at = now(),
                        error = $5,
                        provider_job_id = CASE WHEN $4 THEN NULL ELSE provider_job_id END,
                        submit_started_at = CASE WHEN $4 THEN NULL ELSE submit_started_at END
         WHERE id = $1 AND lease_owner = $2 AND state IN ('submitted', 'running')
        RETURNING id
        """,
        job_id, owner, delay, resubmit, error,
    )
    return row is not None


async def mark_submitting(conn: Conn, *, job_id: UUID, owner: str) -> str | None:
    """Record that a submission starts; the time an earlier one started, if any."""
    async with conn.transaction():
        earlier = await conn.fetchval(
            "SELECT submit_started_at FROM jobs WHERE id = $1 AND lease_owner = $2 FOR UPDATE",
            job_id, owner,
        )
        await conn.execute(
            "UPDATE jobs SET submit_started_at = now() WHERE id = $1 AND lease_owner = $2",
            job_id, owner,
        )
    return earlier.isoformat() if earlier is not None else None


async def sweep(conn: Conn, *, limit: int = 100) -> list[asyncpg.Record]:
    """End the jobs nobody is driving that were canceled or are past their deadline.

    Jobs with a live lease are left to their worker, which watches both itself."""
    # Two scans, each on an index of its own that holds only what it looks for (overdue:
    # a range of jobs_to_sweep; canceled: jobs_cancel_requested), not one over every
    # unfinished job.
    unleased = "(lease_expires_at IS NULL OR lease_expires_at < now())"
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""
        WITH overdue AS (
            SELECT id, deadline_at FROM jobs
             WHERE state IN ('queued', 'submitted', 'running') AND deadline_at <= now()
               AND {unleased}
             ORDER BY deadline_at LIMIT $1
             FOR UPDATE SKIP LOCKED),
        canceled AS (
            SELECT id, deadline_at FROM jobs
             WHERE cancel_requested AND state IN ('queued', 'submitted', 'running')
               AND {unleased} AND id NOT IN (SELECT id FROM overdue)
             ORDER BY deadline_at LIMIT $1
             FOR UPDATE SKIP LOCKED),
        doomed AS (
            SELECT id FROM (SELECT * FROM overdue UNION ALL SELECT * FROM canceled) x
             ORDER BY deadline_at LIMIT $1)
        UPDATE jobs j
           SET state = CASE WHEN j.cancel_requested THEN 'canceled' ELSE 'failed' END,
               error = CASE WHEN j.cancel_requested THEN NULL ELSE jsonb_build_object(
                   'code', 'deadline_exceeded', 'retryable', false,
                   'message', 'the job did not finish before its deadline ('
                              || to_char(j.deadline_at, 'YYYY-MM-DD"T"HH24:MI:SS"Z"') || ')')
               END,
               finished_at = now(), updated_at = now(), lease_owner = NULL,
               lease_expires_at = NULL
          FROM doomed WHERE j.id = doomed.id
        RETURNING j.id, j.video_id, j.workspace_id, j.provider, j.provider_job_id, j.state,
                  j.error
        """,
        limit,
    )
    return rows
