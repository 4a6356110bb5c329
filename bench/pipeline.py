"""Pipeline overhead: time from the `202` to the `video.approved` event on
`influgen.video.completed.v1` (sandbox provider), at fixed rates, beside a Kafka
produce -> consume round trip on the same broker, measured in the same run, and at the
default fetch wait beside the floor (`bench.floor`: the least three hops with a statement
each cost on the same broker and database). Done for two consumer fetch waits, since that
setting trades idle CPU against latency. Each run also records the CPU time each process
spent per job (idle polling included), which says where a 2-core machine's capacity goes."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.common import (
    bench_stack,
    cpu_seconds,
    cpu_spent,
    sandbox_character,
    settle,
    write_result,
)
from bench.floor import FETCH_MAX_WAIT_MS, floor_pipeline
from devstack.stack import Stack
from services.generator.settings import GeneratorSettings
from shared.events import TOPIC_COMPLETED, TOPIC_GENERATED, TOPIC_JOBS
from shared.kafka import topic_partitions

RATES = (50, 200)
#: The rate of the run that traces each video's way (`stages`): the goal's.
TRACED_RATE = 200
WARM_UP_RATE = 100
SECONDS = 10
FETCH_WAITS = (10, 100)
IDLE_SECONDS = 10
SCENE = "Walking through a hotel lobby at golden hour, slow push-in, confident energy"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 1)


@dataclass
class Trace:
    """Wall-clock instants (seconds) of each video on its way, by video id, for `stages`:
    the load generator's own, and each event's on the topics the pipeline passes
    (`TRACED_TOPICS`; the record's timestamp, which its producer sets when it sends)."""

    posted: dict[str, float] = field(default_factory=dict)
    answered: dict[str, float] = field(default_factory=dict)
    received: dict[str, float] = field(default_factory=dict)
    sent: dict[str, dict[str, float]] = field(default_factory=dict)

    def record(self, topic: str, event: dict[str, Any], timestamp_ms: int) -> None:
        video = event.get("correlation_id")
        if video is not None:
            self.sent.setdefault(topic, {}).setdefault(video, timestamp_ms / 1000)


TRACED_TOPICS = (TOPIC_JOBS, TOPIC_GENERATED, TOPIC_COMPLETED)
#: A video's way, in order: (instant, what happened there). The database's instants are its
#: statements' `now()` (their transaction's start); the events' their producer's send.
WAY = (
    ("posted", "the load generator sends the POST"),
    ("job_event_sent", "the api sends `video.job.queued` (after its commit)"),
    ("accepted", "the generator's accept statement starts (after the Kafka hop)"),
    ("succeeded", "the generator's success statement starts (the sandbox clip is ready)"),
    ("generated_event_sent", "the generator sends `video.generation.succeeded`"),
    ("settled", "the finalizer's settlement statement starts (after a hop and a read)"),
    ("completed_event_sent", "the finalizer sends `video.approved` (after its commit)"),
    ("received", "the load generator has the event (a Kafka hop)"),
)


def stages(trace: Trace, db: dict[str, tuple[float, float, float]]) -> dict[str, Any]:
    """Where the time goes between each instant of `WAY` and the next, over the videos
    seen at every instant: p50 and p90 in ms. `db`: each video's accept, success and
    settlement instants. (The stages' p50s need not add up to the whole way's p50.)"""
    ways: dict[str, list[float]] = {}
    for video, received in trace.received.items():
        job_sent, generated_sent, completed_sent = (
            trace.sent.get(topic, {}).get(video) for topic in TRACED_TOPICS)
        if (video not in db or video not in trace.posted or job_sent is None
                or generated_sent is None or completed_sent is None):
            continue  # not seen at every instant: left out (`videos` counts the rest)
        accepted, succeeded, settled = db[video]
        ways[video] = [trace.posted[video], job_sent, accepted, succeeded, generated_sent,
                       settled, completed_sent, received]
    out: list[dict[str, Any]] = []
    for i in range(len(WAY) - 1):
        took = [(way[i + 1] - way[i]) * 1000 for way in ways.values()]
        out.append({"from": WAY[i][0], "to": WAY[i + 1][0], "what": WAY[i + 1][1],
                    "p50_ms": _pct(took, 0.5) if took else None,
                    "p90_ms": _pct(took, 0.9) if took else None})
    whole = [(way[-1] - trace.answered[video]) * 1000 for video, way in ways.items()
             if video in trace.answered]
    return {"videos": len(ways), "stages": out,
            "answered_to_received_p50_ms": _pct(whole, 0.5) if whole else None}


async def _db_instants(dsn: str, videos: list[str]) -> dict[str, tuple[float, float, float]]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT j.video_id::text AS video, extract(epoch FROM j.accepted_at) AS a,"
            " extract(epoch FROM j.finished_at) AS f, extract(epoch FROM s.created_at) AS s"
            " FROM jobs j JOIN settlements s ON s.job_id = j.id"
            " WHERE j.video_id = any($1::uuid[])", videos)
    finally:
        await conn.close()
    return {r["video"]: (float(r["a"]), float(r["f"]), float(r["s"])) for r in rows}


