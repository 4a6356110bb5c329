"""The batch subscribers' poll (shared/consumer.py `_poll`): no sleep after a poll that has
already waited for records, a sleep after one that came back early, so that it cannot spin."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest

from shared import consumer as consumer_module

WAIT_MS = 20
real_sleep = asyncio.sleep


class FakeConsumer:
    def __init__(self, records: dict[str, list[int]], waits: bool) -> None:
        self.records = records
        self.waits = waits

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[str, list[int]]:
        if self.waits and not self.records:
            await real_sleep(timeout_ms / 1000)
        return self.records


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The sleeps `_poll` asks for (recorded, then taken for real)."""
    asked: list[float] = []

    async def sleep(seconds: float) -> None:
        asked.append(seconds)
        await real_sleep(seconds)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    return asked


async def poll(fake: FakeConsumer) -> tuple[Any, ...]:
    subscriber = SimpleNamespace(batch_timeout_ms=WAIT_MS, max_records=100)
    return await consumer_module._poll(subscriber, fake)


async def test_records_are_returned_at_once(sleeps: list[float]) -> None:
    fake = FakeConsumer({"tp0": [1, 2], "tp1": [3]}, waits=True)
    assert await poll(fake) == (1, 2, 3)
    assert sleeps == []


async def test_no_sleep_after_a_poll_that_waited(sleeps: list[float]) -> None:
    assert await poll(FakeConsumer({}, waits=True)) == ()
    # FastStream's own poll sleeps the whole wait again here, delaying the next record.
    assert all(seconds < 0.002 for seconds in sleeps), sleeps


async def test_a_poll_that_came_back_early_sleeps_the_rest(sleeps: list[float]) -> None:
    assert await poll(FakeConsumer({}, waits=False)) == ()
    assert len(sleeps) == 1
    assert WAIT_MS / 1000 * 0.5 < sleeps[0] <= WAIT_MS / 1000
