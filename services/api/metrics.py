"""Prometheus metrics of the api: requests by route and status, and their latency; and,
read from the database at each scrape, the state of the pipeline an operator alerts on
(jobs waiting and how long, events not yet on Kafka, events Kafka refused, webhook
deliveries pending)."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import asyncpg
from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from services.api.keys import POOL
from services.api.openapi import operation
from shared.db import DATABASE_ERRORS

log = logging.getLogger("influgen.api")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: One statement; each count is over a partial index or a table that stays small.
_PIPELINE = """
SELECT (SELECT count(*) FROM jobs WHERE state = 'queued') AS queued,
       (SELECT count(*) FROM jobs WHERE state IN ('submitted', 'running')) AS active,
       (SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0) FROM jobs
         WHERE state = 'queued') AS oldest_queued,
       (SELECT count(*) FROM outbox) AS outbox,
       (SELECT coalesce(extract(epoch FROM now() - min(created_at)), 0) FROM outbox)
         AS outbox_oldest,
       (SELECT count(*) FROM outbox_dead) AS outbox_dead,
       (SELECT count(*) FROM webhook_deliveries WHERE state = 'pending') AS webhooks_pending
"""


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("influgen_api_requests_total", "HTTP requests",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("influgen_api_request_seconds", "HTTP request latency",
                                 ["method", "route"], registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                          0.5, 1, 2.5, 5))
        r = self.registry
        self.read_ok = Gauge("influgen_pipeline_state_up", "1 if the last scrape read the "
                             "pipeline's state from the database, else 0", registry=r)
        self.jobs = Gauge("influgen_jobs", "Jobs not finished, by state (queued; active: "
                          "submitted or running)", ["state"], registry=r)
        self.oldest_queued = Gauge("influgen_jobs_oldest_queued_seconds",
                                   "Age of the oldest queued job (0: none)", registry=r)
        self.outbox = Gauge("influgen_outbox_pending",
                            "Events committed and not yet acknowledged by Kafka", registry=r)
        self.outbox_oldest = Gauge("influgen_outbox_oldest_seconds",
                                   "Age of the oldest such event (0: none)", registry=r)
        self.outbox_dead = Gauge("influgen_outbox_dead", "Events Kafka refused for good "
                                 "(table outbox_dead, for an operator)", registry=r)
        self.webhooks_pending = Gauge("influgen_webhook_deliveries_pending",
                                      "Webhook deliveries not yet made or given up",
                                      registry=r)

    async def read_pipeline(self, pool: asyncpg.Pool) -> None:
        try:
            row = await pool.fetchrow(_PIPELINE)
        except DATABASE_ERRORS as exc:
            log.warning("metrics: the pipeline's state could not be read (%r)", exc)
            self.read_ok.set(0)
            return
        assert row is not None
        self.jobs.labels("queued").set(row["queued"])
        self.jobs.labels("active").set(row["active"])
        self.oldest_queued.set(float(row["oldest_queued"]))
        self.outbox.set(row["outbox"])
        self.outbox_oldest.set(float(row["outbox_oldest"]))
        self.outbox_dead.set(row["outbox_dead"])
        self.webhooks_pending.set(row["webhooks_pending"])
        self.read_ok.set(1)

    def middleware(self) -> Middleware:
        @web.middleware
        async def measure(request: web.Request, handler: Handler) -> web.StreamResponse:
            started = time.perf_counter()
            status = 500
            try:
                response = await handler(request)
                status = response.status
                return response
            except web.HTTPException as exc:
                status = exc.status
                raise
            finally:
                info = request.match_info.route.resource
                route = info.canonical if info is not None else "unmatched"
                self.requests.labels(request.method, route, str(status)).inc()
                self.latency.labels(request.method, route).observe(
                    time.perf_counter() - started)

        return measure


METRICS = web.AppKey("metrics", ApiMetrics)
routes = web.RouteTableDef()


@routes.get("/metrics")
@operation(summary="Prometheus metrics", responses={200: None}, auth=None, tags=("ops",))
async def metrics(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    await metrics.read_pipeline(request.app[POOL])
    body = generate_latest(metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
