"""`python -m bench.profile [--rate N] [--seconds S] [--services api,generator,finalizer]`
(`make profile`): where the pipeline's work goes at a steady rate, on a stack of its own.

What the benchmarks say is how fast; this says where the time goes, measured the way the
performance journal's entries were (each session wrote these diagnostics anew until they
were kept here): during one run of the pipeline benchmark's load (`bench.pipeline`,
sandbox videos of an autopilot character, after its warm-up), per video:

- each process's CPU time (as the benchmarks count it);
- PostgreSQL's statements (`pg_stat_statements`, loaded for this stack only): calls, rows
  and execution time, the most expensive first; its transactions; its WAL records and
  bytes, by record type (`pg_waldump --stats`: what each video writes);
- each service's Python, sampled by py-spy while it holds the GIL (`--gil`: about its CPU;
  counting some waiting as work, see the journal): the functions with most samples of
  their own and with most samples in all.

Figures are printed and written to `bench/results/profile.json`. py-spy needs to read
the services' memory (root, or `ptrace` allowed); without it the profiles are skipped and
said so. A profiled run is slower than a plain one (py-spy stops each process 200 times a
second): compare its shares, not its latency."""

from __future__ import annotations

import argparse
import asyncio
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import (
    bench_stack,
    cpu_seconds,
    cpu_spent,
    sandbox_character,
    settle,
    write_result,
)
from bench.pipeline import WARM_UP_RATE, pipeline
from devstack.stack import SERVICES, Stack

PG_SETTINGS = {"shared_preload_libraries": "pg_stat_statements",
               "pg_stat_statements.track": "all",
               # planning counted apart from execution: a statement planned on every call
               # (a custom plan each time) pays for it in the server's CPU
               "pg_stat_statements.track_planning": "on"}
SAMPLES_PER_SECOND = 200
#: PostgreSQL's `PGSTAT_IDLE_INTERVAL` (10 s), and a second more
STATS_FLUSH_SECONDS = 11.0
TOP = 25


def py_spy_functions(raw: str, top: int = TOP) -> dict[str, Any]:
    """py-spy's `--format raw` output (one line per stack: frames from the outermost,
    separated by `;`, then the sample count) as the `top` functions by samples of their
    own and by samples in all (a function counted once per stack however often it recurs),
    each with its share of all samples in percent."""
    own: collections.Counter[str] = collections.Counter()
    within: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")]
        own[frames[-1]] += n
        for frame in set(frames):
            within[frame] += n

    def shares(counter: collections.Counter[str]) -> list[dict[str, Any]]:
        return [{"function": name, "percent": round(100 * n / total, 1)}
                for name, n in counter.most_common(top)]

    return {"samples": total, "own": shares(own) if total else [],
            "inclusive": shares(within) if total else []}


_WALDUMP_ROW = re.compile(r"^(\S+/\S+)\s+(\d+)\s+\(")


def waldump_records(stats: str) -> dict[str, int]:
    """`pg_waldump --stats=record` output as record type -> count (the `Total` line left
    out), most first."""
    counts = {m[1]: int(m[2]) for line in stats.splitlines()
              if (m := _WALDUMP_ROW.match(line.strip()))}
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


async def _database(dsn: str, *, reset: bool) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        if reset:
            await conn.execute("SELECT pg_stat_statements_reset()")
        wal = await conn.fetchrow("SELECT wal_records, wal_bytes, wal_fpi FROM pg_stat_wal")
        assert wal is not None  # (one row, always)
        return {
            "commits": await conn.fetchval(
                "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"),
            "wal": dict(wal),
            "lsn": await conn.fetchval("SELECT pg_current_wal_insert_lsn()::text"),
            "statements": [] if reset else [dict(r) for r in await conn.fetch(
                "SELECT calls, plans, rows, total_exec_time, total_plan_time,"
                " left(regexp_replace(query, '\\s+', ' ', 'g'), 200) AS query"
                " FROM pg_stat_statements WHERE query NOT LIKE '%pg_stat_statements%'"
                " ORDER BY total_exec_time + total_plan_time DESC LIMIT $1", TOP)],
        }
    finally:
        await conn.close()


def _per_video(before: dict[str, Any], after: dict[str, Any], videos: int,
               wal_stats: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "transactions": round((after["commits"] - before["commits"]) / videos, 2),
        **{name: round(float(after["wal"][name] - before["wal"][name]) / videos, 1)
           for name in ("wal_records", "wal_bytes", "wal_fpi")},
        "statements": [
            {"calls": round(s["calls"] / videos, 3),
             "rows_per_call": round(s["rows"] / max(s["calls"], 1), 1),
             "exec_ms": round(s["total_exec_time"] / videos, 3),
             "plans_per_call": round(s["plans"] / max(s["calls"], 1), 2),
             "plan_ms": round(s["total_plan_time"] / videos, 3), "query": s["query"]}
            for s in after["statements"]],
    }
    if wal_stats is not None:
        out["wal_records_by_type"] = {
            kind: round(n / videos, 2)
            for kind, n in list(waldump_records(wal_stats).items())[:TOP]}
    return out


