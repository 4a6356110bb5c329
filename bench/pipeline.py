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
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from bench.common import bench_stack, cpu_seconds, cpu_spent, settle, write_result
from bench.floor import FETCH_MAX_WAIT_MS, floor_pipeline
from devstack.stack import call_api
from services.generator.settings import GeneratorSettings
from shared.kafka import topic_partitions

RATES = (50, 200)
WARM_UP_RATE = 100
SECONDS = 10
FETCH_WAITS = (10, 100)
IDLE_SECONDS = 10
SCENE = "Walking through a hotel lobby at golden hour, slow push-in, confident energy"


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 1)


async def _consumer(bootstrap: str, topic: str) -> AIOKafkaConsumer:
    # A fetch returns as soon as one of its partitions has a record; the wait bounds only the
    # fetches that find nothing. At 5 ms (it was) those cost the load generator and the
    # broker about 0.35 ms of CPU per job at 200 jobs/s, on the cores the stack runs on,
    # for the same round trip (p50 2.7-3.8 ms at either wait, three runs each).
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                fetch_max_wait_ms=100, enable_auto_commit=False)
    await consumer.start()
    tps = await topic_partitions(bootstrap, [topic])
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
                     topic: str, done_id: Callable[[bytes], str | None], rate: int,
                     seconds: float = SECONDS) -> dict[str, Any]:
    """POST `body` to `url` `rate` times a second for `seconds` (an open model: each request
    starts on schedule) and time each from its 202 (whose JSON names an `id`) to the first
    record on `topic` for which `done_id` gives that id."""
    consumer = await _consumer(bootstrap, topic)
    accepted: dict[str, float] = {}
    done: dict[str, float] = {}
    total = round(rate * seconds)

    async def receive() -> None:
        while len(done) < total:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                now = time.perf_counter()
                for r in records:
                    if (key := done_id(r.value)) is not None:
                        done.setdefault(key, now)

    reader = asyncio.create_task(receive())
    async with aiohttp.ClientSession() as http:
        async def one() -> None:
            async with http.post(url, data=body, headers=headers) as resp:
                data = await resp.json()
                accepted[data["id"]] = time.perf_counter()

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


def _approved_video(value: bytes) -> str | None:
    event = json.loads(value)
    return str(event["video"]["id"]) if event["event_type"] == "video.approved" else None


async def pipeline(api_url: str, key: str, character: str, bootstrap: str, rate: int
                   ) -> dict[str, Any]:
    """202 -> `video.approved` for sandbox videos of an autopilot character."""
    body = json.dumps({"character_id": character, "scene_description": SCENE,
                       "duration_seconds": 5}).encode()
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    result = await timed_load(f"{api_url}/v1/videos", body, headers, bootstrap,
                              "influgen.video.completed.v1", _approved_video, rate)
    return {"rate": rate, **result}


def run() -> dict[str, Any]:
    runs = []
    floor: list[dict[str, Any]] = []
    idle: list[dict[str, Any]] = []
    for wait in FETCH_WAITS:
        env = {"INFLUGEN_RATE_LIMIT_PER_SECOND": "0", "INFLUGEN_LOG_LEVEL": "WARNING",
               "INFLUGEN_KAFKA_FETCH_MAX_WAIT_MS": str(wait)}
        with bench_stack(env) as stack:
            ws = call_api("POST", f"{stack.api_url}/v1/admin/workspaces", stack.admin_token,
                       {"name": "bench", "credits": 10**9, "sandbox": True})
            character = call_api("POST", f"{stack.api_url}/v1/characters", ws["api_key"],
                              {"name": "Bench", "review_mode": "autopilot"})["id"]
            # Warm-up (results dropped): a thousand jobs, so that the broker's JIT compiler
            # and the database's caches are warm, then a wait until the compiler is done
            # with what the warm-up gave it; the figures are of the steady state.
            asyncio.run(pipeline(stack.api_url, ws["api_key"], character, stack.bootstrap,
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
                result = asyncio.run(pipeline(stack.api_url, ws["api_key"], character,
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
    for run_ in runs:
        if run_["fetch_max_wait_ms"] == FETCH_MAX_WAIT_MS:
            same = next(f for f in floor if f["rate"] == run_["rate"])
            run_["ratio_p50_to_floor_p50"] = round(run_["p50_ms"] / max(same["p50_ms"], 0.1), 1)
    for f in floor:
        print(f"pipeline floor {f['rate']}/s: 202->last record p50 {f['p50_ms']} ms p99 "
              f"{f['p99_ms']} ms ({f['completed']}/{f['jobs']}); CPU per job "
              f"{f['cpu_ms_per_job']}")
    out = {"runs": runs, "idle": idle, "goal": "p50 <= 30 ms and p99 <= 150 ms at 200 jobs/s",
           "baseline_floor": {"fetch_max_wait_ms": FETCH_MAX_WAIT_MS, "runs": floor},
           "generator_sandbox_slots": GeneratorSettings().provider_concurrency["sandbox"]}
    write_result("pipeline", out)
    return out