async def _consumer(bootstrap: str, *topics: str) -> AIOKafkaConsumer:
    # A fetch returns as soon as one of its partitions has a record; the wait bounds only the
    # fetches that find nothing. At 5 ms (it was) those cost the load generator and the
    # broker about 0.35 ms of CPU per job at 200 jobs/s, on the cores the stack runs on,
    # for the same round trip (p50 2.7-3.8 ms at either wait, three runs each).
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                fetch_max_wait_ms=100, enable_auto_commit=False)
    await consumer.start()
    tps = await topic_partitions(bootstrap, list(topics))
    consumer.assign(tps)
    await consumer.seek_to_end(*tps)
    for tp in tps:
        await consumer.position(tp)
    return consumer


async def round_trip(bootstrap: str, rate: int) -> dict[str, Any]:
    """Baseline: produce to a topic and consume it back, at `rate` per second."""
    topic = "influgen.video.dlq.v1"  # an existing topic no service consumes
    consumer = await _consumer(bootstrap, topic)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    sent: dict[str, float] = {}
    got: dict[str, float] = {}

    async def receive() -> None:
        while len(got) < rate * SECONDS:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                now = time.perf_counter()
                for r in records:
                    if r.key and r.key.startswith(b"rt-"):
                        got[r.key.decode()] = now

    reader = asyncio.create_task(receive())
    started = time.perf_counter()
    for i in range(rate * SECONDS):
        await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
        key = f"rt-{i}"
        sent[key] = time.perf_counter()
        await producer.send(topic, b"{}", key=key.encode())
    await asyncio.wait_for(reader, timeout=60)
    await producer.stop()
    await consumer.stop()
    latencies = [(got[k] - sent[k]) * 1000 for k in sent if k in got]
    return {"p50_ms": _pct(latencies, 0.5), "p99_ms": _pct(latencies, 0.99),
            "messages": len(latencies)}


async def timed_load(url: str, body: bytes, headers: dict[str, str], bootstrap: str,
                     topic: str, done_id: Callable[[Any], str | None], rate: int,
                     seconds: float = SECONDS, trace: Trace | None = None) -> dict[str, Any]:
    """POST `body` to `url` `rate` times a second for `seconds` (an open model: each request
    starts on schedule) and time each from its 202 (whose JSON names an `id`) to the first
    record on `topic` for which `done_id` (given the record's JSON, decoded once) gives that
    id. With `trace`, also note each video's instants there, and read the pipeline's other
    topics for theirs (which costs the load generator more CPU, on the cores the stack runs
    on)."""
    watched = (topic,) if trace is None else tuple(dict.fromkeys((topic, *TRACED_TOPICS)))
    consumer = await _consumer(bootstrap, *watched)
    accepted: dict[str, float] = {}
    done: dict[str, float] = {}
    total = round(rate * seconds)

    async def receive() -> None:
        while len(done) < total:
            for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                now = time.perf_counter()
                wall = time.time()
                for r in records:
                    value = json.loads(r.value)
                    if trace is not None:
                        trace.record(tp.topic, value, r.timestamp)
                    if tp.topic == topic and (key := done_id(value)) is not None:
                        done.setdefault(key, now)
                        if trace is not None:
                            trace.received.setdefault(key, wall)

    reader = asyncio.create_task(receive())
    async with aiohttp.ClientSession() as http:
        async def one() -> None:
            posted = time.time()
            async with http.post(url, data=body, headers=headers) as resp:
                data = await resp.json()
                accepted[data["id"]] = time.perf_counter()
                if trace is not None:
                    trace.posted[data["id"]] = posted
                    trace.answered[data["id"]] = time.time()

        started = time.perf_counter()
        posts = []
        for i in range(total):
            await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
            posts.append(asyncio.create_task(one()))
        await asyncio.gather(*posts)
    try:
        await asyncio.wait_for(reader, timeout=120)
    except TimeoutError:
        reader.cancel()
    await consumer.stop()
    latencies = [(done[v] - accepted[v]) * 1000 for v in accepted if v in done]
    return {"jobs": total, "completed": len(latencies),
            "p50_ms": _pct(latencies, 0.5), "p99_ms": _pct(latencies, 0.99),
            "mean_ms": round(statistics.fmean(latencies), 1)}


def _approved_video(event: dict[str, Any]) -> str | None:
    return str(event["video"]["id"]) if event["event_type"] == "video.approved" else None


