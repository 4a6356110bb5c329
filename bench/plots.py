"""`python -m bench.plots`: a PNG beside each result in bench/results/ where a picture says
more than the JSON (latency against rate, recovery per fault, render speed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from bench.common import RESULTS


def _machine(data: dict[str, Any]) -> str:
    m = data.get("machine", {})
    return f"{m.get('cores')} cores, {m.get('cpu_model', '?')}, {data.get('measured_at', '')}"


def intake(data: dict[str, Any]) -> Any:
    rates = data["intake"]["rates"]
    fig, (lat, thr) = plt.subplots(1, 2, figsize=(11, 4.2))
    x = [r["target_rate"] for r in rates]
    for q in ("p50", "p99", "p99.9"):
        lat.plot(x, [r["latency_ms"][q] for r in rates], marker="o", label=q)
    lat.axhline(data["goals"]["p99_ms_at_1000_at_most"], color="grey", ls="--",
                label="goal: p99 at 1,000/s")
    lat.set(xlabel="offered requests/s", ylabel="latency (ms)", yscale="log",
            title="POST /v1/videos latency (sandbox, whole stack)")
    lat.legend()
    thr.plot(x, [r["ok_per_second"] for r in rates], marker="o", label="accepted/s")
    thr.plot(x, x, color="grey", ls=":", label="offered")
    sat = data["intake"]["saturation"]["ok_per_second"]
    thr.axhline(sat, color="C3", ls="--", label=f"saturation {sat:.0f}/s")
    thr.axhline(data["goals"]["saturation_at_least_per_second"], color="grey", ls="--",
                label="goal")
    thr.set(xlabel="offered requests/s", ylabel="accepted requests/s",
            title=f"beside: bare aiohttp "
            f"{data['baseline_bare_aiohttp']['saturation']['ok_per_second']:.0f}/s, "
            f"asyncpg {data['baseline_asyncpg_insert_transactions']['transactions_per_second']:.0f}"
            " tx/s")
    thr.legend()
    return fig


def pipeline(data: dict[str, Any]) -> Any:
    way = [s for s in data.get("stages", {}).get("stages", []) if s["p50_ms"] is not None]
    if way:  # (results before 2026-12-03 have no stages)
        fig, (ax, st) = plt.subplots(2, 1, figsize=(9.5, 8), height_ratios=(4.2, 3))
        _stages(st, data["stages"], way)
    else:
        fig, ax = plt.subplots(figsize=(9.5, 4.2))
    for i, wait in enumerate(sorted({r["fetch_max_wait_ms"] for r in data["runs"]})):
        runs = [r for r in data["runs"] if r["fetch_max_wait_ms"] == wait]
        x = [r["rate"] for r in runs]
        ax.plot(x, [r["p50_ms"] for r in runs], marker="o", color=f"C{i}",
                label=f"p50, fetch wait {wait} ms")
        ax.plot(x, [r["p99_ms"] for r in runs], marker="s", ls="--", color=f"C{i}",
                label=f"p99, fetch wait {wait} ms")
        ax.plot(x, [r["baseline_kafka_round_trip"]["p50_ms"] for r in runs], ls=":",
                color=f"C{i}", label=f"Kafka round trip p50 ({wait} ms)")
    floor = data.get("baseline_floor", {}).get("runs", [])  # (results before 2026-12-02)
    if floor:
        ax.plot([f["rate"] for f in floor], [f["p50_ms"] for f in floor], marker="^",
                ls="-.", color="black", label="floor p50 (bench/floor.py)")
    ax.axhline(30, color="grey", ls="--", lw=0.8, label="goals: p50 30 ms, p99 150 ms")
    ax.axhline(150, color="grey", ls="--", lw=0.8)
    ax.set(xlabel="jobs/s", ylabel="202 -> video.approved (ms)", yscale="log",
           title="Pipeline overhead (sandbox provider)")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig


def _stages(ax: Any, traced: dict[str, Any], way: list[dict[str, Any]]) -> None:
    labels = [f"{s['from']} -> {s['to']}" for s in way]
    ys = range(len(way))
    ax.barh(ys, [s["p90_ms"] for s in way], color="C1", alpha=0.5, label="p90")
    ax.barh(ys, [s["p50_ms"] for s in way], color="C0", label="p50")
    ax.set_yticks(list(ys), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set(xlabel="ms", title=f"Where a video's time goes at {traced['rate']} jobs/s "
           f"({traced['videos']} videos; 202 -> event p50 {traced['p50_ms']} ms)")
    ax.legend(fontsize=7)


def faults(data: dict[str, Any]) -> Any:
    fig, ax = plt.subplots(figsize=(10, 4.2))
    rows = data["faults"]
    labels = [f"{f['target']}\n#{f['round']}" for f in rows]
    ax.bar(labels, [f["recovered_s"] for f in rows], label="to a finished new video")
    ax.bar(labels, [f["restarted_s"] for f in rows], label="to running and ready")
    ax.set(ylabel="seconds after the fault",
           title=f"Recovery: {data['accepted']} accepted, {data['lost']} lost, "
                 f"{data['duplicated_effects']} duplicated")
    ax.legend()
    ax.tick_params(axis="x", labelsize=7)
    return fig


def render(data: dict[str, Any]) -> Any:
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    rows = data["results"]
    labels = [f"{r['resolution']}\n{r['preset']}" for r in rows]
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["ours_video_seconds_per_second"] for r in rows], 0.4,
           label="local renderer")
    ax.bar([x + 0.2 for x in xs], [r["baseline_video_seconds_per_second"] for r in rows], 0.4,
           label="ffmpeg testsrc2 + libx264 (baseline)")
    ax.set_xticks(list(xs), labels, fontsize=7)
    ax.set(ylabel="seconds of video per second", title="Renderer speed")
    ax.legend()
    return fig


PLOTS = {"intake": intake, "pipeline": pipeline, "faults": faults, "render": render}


def draw(kind: str, data: dict[str, Any], path: Path) -> Path:
    """The `kind` plot of a result, with the machine it ran on, written to `path`."""
    fig = PLOTS[kind](data)
    fig.suptitle(_machine(data), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(names: list[str] | None = None) -> list[Path]:
    """A PNG beside each result file in RESULTS (of `names`, or all)."""
    made = []
    for name in PLOTS:
        source = RESULTS / f"{name}.json"
        if (names is None or name in names) and source.exists():
            made.append(draw(name, json.loads(source.read_text()), source.with_suffix(".png")))
    return made


if __name__ == "__main__":
    for path in main():
        print(path)
