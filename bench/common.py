"""What every benchmark needs: the machine's facts, a throwaway stack, result files."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import psutil

from devstack.proc import free_port
from devstack.stack import Stack, call_api

RESULTS = Path(__file__).resolve().parent / "results"


def python_speed() -> float:
    """Millions of simple loop iterations per second in this Python, best of three: shared
    machines of one kind differ in speed from hour to hour (2x has been seen), so each
    result records it to compare runs made at different times."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        total = 0
        for i in range(2_000_000):
            total += i * i
        best = min(best, time.perf_counter() - started)
    return round(2.0 / best, 1)


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_average_at_start": os.getloadavg(),
        "python_loop_million_per_second": python_speed(),
    }


def service_rss_mb(stack: Stack) -> dict[str, float]:
    """Resident memory of each service process, and apart from the generator its render
    pool (separate processes, started on first use)."""
    pids = {name: stack.service_pid(name) for name in ("api", "generator", "finalizer")}
    rss = {name: rss_mb(pid, children=False) for name, pid in pids.items() if pid}
    if pids["generator"]:
        rss["generator render pool"] = round(rss_mb(pids["generator"]) - rss["generator"], 1)
    return rss


def process_cpu(proc: psutil.Process) -> float:
    with suppress(psutil.NoSuchProcess):
        times = proc.cpu_times()
        return float(times.user + times.system)
    return 0.0


def cpu_seconds(stack: Stack) -> dict[str, float]:
    """CPU time (user + system) used so far by each process of the stack: the services,
    the broker, and PostgreSQL with all its backends, those that have ended included."""
    pids = {name: stack.service_pid(name) for name in ("api", "generator", "finalizer")}
    pids["kafka"] = stack.kafka.pid()
    out = {name: process_cpu(psutil.Process(pid)) for name, pid in pids.items() if pid is not None}
    if (pg := stack.postgres.pid()) is not None:
        root = psutil.Process(pg)
        out["postgres"] = sum(process_cpu(p) for p in (root, *root.children(recursive=True)))
        # and the backends that have ended (connections closed, autovacuum workers), whose
        # time the server collected when they exited
        with suppress(psutil.NoSuchProcess):
            times = root.cpu_times()
            out["postgres"] += times.children_user + times.children_system
    return out


def cpu_spent(before: dict[str, float], after: dict[str, float], *, scale: float,
              digits: int = 2) -> dict[str, float]:
    """Each process's CPU seconds between two `cpu_seconds` readings, times `scale` (1000 /
    jobs: milliseconds per job; 100 / seconds: percent of a core)."""
    return {name: round((after[name] - before[name]) * scale, digits)
            for name in after if name in before}


def settle(stack: Stack, *, least: float = 30.0, most: float = 90.0,
           window: float = 3.0) -> dict[str, Any]:
    """Wait, after a warm-up, until the stack's idle CPU has settled, so that what follows
    measures the steady state: the broker's JIT compiler works through its queue for tens of
    seconds after the load that filled it (measured: the broker at a third of a core for
    about 25 s, then a seventh; its compiler threads were 13% of the machine's CPU during a
    200 jobs/s run that followed a warm-up at once). Waits at least `least` seconds, then
    until a window's CPU is within a fifth of the quietest window so far, at most `most`."""
    started = time.monotonic()
    quietest = float("inf")
    while True:
        before = cpu_seconds(stack)
        time.sleep(window)
        busy = sum(cpu_spent(before, cpu_seconds(stack), scale=100 / window).values())
        quietest = min(quietest, busy)
        waited = time.monotonic() - started
        if (waited >= least and busy <= 1.2 * quietest) or waited >= most:
            return {"seconds": round(waited, 1),
                    "last_window_cpu_percent_of_a_core": round(busy, 1)}


def write_result(name: str, data: dict[str, Any], path: Path | None = None) -> Path:
    """The result as JSON, with the machine and the time: `RESULTS/<name>.json` unless
    `path` says where."""
    path = path or RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"benchmark": name, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine(), **data}
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


@contextmanager
def bench_stack(extra_env: dict[str, str] | None = None,
                pg_settings: dict[str, str] | None = None) -> Iterator[Stack]:
    """A whole stack of its own (PostgreSQL, Kafka, three services) in a temporary directory."""
    run_dir = Path(tempfile.mkdtemp(prefix="influgen-bench-"))
    stack = Stack(run_dir, api_port=free_port(), pg_port=free_port(), kafka_port=free_port(),
                  kafka_controller_port=free_port(), extra_env=extra_env,
                  pg_settings=pg_settings)
    try:
        stack.up()
        yield stack
    finally:
        stack.down()
        shutil.rmtree(run_dir, ignore_errors=True)


def sandbox_character(stack: Stack) -> tuple[str, str]:
    """A sandbox workspace with credits for any load, and an autopilot character in it: its
    API key and the character's id."""
    workspace = call_api("POST", f"{stack.api_url}/v1/admin/workspaces", stack.admin_token,
                         {"name": "bench", "credits": 1_000_000_000, "sandbox": True})
    character = call_api("POST", f"{stack.api_url}/v1/characters", workspace["api_key"],
                         {"name": "Bench", "review_mode": "autopilot"})
    return workspace["api_key"], character["id"]


def rss_mb(pid: int, children: bool = True) -> float:
    """Resident memory of a process, with its children (the generator's render pool)
    unless `children` is false."""
    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True) if children else ():
        with suppress(psutil.NoSuchProcess):
            total += child.memory_info().rss
    return round(float(total) / 2**20, 1)


def vegeta() -> str:
    """The vegeta load generator (open model, constant rate), built from the Go proxy once."""
    cached = Path.home() / ".cache" / "influgen" / "bin" / "vegeta"
    if cached.exists():
        return str(cached)
    found = shutil.which("vegeta")
    if found:
        return found
    subprocess.run(["go", "install", "github.com/tsenart/vegeta/v12@v12.12.0"], check=True,
                   env={**os.environ, "GOBIN": str(cached.parent)})
    return str(cached)