def _start_py_spy(stack: Stack, services: list[str], seconds: float,
                  into: Path) -> list[tuple[str, subprocess.Popen[bytes], Path]]:
    beside = Path(sys.executable).parent / "py-spy"  # installed with the dev extras
    spy = str(beside) if beside.exists() else shutil.which("py-spy")
    if spy is None:
        print("profile: py-spy not found; no Python profiles")
        return []
    started = []
    for name in services:
        out = into / f"{name}.txt"
        started.append((name, subprocess.Popen(
            [spy, "record", "--gil", "--rate", str(SAMPLES_PER_SECOND), "--duration",
             str(max(1, round(seconds))), "--format", "raw", "--output", str(out),
             "--pid", str(stack.service_pid(name))],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), out))
    return started


def _python_profiles(started: list[tuple[str, subprocess.Popen[bytes], Path]]
                     ) -> dict[str, Any]:
    profiles: dict[str, Any] = {}
    for name, proc, out in started:
        _, err = proc.communicate(timeout=120)
        if proc.returncode != 0 or not out.exists():
            profiles[name] = {"error": err.decode(errors="replace")[-500:]}
            continue
        profiles[name] = py_spy_functions(out.read_text())
    return profiles


def run(rate: int = 200, seconds: float = 10.0, services: list[str] | None = None
        ) -> dict[str, Any]:
    services = list(SERVICES) if services is None else services
    env = {"INFLUGEN_RATE_LIMIT_PER_SECOND": "0", "INFLUGEN_LOG_LEVEL": "WARNING"}
    with bench_stack(env, pg_settings=PG_SETTINGS) as stack, \
            tempfile.TemporaryDirectory(prefix="influgen-profile-") as scratch:
        key, character = sandbox_character(stack)
        asyncio.run(pipeline(stack.api_url, key, character, stack.bootstrap, WARM_UP_RATE))
        settle(stack)
        before = asyncio.run(_database(stack.database_url, reset=True))
        cpu_before = cpu_seconds(stack)
        spies = _start_py_spy(stack, services, seconds, Path(scratch))
        result = asyncio.run(pipeline(stack.api_url, key, character, stack.bootstrap, rate,
                                      seconds=seconds))
        cpu_after = cpu_seconds(stack)
        # Busy backends hand their counts (transactions, WAL) to the statistics at most
        # once a second, and the rest ten seconds after they fall idle.
        time.sleep(STATS_FLUSH_SECONDS)
        after = asyncio.run(_database(stack.database_url, reset=False))
        wal_stats = None
        if stack.external_db is None:
            wal_stats = stack.postgres.run_tool(
                "pg_waldump", "--path", str(stack.postgres.data_dir / "pg_wal"),
                "--start", before["lsn"], "--end", after["lsn"], "--stats=record")
        videos = result["jobs"]
        out = {
            "rate": rate, "seconds": seconds, "videos": videos, "completed": result["completed"],
            "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"],
            "cpu_ms_per_video": cpu_spent(cpu_before, cpu_after, scale=1000 / videos),
            "postgres_per_video": _per_video(before, after, videos, wal_stats),
            "python": _python_profiles(spies),
        }
    write_result("profile", out)
    _print(out)
    return out


def _print(out: dict[str, Any]) -> None:
    pg = out["postgres_per_video"]
    print(f"profile at {out['rate']} videos/s ({out['completed']}/{out['videos']}, p50 "
          f"{out['p50_ms']} ms with the profilers on): CPU ms per video "
          f"{out['cpu_ms_per_video']}")
    print(f"PostgreSQL per video: {pg['transactions']} transactions, {pg['wal_records']} WAL "
          f"records, {pg['wal_bytes']} WAL bytes")
    for s in pg["statements"][:10]:
        print(f"  {s['exec_ms']:7.3f} ms  {s['plan_ms']:6.3f} ms planning"
              f" ({s['plans_per_call']:4.2f} a call)  {s['calls']:6.3f} calls  {s['query'][:80]}")
    for kind, n in list(pg.get("wal_records_by_type", {}).items())[:10]:
        print(f"  {n:6.2f}  {kind}")
    for name, profile in out["python"].items():
        if "error" in profile:
            print(f"{name}: py-spy failed: {profile['error']}")
            continue
        print(f"{name} ({profile['samples']} samples), most samples of their own:")
        for f in profile["own"][:8]:
            print(f"  {f['percent']:5.1f}%  {f['function'][:110]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=200, help="videos per second (200)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the run (10)")
    parser.add_argument("--services", default=",".join(SERVICES),
                        help="the services to sample with py-spy; '' for none")
    args = parser.parse_args(argv)
    services = [s for s in args.services.split(",") if s]
    unknown = sorted(set(services) - set(SERVICES))
    if unknown or args.rate <= 0 or args.seconds <= 0:
        parser.error(f"unknown services {unknown}" if unknown
                     else "--rate and --seconds must be positive")
    run(args.rate, args.seconds, services)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