async def pipeline(api_url: str, key: str, character: str, bootstrap: str, rate: int,
                   trace: Trace | None = None, seconds: float = SECONDS) -> dict[str, Any]:
    """202 -> `video.approved` for sandbox videos of an autopilot character."""
    body = json.dumps({"character_id": character, "scene_description": SCENE,
                       "duration_seconds": 5}).encode()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    result = await timed_load(f"{api_url}/v1/videos", body, headers, bootstrap,
                              TOPIC_COMPLETED, _approved_video, rate, seconds, trace)
    return {"rate": rate, **result}


def traced_run(stack: Stack, key: str, character: str, rate: int) -> dict[str, Any]:
    """A run of its own at `rate` with a `Trace`: where each video's time goes."""
    trace = Trace()
    result = asyncio.run(pipeline(stack.api_url, key, character, stack.bootstrap, rate,
                                  trace=trace))
    db = asyncio.run(_db_instants(stack.database_url, list(trace.received)))
    return {"rate": rate, "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"],
            **stages(trace, db)}


def run() -> dict[str, Any]:
    runs = []
    floor: list[dict[str, Any]] = []
    idle: list[dict[str, Any]] = []
    way: dict[str, Any] = {"stages": []}
    for wait in FETCH_WAITS:
        env = {"INFLUGEN_RATE_LIMIT_PER_SECOND": "0", "INFLUGEN_LOG_LEVEL": "WARNING",
               "INFLUGEN_KAFKA_FETCH_MAX_WAIT_MS": str(wait)}
        with bench_stack(env) as stack:
            key, character = sandbox_character(stack)
            # Warm-up (results dropped): a thousand jobs, so that the broker's JIT compiler
            # and the database's caches are warm, then a wait until the compiler is done
            # with what the warm-up gave it; the figures are of the steady state.
            asyncio.run(pipeline(stack.api_url, key, character, stack.bootstrap,
                                 WARM_UP_RATE))
            settled = settle(stack)
            before = cpu_seconds(stack)
            time.sleep(IDLE_SECONDS)
            after = cpu_seconds(stack)
            busy = cpu_spent(before, after, scale=100 / IDLE_SECONDS, digits=1)
            idle.append({"fetch_max_wait_ms": wait, "settled_after_warm_up": settled,
                         "cpu_percent_of_a_core": {**busy, "total": round(sum(busy.values()), 1)}})
            print(f"pipeline fetch_wait={wait}ms idle: {idle[-1]['cpu_percent_of_a_core']} "
                  "% of a core")
            for rate in RATES:
                baseline = asyncio.run(round_trip(stack.bootstrap, rate))
                before = cpu_seconds(stack)
                result = asyncio.run(pipeline(stack.api_url, key, character,
                                              stack.bootstrap, rate))
                after = cpu_seconds(stack)
                cpu = cpu_spent(before, after, scale=1000 / result["jobs"])
                runs.append({"fetch_max_wait_ms": wait, **result,
                             "cpu_ms_per_job": {**cpu, "total": round(sum(cpu.values()), 1)},
                             "baseline_kafka_round_trip": baseline,
                             "ratio_p50_to_round_trip_p50": round(
                                 result["p50_ms"] / max(baseline["p50_ms"], 0.1), 1)})
                print(f"pipeline fetch_wait={wait}ms {rate}/s: 202->approved p50 "
                      f"{result['p50_ms']} ms p99 {result['p99_ms']} ms "
                      f"({result['completed']}/{result['jobs']}); kafka round trip p50 "
                      f"{baseline['p50_ms']} ms p99 {baseline['p99_ms']} ms")
            if wait == FETCH_MAX_WAIT_MS:  # the floor, at the services' default wait
                floor = floor_pipeline(stack, RATES)
                way = traced_run(stack, key, character, TRACED_RATE)
    for run_ in runs:
        if run_["fetch_max_wait_ms"] == FETCH_MAX_WAIT_MS:
            same = next(f for f in floor if f["rate"] == run_["rate"])
            run_["ratio_p50_to_floor_p50"] = round(run_["p50_ms"] / max(same["p50_ms"], 0.1), 1)
    for f in floor:
        print(f"pipeline floor {f['rate']}/s: 202->last record p50 {f['p50_ms']} ms p99 "
              f"{f['p99_ms']} ms ({f['completed']}/{f['jobs']}); CPU per job "
              f"{f['cpu_ms_per_job']}")
    print(f"pipeline stages at {TRACED_RATE} jobs/s (p50 ms): " + ", ".join(
        f"{s['to']} +{s['p50_ms']}" for s in way["stages"]))
    out = {"runs": runs, "idle": idle, "goal": "p50 <= 30 ms and p99 <= 150 ms at 200 jobs/s",
           "stages": way,
           "baseline_floor": {"fetch_max_wait_ms": FETCH_MAX_WAIT_MS, "runs": floor},
           "generator_sandbox_slots": GeneratorSettings().provider_concurrency["sandbox"]}
    write_result("pipeline", out)
    return out
