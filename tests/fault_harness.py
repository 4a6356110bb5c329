"""Fault injection with nothing lost (issue 7), modelled on Kafka's replication tests.

A whole stack of its own (PostgreSQL, Kafka, the three services) takes a steady load of
uniquely identified requests, over HTTP (each with its own Idempotency-Key, retried with it
as a production client would) and as Kafka request events (each with its own request_id,
re-sent until the broker acknowledges it). Some requests use a hosted model whose stand-in
provider fails a share of calls at random; some are canceled soon after they are accepted.
Meanwhile the harness, in turn, `kill -9`s the api, the generator and the finalizer,
`kill -9`s the Kafka broker and stops PostgreSQL at once (`-m immediate`), and brings each back
the way `make up` does (`Stack.up`: start what is not running). After each fault a probe
request measures the time until a new request again becomes a finished video.

Then the load stops, the pipeline drains and the audit checks, from the database and the
completion topic: every accepted request reached exactly one terminal state; no item that no
request asked for and no request with two; one settlement per job, consistent with its
outcome, and the ledger invariant per workspace; every terminal state on
`influgen.video.completed.v1` under one `event_id`.

`make test-faults` runs the full version (three rounds) and writes
`bench/results/faults.json`; `tests/e2e/test_faults.py` runs one round inside `make test`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import shutil
import signal
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import aiohttp
import asyncpg
from aiohttp.test_utils import TestServer
from aiokafka import AIOKafkaProducer

from devstack.proc import free_port, pid_alive
from devstack.stack import SERVICES, Stack
from shared.events import FINAL_STATUSES, TOPIC_COMPLETED, TOPIC_REQUESTED
from tests.audit import ledger_problems, settlement_problems
from tests.catalogs import small_hosted_catalog
from tests.kafka_tools import read_events
from tests.standins.replicate import TOKEN, ReplicateStandIn, Script

SCENE = ("Walking through a marble hotel lobby at golden hour, subtle camera push-in, "
         "confident luxury travel energy")
RETRYABLE = {409, 429, 500, 502, 503, 504}
#: How long one Kafka send (or the producer's final flush) may take before it is retried.
SEND_TIMEOUT_SECONDS = 10.0
log = logging.getLogger("influgen.faults")


@dataclass
class Config:
    rounds: int = 3
    http_per_second: float = 12.0
    kafka_per_second: float = 4.0
    #: load between the recovery of one fault and the next fault
    between_faults_seconds: float = 3.0
    #: how long a fault lasts before the harness brings the component back
    outage_seconds: float = 1.0
    cancel_share: float = 0.05
    hosted_share: float = 0.15
    local_share: float = 0.05
    provider_fail_rate: float = 0.3
    drain_timeout: float = 300.0
    #: a request that is not accepted within this time is given up (and reported)
    give_up_seconds: float = 180.0
    seed: int = 20261124


@dataclass
class Fault:
    target: str
    round: int
    #: seconds from the kill until the component runs and is ready again
    restarted_s: float = 0.0
    #: seconds from the kill until a request sent after it had become a finished video
    recovered_s: float = 0.0


@dataclass
class Ledger:
    """What the harness sent and what it was told."""

    http_sent: dict[str, str] = field(default_factory=dict)  # key -> workspace
    http_accepted: dict[str, str] = field(default_factory=dict)  # key -> video id
    http_refused: dict[str, str] = field(default_factory=dict)  # key -> reason
    http_given_up: set[str] = field(default_factory=set)
    kafka_sent: dict[str, str] = field(default_factory=dict)  # request_id -> workspace
    kafka_acked: set[str] = field(default_factory=set)
    kafka_given_up: set[str] = field(default_factory=set)
    cancels: int = 0
    unexpected: list[str] = field(default_factory=list)
    retries: Counter[str] = field(default_factory=Counter)


class Harness:
    def __init__(self, cfg: Config, stack: Stack, standin: ReplicateStandIn,
                 session: aiohttp.ClientSession) -> None:
        self.cfg = cfg
        self.stack = stack
        self.standin = standin
        self.session = session
        self.rng = random.Random(cfg.seed)
        self.sent = Ledger()
        self.faults: list[Fault] = []
        self.keys: dict[str, str] = {}  # workspace id -> api key
        self.characters: dict[str, list[str]] = {}
        self.sandbox = self.real = ""
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop_load = asyncio.Event()

    # --- setup -----------------------------------------------------------------------

    async def _admin(self, path: str, body: Any) -> Any:
        async with self.session.post(self.stack.api_url + path, json=body, headers={
                "Authorization": f"Bearer {self.stack.admin_token}"}) as resp:
            assert resp.status == 201, await resp.text()
            return await resp.json()

    async def setup(self) -> None:
        for sandbox in (True, False):
            ws = await self._admin("/v1/admin/workspaces", {
                "name": f"faults-{'sandbox' if sandbox else 'real'}", "credits": 10_000_000,
                "sandbox": sandbox})
            self.keys[ws["id"]] = ws["api_key"]
            if sandbox:
                self.sandbox = ws["id"]
            else:
                self.real = ws["id"]
            chars = []
            for mode in ("manual", "autopilot"):
                async with self.session.post(
                        self.stack.api_url + "/v1/characters",
                        json={"name": f"{mode} character", "review_mode": mode},
                        headers={"Authorization": f"Bearer {ws['api_key']}"}) as resp:
                    assert resp.status == 201, await resp.text()
                    chars.append((await resp.json())["id"])
            self.characters[ws["id"]] = chars

    def request(self, i: int) -> tuple[str, dict[str, Any]]:
        """The i-th request: its workspace and body (sandbox, hosted or local model)."""
        roll = self.rng.random()
        if roll < self.cfg.hosted_share:
            ws, extra = self.real, {"model_id": "replicate-video-1", "duration_seconds": 5}
        elif roll < self.cfg.hosted_share + self.cfg.local_share:
            ws, extra = self.real, {"duration_seconds": 5, "quality_tier": "draft"}
        else:
            ws, extra = self.sandbox, {"duration_seconds": self.rng.choice([5, 8, 15])}
        character = self.characters[ws][i % 2]
        return ws, {"character_id": character, "scene_description": f"{SCENE} #{i}", **extra}

    # --- load ------------------------------------------------------------------------

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def http_load(self) -> None:
        i = 0
        while not self._stop_load.is_set():
            ws, body = self.request(i)
            key = f"http-{i}"
            self.sent.http_sent[key] = ws
            self._spawn(self.post_video(ws, key, body, cancel=self.rng.random()
                                        < self.cfg.cancel_share))
            i += 1
            await asyncio.sleep(1 / self.cfg.http_per_second)

    async def post_video(self, ws: str, key: str, body: dict[str, Any], *,
                         cancel: bool = False) -> str | None:
        """POST until accepted, refused or given up, with the same Idempotency-Key."""
        deadline = time.monotonic() + self.cfg.give_up_seconds
        headers = {"Authorization": f"Bearer {self.keys[ws]}", "Idempotency-Key": key}
        while time.monotonic() < deadline:
            try:
                async with self.session.post(self.stack.api_url + "/v1/videos", json=body,
                                             headers=headers) as resp:
                    data = await self._answer(resp)
                    if resp.status == 202:
                        video_id: str = data["id"]
                        self.sent.http_accepted[key] = video_id
                        if cancel:
                            self._spawn(self.cancel(ws, video_id))
                        return video_id
                    if resp.status not in RETRYABLE:
                        self.sent.http_refused[key] = f"{resp.status}: {data}"
                        return None
                    self.sent.retries[f"http {resp.status}"] += 1
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self.sent.retries[f"http {type(exc).__name__}"] += 1
            await asyncio.sleep(0.2 + self.rng.random() * 0.3)
        self.sent.http_given_up.add(key)
        return None

    async def _answer(self, resp: aiohttp.ClientResponse) -> Any:
        """The JSON body; an answer that is not a resource or a problem document (such as
        a text/plain 500) is recorded as a defect of the api."""
        text = await resp.text()
        if resp.content_type in ("application/json", "application/problem+json"):
            return json.loads(text)
        self.sent.unexpected.append(f"{resp.status} {resp.content_type}: {text[:100]}")
        return text

    async def cancel(self, ws: str, video_id: str) -> None:
        await asyncio.sleep(self.rng.random() * 0.5)
        for _ in range(100):
            try:
                async with self.session.post(
                        f"{self.stack.api_url}/v1/videos/{video_id}/cancel",
                        headers={"Authorization": f"Bearer {self.keys[ws]}"}) as resp:
                    if resp.status in (200, 409):  # canceled, or finished first
                        self.sent.cancels += 1
                        return
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass
            await asyncio.sleep(0.3)

    async def kafka_load(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.stack.bootstrap, acks="all",
                                    enable_idempotence=True, request_timeout_ms=5_000,
                                    linger_ms=1)
        await producer.start()
        try:
            i = 0
            while not self._stop_load.is_set():
                ws, body = self.request(1_000_000 + i)
                rid = f"kafka-{i}"
                self.sent.kafka_sent[rid] = ws
                event = {"event_type": "video.requested", "event_id": str(uuid4()),
                         "workspace_id": ws, "request_id": rid, **body}
                self._spawn(self.publish(producer, rid, json.dumps(event).encode()))
                i += 1
                await asyncio.sleep(1 / self.cfg.kafka_per_second)
            while self._tasks:  # the last requests, still retrying
                await asyncio.wait(set(self._tasks))
        finally:
            try:  # flushes what is pending: as long as the broker is away, without a bound
                async with asyncio.timeout(SEND_TIMEOUT_SECONDS):
                    await producer.stop()
            except TimeoutError:
                log.warning("the harness's Kafka producer did not stop; left behind")

    async def publish(self, producer: AIOKafkaProducer, rid: str, value: bytes) -> None:
        """Until the broker acknowledges it; a re-send is a duplicate the api must absorb."""
        deadline = time.monotonic() + self.cfg.give_up_seconds
        while time.monotonic() < deadline:
            try:
                # Bounded, so that a broker that never comes back (a restart that failed)
                # ends the run with that failure rather than with sends left waiting.
                async with asyncio.timeout(SEND_TIMEOUT_SECONDS):
                    await producer.send_and_wait(TOPIC_REQUESTED, value, key=rid.encode())
                self.sent.kafka_acked.add(rid)
                return
            except Exception as exc:  # aiokafka's errors share no narrower base
                self.sent.retries[f"kafka {type(exc).__name__}"] += 1
                await asyncio.sleep(0.5)
        self.sent.kafka_given_up.add(rid)

    # --- faults ----------------------------------------------------------------------

    def _kill(self, target: str) -> None:
        if target == "postgres":
            self.stack.postgres.stop("immediate")
            return
        pid = self.stack.kafka.pid() if target == "kafka" else self.stack.service_pid(target)
        assert pid is not None, f"{target} is not running"
        os.killpg(pid, signal.SIGKILL)  # the process and its children, as a crash would
        while pid_alive(pid):
            time.sleep(0.01)

    async def inject(self, target: str, round_: int) -> Fault:
        fault = Fault(target, round_)
        started = time.monotonic()
        await asyncio.to_thread(self._kill, target)
        await asyncio.sleep(self.cfg.outage_seconds)
        await asyncio.to_thread(self.stack.up)  # what `make up` does
        fault.restarted_s = round(time.monotonic() - started, 2)
        await self.probe(f"probe-{target}-{round_}")
        fault.recovered_s = round(time.monotonic() - started, 2)
        self.faults.append(fault)
        return fault

    async def probe(self, key: str) -> None:
        """A sandbox request sent now, until it is a finished video."""
        ws = self.sandbox
        self.sent.http_sent[key] = ws
        body = {"character_id": self.characters[ws][1], "scene_description": SCENE,
                "duration_seconds": 5}
        video_id = await self.post_video(ws, key, body)
        assert video_id is not None, f"probe {key} was not accepted"
        deadline = time.monotonic() + self.cfg.give_up_seconds
        last: Any = None
        while time.monotonic() < deadline:
            try:
                async with self.session.get(
                        f"{self.stack.api_url}/v1/videos/{video_id}",
                        headers={"Authorization": f"Bearer {self.keys[ws]}"}) as resp:
                    last = (resp.status, await self._answer(resp))
                    if resp.status == 200 and last[1]["status"] in FINAL_STATUSES:
                        return
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                last = exc
            await asyncio.sleep(0.1)
        raise AssertionError(f"probe {key} did not finish; last answer: {last!r}")

    async def run(self) -> dict[str, Any]:
        await self.setup()
        loads = [asyncio.create_task(self.http_load()), asyncio.create_task(self.kafka_load())]
        started = time.monotonic()
        try:
            await asyncio.sleep(self.cfg.between_faults_seconds)
            for round_ in range(1, self.cfg.rounds + 1):
                for target in (*SERVICES, "kafka", "postgres"):
                    await self.inject(target, round_)
                    await asyncio.sleep(self.cfg.between_faults_seconds)
        finally:
            self._stop_load.set()
            await asyncio.gather(*loads)
            while self._tasks:  # the last requests, still retrying
                await asyncio.wait(set(self._tasks))
        load_s = time.monotonic() - started
        drain_started = time.monotonic()
        await self.drain()
        drain_s = time.monotonic() - drain_started
        return await self.report(load_s, drain_s)

    # --- drain and audit -------------------------------------------------------------

    async def _pool(self) -> asyncpg.Pool:
        return await asyncpg.create_pool(self.stack.database_url, min_size=1, max_size=2)

    async def drain(self) -> None:
        """Until every accepted request has a finished video and the outbox is empty."""
        pool = await self._pool()
        try:
            deadline = time.monotonic() + self.cfg.drain_timeout
            while time.monotonic() < deadline:
                pending = await pool.fetchval(
                    "SELECT count(*) FROM videos WHERE workspace_id = ANY($1::uuid[])"
                    " AND NOT (status = ANY($2::text[]))", list(self.keys),
                    sorted(FINAL_STATUSES))
                kafka_items = await pool.fetchval(
                    "SELECT count(*) FROM idempotency_keys WHERE key LIKE 'event:kafka-%'"
                    " AND response_status IS NOT NULL")
                outbox = await pool.fetchval("SELECT count(*) FROM outbox")
                if pending == 0 and outbox == 0 and kafka_items >= len(self.sent.kafka_acked):
                    return
                await asyncio.sleep(0.5)
        finally:
            await pool.close()

    async def audit(self) -> tuple[dict[str, list[str]], dict[str, Any]]:
        """Problems by kind (lost, unasked, duplicated, money, events) and the figures."""
        problems: dict[str, list[str]] = {k: [] for k in
                                          ("lost", "unasked", "duplicated", "money", "events",
                                           "answers")}
        problems["answers"] += self.sent.unexpected
        pool = await self._pool()
        try:
            rows = await pool.fetch(
                "SELECT k.workspace_id, k.key, k.video_id, k.response_status, v.status"
                "  FROM idempotency_keys k LEFT JOIN videos v ON v.id = k.video_id"
                " WHERE k.workspace_id = ANY($1::uuid[])", list(self.keys))
            by_key = {r["key"]: r for r in rows}
            # every accepted request: exactly one item, in a terminal state
            for key, video_id in self.sent.http_accepted.items():
                row = by_key.get(key)
                if row is None or str(row["video_id"]) != video_id:
                    problems["lost"].append(f"HTTP {key}: accepted as {video_id}, no such item")
                elif row["status"] not in FINAL_STATUSES:
                    problems["lost"].append(f"HTTP {key}: video {video_id} is {row['status']}")
            for rid in self.sent.kafka_acked:
                row = by_key.get(f"event:{rid}")
                if row is None or row["video_id"] is None:
                    problems["lost"].append(f"Kafka {rid}: acknowledged, but no item "
                                    f"({'rejected' if row else 'never judged'})")
                elif row["status"] not in FINAL_STATUSES:
                    problems["lost"].append(
                        f"Kafka {rid}: video {row['video_id']} is {row['status']}")
            # no item that no request asked for; no request with two items
            asked = set(self.sent.http_sent) | {f"event:{r}" for r in self.sent.kafka_sent}
            problems["unasked"] += [f"an item for {k!r}, which no request used" for k in by_key
                         if k not in asked]
            orphans = await pool.fetch(
                "SELECT v.id FROM videos v LEFT JOIN idempotency_keys k ON k.video_id = v.id"
                " WHERE v.workspace_id = ANY($1::uuid[]) AND k.video_id IS NULL",
                list(self.keys))
            problems["unasked"] += [f"video {r['id']} belongs to no request" for r in orphans]
            shared_ids = Counter(r["video_id"] for r in rows if r["video_id"] is not None)
            problems["duplicated"] += [f"video {v} answers {n} requests"
                                       for v, n in shared_ids.items() if n > 1]
            # money and outcomes
            for ws in self.keys:
                problems["money"] += await ledger_problems(pool, UUID(ws))
                problems["money"] += await settlement_problems(pool, UUID(ws))
            videos = {str(r["id"]): r["status"] for r in await pool.fetch(
                "SELECT id, status FROM videos WHERE workspace_id = ANY($1::uuid[])",
                list(self.keys))}
            attempts = Counter(r["attempts"] for r in await pool.fetch(
                "SELECT attempts FROM jobs WHERE workspace_id = ANY($1::uuid[])",
                list(self.keys)))
        finally:
            await pool.close()
        # every terminal state on the completion topic, under exactly one event_id
        ids: dict[tuple[str, str], set[str]] = {}
        for event in await read_events(self.stack.bootstrap, TOPIC_COMPLETED):
            video = event.get("video") or {}
            if video.get("id") in videos:
                ids.setdefault((video["id"], event["event_type"]), set()).add(event["event_id"])
        for video_id, status in videos.items():
            found = ids.get((video_id, f"video.{status}"), set())
            if len(found) != 1:
                problems["duplicated" if found else "events"].append(
                    f"video {video_id} ({status}): {len(found)} completion event ids")
            finishes = {t for (v, t) in ids if v == video_id} - {"video.approved",
                                                                 "video.rejected"}
            if len(finishes) > 1:
                problems["events"].append(f"video {video_id}: completion events {sorted(finishes)}")
        figures = {"outcomes": dict(Counter(videos.values())),
                   "attempts_per_job": {str(k): v for k, v in sorted(attempts.items())},
                   "items": len(videos)}
        return problems, figures

    async def report(self, load_s: float, drain_s: float) -> dict[str, Any]:
        problems, figures = await self.audit()
        s = self.sent
        accepted = len(s.http_accepted) + len(s.kafka_acked)
        recovered = [f.recovered_s for f in self.faults]
        return {
            "config": asdict(self.cfg),
            "load_seconds": round(load_s, 1), "drain_seconds": round(drain_s, 1),
            "requests": {
                "http_sent": len(s.http_sent), "http_accepted": len(s.http_accepted),
                "http_refused": dict(list(s.http_refused.items())[:10]),
                "http_given_up": len(s.http_given_up),
                "kafka_sent": len(s.kafka_sent), "kafka_acked": len(s.kafka_acked),
                "kafka_given_up": len(s.kafka_given_up), "cancels_sent": s.cancels,
                "client_retries": dict(s.retries),
            },
            "accepted": accepted,
            "lost": len(problems["lost"]),
            "duplicated_effects": len(problems["duplicated"]),
            "provider_calls_failed_on_purpose": self.standin.script.failures,
            "provider_submissions": self.standin.submissions,
            **figures,
            "faults": [asdict(f) for f in self.faults],
            "recovery_seconds": {
                target: max(f.recovered_s for f in self.faults if f.target == target)
                for target in {f.target for f in self.faults}} | (
                {"median_all": statistics.median(recovered)} if recovered else {}),
            "problems": {kind: found[:20] for kind, found in problems.items() if found},
            "problem_count": sum(len(found) for found in problems.values()),
        }


@asynccontextmanager
async def fault_stack(cfg: Config, keep_on_failure: bool = False) -> AsyncIterator[Harness]:
    """A stack of its own on free ports (the harness kills its Kafka and PostgreSQL), with
    the hosted model pointed at a stand-in that fails `provider_fail_rate` of its calls.
    `keep_on_failure` leaves a failed run's stack up for a look (stop it with its pids)."""
    logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)  # the resets on purpose
    standin = ReplicateStandIn()
    standin.script = Script(fail_rate=cfg.provider_fail_rate, retry_after="0",
                            rng=random.Random(cfg.seed))
    server = TestServer(standin.app())
    await server.start_server()
    standin.base_url = str(server.make_url("")).rstrip("/")
    run_dir = Path(tempfile.mkdtemp(prefix="influgen-faults-"))
    stack = Stack(run_dir, api_port=free_port(), pg_port=free_port(), kafka_port=free_port(),
                  kafka_controller_port=free_port(), extra_env={
                      "INFLUGEN_LEASE_SECONDS": "4", "INFLUGEN_WATCH_INTERVAL_SECONDS": "0.5",
                      "INFLUGEN_RETRY_BASE_SECONDS": "0.2", "INFLUGEN_RETRY_CAP_SECONDS": "1",
                      "INFLUGEN_RATE_LIMIT_PER_SECOND": "0",
                      "INFLUGEN_CATALOG_PATH": str(small_hosted_catalog(run_dir)),
                      "INFLUGEN_REPLICATE_API_TOKEN": TOKEN,
                      "INFLUGEN_REPLICATE_BASE_URL": standin.base_url,
                      "INFLUGEN_REPLICATE_POLL_INTERVAL_SECONDS": "0.2",
                      "INFLUGEN_PROVIDER_REQUEST_TIMEOUT_SECONDS": "3"})
    try:
        await asyncio.to_thread(stack.up)
        async with aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=15)) as session:
            yield Harness(cfg, stack, standin, session)
    except BaseException:
        if keep_on_failure:
            print(f"kept for a look: {run_dir} (api {stack.api_url}, db {stack.database_url})")
            await asyncio.sleep(3600)
        raise
    finally:
        await asyncio.to_thread(stack.down)
        logs = Path("tests/artifacts/fault-logs")
        logs.mkdir(parents=True, exist_ok=True)
        kept = [*stack.logs.glob("*.log"), stack.kafka.log_file, stack.postgres.log_file]
        for path in kept:  # Kafka's and PostgreSQL's too: a restart that failed is in them
            if path.exists():
                shutil.copy(path, logs / path.name)
        shutil.rmtree(run_dir, ignore_errors=True)
        await server.close()


async def run(cfg: Config, keep_on_failure: bool = False) -> dict[str, Any]:
    async with fault_stack(cfg, keep_on_failure) as harness:
        return await harness.run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fault_harness")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None,
                        help="also write the report here (make test-faults: bench/results)")
    parser.add_argument("--keep-on-failure", action="store_true",
                        help="leave a failed run's stack up for an hour, for a look")
    args = parser.parse_args(argv)
    report = asyncio.run(run(Config(rounds=args.rounds), args.keep_on_failure))
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        from bench import plots
        from bench.common import write_result

        written = write_result("faults", report, args.out)
        plots.draw("faults", json.loads(written.read_text()), written.with_suffix(".png"))
    return 1 if report["problem_count"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
