"""HTTP load with vegeta: an open model (requests start on schedule, however slow the answers),
so latency percentiles include queueing and are not flattered by coordinated omission."""

from __future__ import annotations

import base64
import csv
import io
import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import vegeta


@dataclass(frozen=True)
class Target:
    method: str
    url: str
    body: bytes = b""
    headers: dict[str, str] | None = None


def _percentile(sorted_ms: list[float], q: float) -> float:
    if not sorted_ms:
        return float("nan")
    index = min(len(sorted_ms) - 1, max(0, round(q * (len(sorted_ms) - 1))))
    return round(sorted_ms[index], 2)


def attack(target: Target, *, rate: int, seconds: float, ok: int,
           max_workers: int = 256) -> dict[str, Any]:
    """`rate` requests per second (0: as fast as `max_workers` allow) for `seconds`."""
    with tempfile.TemporaryDirectory() as tmp:
        targets = Path(tmp) / "targets.json"
        targets.write_text(json.dumps({
            "method": target.method, "url": target.url,
            "body": base64.b64encode(target.body).decode(),
            "header": {k: [v] for k, v in (target.headers or {}).items()},
        }) + "\n")  # vegeta reads newline-delimited JSON
        args = [vegeta(), "attack", "-format=json", f"-targets={targets}",
                f"-duration={seconds}s", f"-max-workers={max_workers}", "-timeout=10s",
                "-keepalive=true"]
        # Saturation: as many requests in flight as the open-model runs may have, so that
        # the server, not the client, sets the pace (more in flight, larger group commits).
        args += [f"-rate={rate}/1s"] if rate else ["-rate=0", f"-workers={max_workers}"]
        done = subprocess.run(args, capture_output=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"vegeta attack failed: {done.stderr.decode()[-2000:]}")
        raw = done.stdout
        encoded = subprocess.run([vegeta(), "encode", "--to", "csv"], input=raw,
                                 capture_output=True, check=True).stdout.decode()
    rows = list(csv.reader(io.StringIO(encoded)))
    codes: dict[str, int] = {}
    latencies: list[float] = []
    starts: list[int] = []
    for row in rows:
        code = row[1]
        codes[code] = codes.get(code, 0) + 1
        if int(code) == ok:
            latencies.append(int(row[2]) / 1e6)
            starts.append(int(row[0]))
    latencies.sort()
    span = (max(starts) - min(starts)) / 1e9 if len(starts) > 1 else seconds
    return {
        "target_rate": rate or "saturation",
        "seconds": seconds,
        "requests": len(rows),
        "ok": len(latencies),
        "status_codes": codes,
        "ok_per_second": round(len(latencies) / max(span, 1e-9), 1),
        "latency_ms": {"p50": _percentile(latencies, 0.5), "p90": _percentile(latencies, 0.9),
                       "p99": _percentile(latencies, 0.99),
                       "p99.9": _percentile(latencies, 0.999),
                       "max": round(latencies[-1], 2) if latencies else None},
    }
