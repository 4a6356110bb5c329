"""The pipeline benchmark's stage breakdown: each video's instants, split into stages."""

from __future__ import annotations

from bench.pipeline import WAY, Trace, stages
from shared.events import TOPIC_COMPLETED, TOPIC_GENERATED, TOPIC_JOBS


def _event(video: str) -> dict[str, str]:
    return {"correlation_id": video, "event_type": "x"}


def _trace(videos: dict[str, float]) -> Trace:
    """Each video's way at fixed offsets (ms) from its base: posted 0, answered 12, job
    event 10, generated event 21, completion event 40, received 49."""
    trace = Trace()
    for video, base in videos.items():
        trace.posted[video] = base
        trace.answered[video] = base + 0.012
        trace.record(TOPIC_JOBS, _event(video), round((base + 0.010) * 1000))
        trace.record(TOPIC_GENERATED, _event(video), round((base + 0.021) * 1000))
        trace.record(TOPIC_COMPLETED, _event(video), round((base + 0.040) * 1000))
        trace.received[video] = base + 0.049
    return trace


def test_each_stage_is_the_time_between_one_instant_and_the_next() -> None:
    trace = _trace({"a": 1000.0, "b": 2000.0})
    # accept 15 ms, success 19 ms, settlement 33 ms after the POST
    db = {v: (base + 0.015, base + 0.019, base + 0.033)
          for v, base in (("a", 1000.0), ("b", 2000.0))}
    got = stages(trace, db)
    assert got["videos"] == 2
    assert [(s["from"], s["to"]) for s in got["stages"]] == [
        (WAY[i][0], WAY[i + 1][0]) for i in range(len(WAY) - 1)]
    assert [s["p50_ms"] for s in got["stages"]] == [10.0, 5.0, 4.0, 2.0, 12.0, 7.0, 9.0]
    assert [s["p90_ms"] for s in got["stages"]] == [10.0, 5.0, 4.0, 2.0, 12.0, 7.0, 9.0]
    assert got["answered_to_received_p50_ms"] == 37.0


def test_a_video_not_seen_at_every_instant_is_left_out() -> None:
    trace = _trace({"a": 1000.0, "b": 2000.0, "c": 3000.0})
    del trace.sent[TOPIC_GENERATED]["b"]  # its generated event never seen
    db = {"a": (1000.015, 1000.019, 1000.033), "b": (2000.015, 2000.019, 2000.033)}
    got = stages(trace, db)  # "c": no row in the database
    assert got["videos"] == 1
    assert got["stages"][0]["p50_ms"] == 10.0


def test_the_first_record_of_a_video_on_a_topic_counts() -> None:
    trace = Trace()
    trace.record(TOPIC_JOBS, _event("a"), 5_000)
    trace.record(TOPIC_JOBS, _event("a"), 9_000)  # the same event again, redelivered
    trace.record(TOPIC_JOBS, {"no": "id"}, 6_000)
    assert trace.sent == {TOPIC_JOBS: {"a": 5.0}}


def test_nothing_seen_gives_no_figures() -> None:
    got = stages(Trace(), {})
    assert got["videos"] == 0
    assert all(s["p50_ms"] is None for s in got["stages"])
    assert got["answered_to_received_p50_ms"] is None
