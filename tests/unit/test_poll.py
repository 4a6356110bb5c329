"""The batch subscribers' poll (shared/consumer.py `_poll`): no sleep after a poll that has
already waited for records, a sleep after one that came back early, so that it cannot spin;
and, when a flush could not vouch for the applied effects, the seek back to the committed
offsets before the next poll."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaConnectionError

from shared import consumer as consumer_module
from shared.db import DurabilityUnknown

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
    return await consumer_module._poll(subscriber, consumer_module.AppliedOffsets("test"), fake)


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


TP0, TP1 = TopicPartition("t", 0), TopicPartition("t", 1)


class RewindingConsumer(FakeConsumer):
    """Partitions t:0 (committed up to 3) and t:1 (nothing committed); records the seeks
    and commits; `away` calls to `committed` fail as with the broker unreachable."""

    def __init__(self, away: int = 0) -> None:
        super().__init__({}, waits=False)
        self.away = away
        self.sought: dict[TopicPartition, int | str] = {}
        self.commits: list[dict[TopicPartition, int]] = []

    def assignment(self) -> set[TopicPartition]:
        return {TP0, TP1}

    async def committed(self, tp: TopicPartition) -> int | None:
        if self.away:
            self.away -= 1
            raise KafkaConnectionError("the broker is away")
        return 3 if tp == TP0 else None

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.sought[tp] = offset

    async def seek_to_beginning(self, tp: TopicPartition) -> None:
        self.sought[tp] = "beginning"

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(dict(offsets))


def record(tp: TopicPartition, offset: int) -> Any:
    return SimpleNamespace(topic=tp.topic, partition=tp.partition, offset=offset)


async def test_what_a_flush_cannot_vouch_for_is_read_again(sleeps: list[float]) -> None:
    flushes: list[str] = []

    async def flush() -> None:
        flushes.append("lost" if not flushes else "ok")
        if flushes[-1] == "lost":
            raise DurabilityUnknown("as after a crash")

    fake = RewindingConsumer(away=1)
    offsets = consumer_module.AppliedOffsets("test", flush)
    subscriber = SimpleNamespace(batch_timeout_ms=WAIT_MS, max_records=100)
    try:
        offsets.applied(fake, [record(TP0, 3), record(TP0, 4), record(TP1, 0)])
        await offsets.commit()
        assert (flushes, fake.commits) == (["lost"], [])
        offsets.applied(fake, [record(TP0, 5)])  # a batch that was being applied meanwhile
        await offsets.commit()  # nothing is committed before the rewind
        assert (flushes, fake.commits) == (["lost"], [])
        # the broker away: nothing polled, the rewind tried again at the next poll
        assert await consumer_module._poll(subscriber, offsets, fake) == ()
        assert fake.sought == {}
        assert consumer_module.RETRY_PAUSE_SECONDS in sleeps
        await consumer_module._poll(subscriber, offsets, fake)
        assert fake.sought == {TP0: 3, TP1: "beginning"}
        await offsets.commit()  # what was applied before the rewind is forgotten
        assert fake.commits == []
        offsets.applied(fake, [record(TP0, 3)])
        await offsets.commit()
        assert (flushes, fake.commits) == (["lost", "ok"], [{TP0: 4}])
    finally:
        await offsets.close()
