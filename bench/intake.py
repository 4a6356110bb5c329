"""Intake: accepted requests per second at saturation, and latency at fixed rates, with the
whole stack running (sandbox workspace), beside two baselines from the same run: a bare
aiohttp handler, and one-row insert transactions through asyncpg."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from typing import Any

import asyncpg

from bench.common import (
    bench_stack,
    cpu_seconds,
    cpu_spent,
    sandbox_character,
    service_rss_mb,
    settle,
    write_result,
)
from bench.load import Target, attack
from devstack.proc import free_port, terminate
from devstack.stack import Stack

#: 100/s is below what the whole stack sustains on 2 cores; the others are the goals' rates.
RATES = (100, 250, 500, 1000)
SECONDS = 10.0
SCENE = "Walking through a hotel lobby at golden hour, slow push-in, confident energy"


def bare_aiohttp(body: bytes) -> dict[str, Any]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.bare_server", str(port)],
                            start_new_session=True)
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
            except urllib.error.HTTPError:
                break
            except OSError:
                time.sleep(0.1)
        target = Target("POST", f"http://127.0.0.1:{port}/v1/videos", body,
                        {"Content-Type": "application/json"})
        return {"saturation": attack(target, rate=0, seconds=SECONDS, ok=202),
                "rates": [attack(target, rate=r, seconds=SECONDS, ok=202) for r in RATES]}
    finally:
        terminate(proc.pid)


async def asyncpg_inserts(dsn: str, seconds: float = SECONDS, concurrency: int = 32
                          ) -> dict[str, Any]:
    pool = await asyncpg.create_pool(dsn, min_size=concurrency, max_size=concurrency)
    assert pool is not None
    await pool.execute("CREATE TABLE IF NOT EXISTS bench_rows"
                       " (id bigserial PRIMARY KEY, payload jsonb, created_at timestamptz"
                       " DEFAULT now())")
    done = 0
    stop = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal done
        while time.monotonic() < stop:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute("INSERT INTO bench_rows (payload) VALUES ($1)", '{"a": 1}')
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.monotonic() - started
    await pool.execute("DROP TABLE bench_rows")
    await pool.close()
    return {"transactions_per_second": round(done / elapsed, 1), "concurrency": concurrency}


async def _drain(dsn: str, timeout: float) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # jobs the generator has not ended, and videos the finalizer has not finalized
            if not await conn.fetchval(
                    "SELECT EXISTS (SELECT FROM jobs"
                    "                WHERE state NOT IN ('succeeded', 'failed', 'canceled'))"
                    "    OR EXISTS (SELECT FROM videos WHERE status IN ('queued', 'generating'))"):
                return
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


def drain(stack: Stack, timeout: float = 300) -> float:
    """Wait until every job of earlier runs is done and finalized, so that each run starts
    from rest; the seconds it took."""
    started = time.monotonic()
    asyncio.run(_drain(stack.database_url, timeout))
    return round(time.monotonic() - started, 1)


def intake_alone(stack: Stack, target: Target) -> tuple[dict[str, Any], dict[str, Any]]:
    """Saturation with the generator and finalizer paused (SIGSTOP): what intake costs and
    reaches when it does not share the cores with the pipeline working off its backlog.
    Then the pipeline alone, working off that backlog with the whole machine and batches as
    large as they come: how many jobs a second it finishes, and its CPU per job, which
    bound what intake can sustain with the whole stack running."""
    paused = [pid for name in ("generator", "finalizer") if (pid := stack.service_pid(name))]
    drain(stack)
    for pid in paused:
        os.kill(pid, signal.SIGSTOP)
    try:
        before = cpu_seconds(stack)
        result = attack(target, rate=0, seconds=SECONDS, ok=202)
        after = cpu_seconds(stack)
    finally:
        for pid in paused:
            os.kill(pid, signal.SIGCONT)
    jobs = max(result["ok"], 1)
    spent = cpu_spent(before, after, scale=1000 / jobs)
    result["cpu_ms_per_request"] = {
        name: ms for name, ms in spent.items() if name not in ("generator", "finalizer")}
    seconds = max(drain(stack, timeout=600), 0.1)
    per_job = cpu_spent(after, cpu_seconds(stack), scale=1000 / jobs)
    backlog = {"jobs": result["ok"], "seconds": round(seconds, 1),
               "jobs_per_second": round(result["ok"] / seconds, 1),
               "cpu_ms_per_job": per_job,
               "cpu_ms_per_job_total": round(sum(per_job.values()), 2)}
    return result, backlog


def run() -> dict[str, Any]:
    env = {"INFLUGEN_RATE_LIMIT_PER_SECOND": "0", "INFLUGEN_LOG_LEVEL": "WARNING"}
    with bench_stack(env) as stack:
        key, character = sandbox_character(stack)
        body = json.dumps({"character_id": character, "scene_description": SCENE,
                           "duration_seconds": 5}).encode()
        target = Target("POST", f"{stack.api_url}/v1/videos", body, {
            "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        time.sleep(2)
        idle = service_rss_mb(stack)
        attack(target, rate=100, seconds=3, ok=202)  # warm-up
        drain(stack)
        settled = settle(stack)  # the broker's JIT compiler works off the warm-up
        rates = []
        loaded: dict[str, float] = {}
        for rate in RATES:
            drained = drain(stack)
            rates.append({**attack(target, rate=rate, seconds=SECONDS, ok=202),
                          "drain_before_seconds": drained})
            if rate == 1000:
                loaded = service_rss_mb(stack)
        drain(stack)
        saturation = attack(target, rate=0, seconds=SECONDS, ok=202)
        inserts = asyncio.run(asyncpg_inserts(stack.database_url))
        alone, backlog = intake_alone(stack, target)
    bare = bare_aiohttp(body)
    at_1000 = next(r for r in rates if r["target_rate"] == 1000)
    result = {
        "intake": {"saturation": saturation, "rates": rates,
                   "saturation_pipeline_paused": alone,
                   "pipeline_working_off_the_backlog": backlog},
        "baseline_bare_aiohttp": bare,
        "baseline_asyncpg_insert_transactions": inserts,
        "memory_rss_mb": {"idle": idle, "under_1000_rps": loaded},
        "settled_after_warm_up": settled,
        "ratios": {
            "intake_vs_bare_aiohttp_saturation": round(
                saturation["ok_per_second"] / bare["saturation"]["ok_per_second"], 3),
            "intake_vs_asyncpg_transactions": round(
                saturation["ok_per_second"] / inserts["transactions_per_second"], 3),
        },
        "goals": {"saturation_at_least_per_second": 1500, "p99_ms_at_1000_at_most": 50,
                  "met_saturation": saturation["ok_per_second"] >= 1500,
                  "met_p99": at_1000["latency_ms"]["p99"] <= 50
                  and at_1000["ok"] >= 0.99 * at_1000["requests"],
                  "rss_mb_per_process_at_most": 150,
                  "met_memory": all(v <= 150 for v in [*idle.values(), *loaded.values()])},
    }
    path = write_result("intake", result)
    print(f"intake: {saturation['ok_per_second']} accepted/s at saturation "
          f"(bare aiohttp {bare['saturation']['ok_per_second']}/s, asyncpg one-row inserts "
          f"{inserts['transactions_per_second']}/s)")
    for r in rates:
        print(f"  {r['target_rate']}/s: p50 {r['latency_ms']['p50']} ms, p99 "
              f"{r['latency_ms']['p99']} ms, p99.9 {r['latency_ms']['p99.9']} ms, "
              f"ok {r['ok']}/{r['requests']}")
    print(f"  with the generator and finalizer paused: {alone['ok_per_second']} accepted/s, "
          f"CPU per request {alone['cpu_ms_per_request']} ms")
    print(f"  then the pipeline alone worked off those {backlog['jobs']} jobs at "
          f"{backlog['jobs_per_second']}/s, CPU per job {backlog['cpu_ms_per_job']} ms")
    print(f"  memory idle {idle} MB; under 1000/s {loaded} MB -> {path}")
    return result
