"""The CLI's live progress lines, against a fake client (the real one is in tests/e2e)."""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, cast

import pytest

from influgen.cli import _follow
from influgen.client import Client


def _event(status: str, state: str, progress: int) -> dict[str, Any]:
    return {"event": "status",
            "data": {"status": status, "job": {"state": state, "progress": progress}}}


class FakeClient:
    """Replays a stream of status events; the queue position is read as the CLI asks."""

    def __init__(self, events: list[dict[str, Any]], positions: list[int | None],
                 final: str) -> None:
        self._events = events
        self._positions = positions
        self._final = final

    async def events(self, video_id: Any) -> AsyncIterator[dict[str, Any]]:
        for event in self._events:
            yield event

    async def video(self, video_id: Any) -> Any:
        position = self._positions.pop(0) if self._positions else None
        job = SimpleNamespace(state="succeeded", progress=100, queue_position=position,
                              error=None)
        return SimpleNamespace(id=video_id, status=self._final, job=job, media=None,
                               duration_seconds=5, aspect_ratio="9:16", model_id="m",
                               quality_tier="standard")


async def test_progress_shows_the_queue_position_while_queued(
        capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeClient([_event("queued", "queued", 0), _event("queued", "queued", 0),
                       _event("generating", "running", 40), _event("ready", "succeeded", 100)],
                      positions=[3, 1], final="ready")
    code = await _follow(cast(Client, fake), "v1", argparse.Namespace(json=False))
    lines = capsys.readouterr().err.splitlines()
    assert code == 0
    assert lines == [
        "[                    ]   0%  queued / queued  (queue position 3)",
        "[                    ]   0%  queued / queued  (queue position 1)",
        "[########            ]  40%  generating / running",
        "[####################] 100%  ready / succeeded",
    ]


async def test_a_failed_video_exits_non_zero(capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeClient([_event("failed", "failed", 0)], positions=[], final="failed")
    assert await _follow(cast(Client, fake), "v1", argparse.Namespace(json=False)) == 1
    assert "failed / failed" in capsys.readouterr().err
