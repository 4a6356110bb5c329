"""The pipeline benchmark's floor: the least three hops cost on this machine, broker and
database, measured in the same run as the stack.

Three processes, as the stack has three services: an aiohttp handler that inserts a row
(one statement) and sends its id on to a topic, answering 202; two relays that each
consume a batch, update its rows (one statement) and send every record on to the next
topic. The load generator is the pipeline benchmark's own (`bench.pipeline.timed_load`):
the same requests per second, the same consumer, latency from the 202 to the record on the
last topic. Same client libraries and settings as the services (uvloop, aiokafka with
idempotent `acks=all` producers, 100 ms fetch wait, a 20 ms poll of up to 100 records).

None of the product's work: no validation, credits, idempotency, inbox, live status or
outbox, so a send is not tied to its commit (a record can be lost, or sent for a row that
was rolled back): the floor is what the machine allows a Python pipeline of this shape,
not a design to copy. What it says: how much of the pipeline's latency at a rate comes
with the machine (three processes, three Kafka hops, a statement each) rather than with the
stack. The processes are this module: `python -m bench.floor serve|relay ...`; its table
(`bench_floor_rows`) and topics (`influgen.bench.floor.*`) exist only while it runs, also on
an existing server or cluster (`DATABASE_URL`, `KAFKA_BOOTSTRAP_SERVERS`)."""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import psutil
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from bench.common import cpu_seconds, cpu_spent, process_cpu
from devstack.proc import free_port, terminate
from devstack.stack import Stack
from shared.consumer import MAX_BATCH, POLL_WAIT_MS
from shared.kafka import ensure_topics
from shared.runtime import mark_ready
from shared.runtime import run as run_on_uvloop
from shared.settings import CommonSettings

TABLE = "bench_floor_rows"
TOPICS = ("influgen.bench.floor.a", "influgen.bench.floor.b", "influgen.bench.floor.c")
#: The services' default (their subscribers' poll and batch come from `shared.consumer`).
FETCH_MAX_WAIT_MS: int = CommonSettings.model_fields["kafka_fetch_max_wait_ms"].default


def _producer(bootstrap: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all",
                            linger_ms=0)


async def serve(bootstrap: str, dsn: str, target: str, port: int, ready: Path) -> None:
    """The intake hop: insert the request's row, send it on, answer 202."""
    pool = await asyncpg.create_pool(dsn, min_size=4, max_size=8)
    producer = _producer(bootstrap)
    await producer.start()

    async def post(request: web.Request) -> web.Response:
        body = await request.read()
        row_id = uuid.uuid4()
        await pool.execute(f"INSERT INTO {TABLE} (id, hop, body) VALUES ($1, 0, $2)",
                           row_id, body)
        message = json.dumps({"id": str(row_id)}).encode()
        await producer.send(target, message, key=row_id.bytes)  # queued; acked later
        return web.json_response({"id": str(row_id)}, status=202)

    app = web.Application()
    app.router.add_post("/floor", post)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    mark_ready(ready)
    await asyncio.Event().wait()


async def relay(bootstrap: str, dsn: str, source: str, target: str, hop: int,
                ready: Path) -> None:
    """A pipeline hop: a batch's rows updated in one statement, each record sent on."""
    conn = await asyncpg.connect(dsn)
    producer = _producer(bootstrap)
    await producer.start()
    consumer = AIOKafkaConsumer(source, bootstrap_servers=bootstrap, group_id=f"floor-{hop}",
                                fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                                auto_offset_reset="earliest")  # (fresh topics)
    await consumer.start()
    joined = False
    while True:
        batches = await consumer.getmany(timeout_ms=POLL_WAIT_MS, max_records=MAX_BATCH)
        if not joined and consumer.assignment():
            mark_ready(ready)
            joined = True
        records = [r for rs in batches.values() for r in rs]
        if not records:
            continue
        ids = [uuid.UUID(json.loads(r.value)["id"]) for r in records]
        await conn.execute(f"UPDATE {TABLE} SET hop = $2 WHERE id = any($1::uuid[])", ids, hop)
        for record in records:
            await producer.send(target, record.value, key=record.key)


