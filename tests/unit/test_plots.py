"""The benchmark plots draw from the result files' shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import plots

MACHINE = {"cores": 2, "cpu_model": "test"}


def test_every_result_shape_gets_a_png(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plots, "RESULTS", tmp_path)
    results = {
        "faults": {"machine": MACHINE, "accepted": 10, "lost": 0, "duplicated_effects": 0,
                   "faults": [{"target": "api", "round": 1, "restarted_s": 1.0,
                               "recovered_s": 2.5}]},
        "pipeline": {"machine": MACHINE, "runs": [
            {"fetch_max_wait_ms": 10, "rate": r, "p50_ms": 20.0, "p99_ms": 90.0,
             "baseline_kafka_round_trip": {"p50_ms": 1.0}} for r in (50, 200)],
            "baseline_floor": {"runs": [{"rate": r, "p50_ms": 9.0} for r in (50, 200)]},
            "stages": {"rate": 200, "videos": 2000, "p50_ms": 20.0, "stages": [
                {"from": "posted", "to": "job_event_sent", "p50_ms": 5.0, "p90_ms": 9.0},
                {"from": "job_event_sent", "to": "accepted", "p50_ms": None,
                 "p90_ms": None}]}},
        "render": {"machine": MACHINE, "results": [
            {"resolution": "480x854", "preset": "veryfast", "ours_video_seconds_per_second": 15,
             "baseline_video_seconds_per_second": 18}]},
    }
    for name, data in results.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
    made = plots.main()
    assert sorted(p.name for p in made) == ["faults.png", "pipeline.png", "render.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in made)
