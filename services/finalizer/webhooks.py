"""Webhook deliveries of completion events.

A consumer of `influgen.video.completed.v1` records one delivery per matching endpoint
(one statement per batch); the sender posts due deliveries, signed, and
retries failures with exponential backoff and full jitter until `give_up_at` (hours later,
configurable). Every attempt is logged. The `webhook-id` is the event id on every attempt,
so a receiver can deduplicate."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

import aiohttp
import asyncpg
from aiohttp.abc import AbstractResolver, ResolveResult

from shared.db import DATABASE_ERRORS, Conn, columns
from shared.events import VideoCompleted
from shared.runtime import wait_event
from shared.webhooks import UrlRefused, check_url, headers, refusal

log = logging.getLogger("influgen.finalizer.webhooks")
CONSUMER = "webhooks"


@dataclass(frozen=True)
class WebhookConfig:
    retry_base_seconds: float = 5.0
    retry_cap_seconds: float = 3600.0
    max_age: timedelta = timedelta(hours=24)
    timeout_seconds: float = 10.0
    concurrency: int = 8
    poll_interval: float = 1.0
    allow_private: bool = False


class AddressRefused(OSError):
    """A webhook's host resolved to an address that `shared.webhooks.refusal` refuses."""


class PublicResolver(AbstractResolver):
    """aiohttp's resolver, refusing a host any of whose addresses is not public.

    `check_url` before each delivery gives the reason early, but the client resolves the
    host again to connect, and a DNS server may answer differently the second time (DNS
    rebinding: a public address, then 127.0.0.1). This checks the addresses the client
    connects to. A URL with an IP address is not resolved: `check_url` has judged it."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner if inner is not None else aiohttp.DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            if (reason := refusal(result["host"])) is not None:
                raise AddressRefused(reason)
        return results

    async def close(self) -> None:
        await self._inner.close()


def http_session(cfg: WebhookConfig) -> aiohttp.ClientSession:
    """The HTTP client the sender posts with: connecting only to public addresses unless
    `cfg.allow_private`."""
    if cfg.allow_private:
        return aiohttp.ClientSession()
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(resolver=PublicResolver()))


async def record_deliveries(conn: Conn, events: Sequence[tuple[VideoCompleted, bytes]],
                            cfg: WebhookConfig) -> int:
    """One pending delivery per endpoint of the event's workspace that wants its type and
    existed when the event occurred, for each event (with its payload); one statement,
    atomic on its own. A redelivered event adds nothing: a delivery is unique per endpoint
    and event, and deliveries are kept (so no inbox row is needed, which every completion
    event used to write whether or not its workspace has an endpoint). Returns how many
    deliveries were recorded."""
    fresh: dict[UUID, tuple[VideoCompleted, bytes]] = {}
    for event, payload in events:
        fresh.setdefault(event.event_id, (event, payload))
    if not fresh:
        return 0
    result: str = await conn.execute(
        """
        INSERT INTO webhook_deliveries (id, endpoint_id, event_id, event_type, payload,
                                        give_up_at)
        SELECT gen_random_uuid(), w.id, e.event_id, e.event_type, e.payload,
               now() + $6::interval
          FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::bytea[], $5::timestamptz[])
               WITH ORDINALITY AS e(event_id, event_type, workspace_id, payload, occurred_at, n)
          JOIN webhook_endpoints w
            ON w.workspace_id = e.workspace_id AND w.deleted_at IS NULL
           AND w.created_at <= e.occurred_at
           AND (cardinality(w.event_types) = 0 OR e.event_type = any(w.event_types))
         ORDER BY e.n, w.id
        ON CONFLICT (endpoint_id, event_id) DO NOTHING
        """,
        *columns([(e.event_id, e.event_type, e.workspace_id, payload, e.occurred_at)
                  for e, payload in fresh.values()]), cfg.max_age)
    return int(result.split()[-1])


class WebhookSender:
    def __init__(self, pool: asyncpg.Pool, http: aiohttp.ClientSession,
                 cfg: WebhookConfig) -> None:
        self._pool = pool
        self._http = http
        self._cfg = cfg
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def record(self, conn: Conn, events: Sequence[tuple[VideoCompleted, bytes]]) -> int:
        """Record the deliveries of `events` (`record_deliveries`: one statement, committed
        when it returns, so call it outside a transaction) and wake the sender if there are
        any. A batch no endpoint wants (all of them, for workspaces without webhooks) costs
        no claim: at 200 videos/s it was one statement for nothing per batch of events."""
        recorded = await record_deliveries(conn, events, self._cfg)
        if recorded:
            self.wake()
        return recorded

    async def run(self) -> None:
        while True:
            self._wake.clear()
            try:
                due = await self._claim()
            except DATABASE_ERRORS as exc:
                log.warning("claiming webhook deliveries failed: %r", exc)
                due = []
            if due:
                await asyncio.gather(*(self._deliver(row) for row in due))
                continue
            await wait_event(self._wake, self._cfg.poll_interval)

    async def _claim(self) -> list[asyncpg.Record]:
        # Claiming pushes next_attempt_at past the request's timeout, so that a crash
        # mid-request retries later instead of never, and no two senders post at once.
        rows: list[asyncpg.Record] = await self._pool.fetch(
            """
            WITH due AS (
                SELECT d.id FROM webhook_deliveries d
                 WHERE d.state = 'pending' AND d.next_attempt_at <= now()
                 ORDER BY d.next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
            UPDATE webhook_deliveries d
               SET next_attempt_at = now() + make_interval(secs => $2)
              FROM due, webhook_endpoints e
             WHERE d.id = due.id AND e.id = d.endpoint_id
            RETURNING d.id, d.event_id, d.payload, d.attempts, d.give_up_at, e.url, e.secret,
                      e.deleted_at, ARRAY(  -- replaced secrets that still sign
                          SELECT p->>'secret' FROM jsonb_array_elements(e.previous_secrets) x(p)
                           WHERE (p->>'expires_at')::timestamptz > now()) AS previous_secrets
            """,
            self._cfg.concurrency, self._cfg.timeout_seconds * 3)
        return rows

    async def _deliver(self, row: Any) -> None:
        status: int | None = None
        error: str | None = None
        started = time.monotonic()
        if row["deleted_at"] is not None:
            await self._finish(row, "failed", None, "the endpoint was removed", 0, record=False)
            return
        body = bytes(row["payload"])
        try:
            await asyncio.to_thread(check_url, row["url"], allow_private=self._cfg.allow_private)
            async with self._http.post(
                row["url"], data=body,
                headers=headers([row["secret"], *row["previous_secrets"]],
                                str(row["event_id"]), int(time.time()), body),
                timeout=aiohttp.ClientTimeout(total=self._cfg.timeout_seconds),
                allow_redirects=False,
            ) as resp:
                status = resp.status
                await resp.read()
        except UrlRefused as exc:
            error = f"refused: {exc}"
        except aiohttp.ClientConnectorError as exc:
            refused = isinstance(exc.os_error, AddressRefused)
            error = f"refused: {exc.os_error}" if refused else repr(exc)[:500]
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = repr(exc)[:500]
        except Exception as exc:
            # One bad row (say, a secret that does not decode) is that delivery's failure:
            # it must not end the sender, and with it the process, again at every restart.
            log.exception("webhook delivery %s failed unexpectedly", row["id"])
            error = f"internal error: {exc!r}"[:500]
        elapsed = int((time.monotonic() - started) * 1000)
        if status is not None and 200 <= status < 300:
            await self._finish(row, "succeeded", status, None, elapsed)
            return
        attempts = int(row["attempts"]) + 1
        delay = random.uniform(0, min(self._cfg.retry_cap_seconds,
                                      self._cfg.retry_base_seconds * 2 ** attempts))
        await self._finish(row, "pending", status, error or f"HTTP {status}", elapsed,
                           retry_in=delay)

    async def _finish(self, row: Any, state: str, status: int | None, error: str | None,
                      elapsed_ms: int, *, retry_in: float = 0.0, record: bool = True) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            if record:
                await conn.execute(
                    "INSERT INTO webhook_attempts (delivery_id, status_code, error, duration_ms)"
                    " VALUES ($1, $2, $3, $4)", row["id"], status, error, elapsed_ms)
            await conn.execute(
                """
                UPDATE webhook_deliveries
                   SET attempts = attempts + $6, last_status_code = $3, last_error = $4,
                       state = CASE WHEN $2 = 'pending' AND now() + make_interval(secs => $5)
                                         > give_up_at THEN 'failed' ELSE $2 END,
                       next_attempt_at = now() + make_interval(secs => $5),
                       delivered_at = CASE WHEN $2 = 'succeeded' THEN now() END
                 WHERE id = $1
                """,
                row["id"], state, status, error, retry_in, 1 if record else 0)