async def _execute(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _prepare(bootstrap: str, dsn: str, partitions: int) -> None:
    await _execute(dsn, f"DROP TABLE IF EXISTS {TABLE}",
                   f"CREATE TABLE {TABLE} (id uuid PRIMARY KEY, hop int NOT NULL,"
                   " body bytea NOT NULL)")
    await ensure_topics(bootstrap, partitions, TOPICS)


async def _clean_up(bootstrap: str, dsn: str) -> None:
    await _execute(dsn, f"DROP TABLE IF EXISTS {TABLE}")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000)
    await admin.start()
    try:
        await admin.delete_topics(list(TOPICS))
    finally:
        await admin.close()


def _cpu_seconds(stack: Stack, procs: list[subprocess.Popen[bytes]]) -> dict[str, float]:
    spent = {name: seconds for name, seconds in cpu_seconds(stack).items()
             if name in ("kafka", "postgres")}
    spent["floor processes"] = sum(process_cpu(psutil.Process(p.pid)) for p in procs)
    return spent


def floor_pipeline(stack: Stack, rates: tuple[int, ...]) -> list[dict[str, Any]]:
    """The floor on `stack`'s broker and database (its services idle meanwhile): latency
    at each of `rates`, and the CPU the floor's processes, the broker and the database
    spent per job (the load generator's not counted, as in the stack's figures)."""
    from bench.pipeline import WARM_UP_RATE, timed_load  # (it imports this module)

    bootstrap, dsn = stack.bootstrap, stack.database_url
    asyncio.run(_prepare(bootstrap, dsn, stack.topic_partitions))
    procs: list[subprocess.Popen[bytes]] = []
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="influgen-floor-") as tmp:
        port = free_port()
        common = ["--bootstrap", bootstrap, "--dsn", dsn]
        commands = [
            ["serve", *common, "--target", TOPICS[0], "--port", str(port)],
            ["relay", *common, "--source", TOPICS[0], "--target", TOPICS[1], "--hop", "1"],
            ["relay", *common, "--source", TOPICS[1], "--target", TOPICS[2], "--hop", "2"],
        ]
        try:
            for n, args in enumerate(commands):
                ready = Path(tmp) / f"{n}.ready"
                procs.append(subprocess.Popen(
                    [sys.executable, "-m", "bench.floor", *args, "--ready", str(ready)],
                    stdin=subprocess.DEVNULL, start_new_session=True))
                deadline = time.monotonic() + 60
                while not ready.exists():
                    if procs[-1].poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"the floor's {args[0]} process did not start")
                    time.sleep(0.05)
            url = f"http://127.0.0.1:{port}/floor"
            load = functools.partial(timed_load, url, b"{}", {}, bootstrap, TOPICS[2],
                                     _row_id)
            asyncio.run(load(WARM_UP_RATE, seconds=5))  # connections and caches warm
            for rate in rates:
                before = _cpu_seconds(stack, procs)
                result = asyncio.run(load(rate))
                cpu = cpu_spent(before, _cpu_seconds(stack, procs),
                                scale=1000 / result["jobs"])
                results.append({"rate": rate, **result,
                                "cpu_ms_per_job": {**cpu, "total": round(sum(cpu.values()), 1)}})
        finally:
            for proc in procs:
                terminate(proc.pid, timeout=10)
            asyncio.run(_clean_up(bootstrap, dsn))
    return results


def _row_id(value: dict[str, Any]) -> str:
    return str(value["id"])


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    parser.add_argument("role", choices=("serve", "relay"))
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--ready", type=Path, required=True)
    parser.add_argument("--source", default="")
    parser.add_argument("--target", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--hop", type=int, default=1)
    args = parser.parse_args(argv)
    if args.role == "serve":
        run_on_uvloop(serve(args.bootstrap, args.dsn, args.target, args.port, args.ready))
    else:
        run_on_uvloop(relay(args.bootstrap, args.dsn, args.source, args.target, args.hop,
                            args.ready))


if __name__ == "__main__":
    main(sys.argv[1:])
