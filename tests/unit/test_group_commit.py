"""Group commit, against a fake batch writer: who waits, who shares a batch, what a failure
costs the others."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from shared.group_commit import GroupCommit


class Refused(Exception):
    pass


class Broken(Exception):
    pass


class FakeWriter:
    """Doubles each item; refuses negative items; a batch holding 1000 fails as a whole."""

    def __init__(self, delay: float = 0.01) -> None:
        self.batches: list[list[int]] = []
        self.delay = delay
        self.in_flight = 0
        self.most_in_flight = 0

    async def __call__(self, items: list[int]) -> Sequence[int | Exception]:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay)
            if 1000 in items:
                raise Broken("1000 breaks its batch")
            self.batches.append(items)
            return [Refused(str(i)) if i < 0 else i * 2 for i in items]
        finally:
            self.in_flight -= 1


async def test_a_lone_item_is_written_at_once_and_alone() -> None:
    writer = FakeWriter(delay=0)
    commit: GroupCommit[int, int] = GroupCommit(writer)
    assert await commit.submit(21) == 42
    assert writer.batches == [[21]]


async def test_items_arriving_while_a_batch_is_written_share_the_next_one() -> None:
    writer = FakeWriter()
    commit: GroupCommit[int, int] = GroupCommit(writer, max_batch=50, max_concurrent=1)
    first = asyncio.ensure_future(commit.submit(0))
    await asyncio.sleep(0)  # its batch has started
    results = await asyncio.gather(*(commit.submit(i) for i in range(1, 100)))
    assert await first == 0
    assert results == [i * 2 for i in range(1, 100)]
    # The first item went alone; the rest queued behind it, in order, 50 at most per batch.
    assert writer.batches == [[0], list(range(1, 51)), list(range(51, 100))]
    assert (commit.batches, commit.items) == (3, 100)


async def test_at_most_max_concurrent_batches_are_in_flight() -> None:
    writer = FakeWriter()
    commit: GroupCommit[int, int] = GroupCommit(writer, max_batch=10, max_concurrent=3)
    await asyncio.gather(*(commit.submit(i) for i in range(200)))
    assert writer.most_in_flight == 3
    assert sorted(i for batch in writer.batches for i in batch) == list(range(200))


async def test_a_refusal_is_raised_to_its_submitter_only() -> None:
    commit: GroupCommit[int, int] = GroupCommit(FakeWriter(), max_concurrent=1)
    results = await asyncio.gather(*(commit.submit(i) for i in (1, -2, 3, -4)),
                                   return_exceptions=True)
    assert (results[0], results[2]) == (2, 6)
    assert isinstance(results[1], Refused)
    assert isinstance(results[3], Refused)


async def test_a_failed_batch_is_written_again_item_by_item() -> None:
    writer = FakeWriter()
    commit: GroupCommit[int, int] = GroupCommit(writer, max_concurrent=1)
    first = asyncio.ensure_future(commit.submit(0))
    await asyncio.sleep(0)
    results = await asyncio.gather(*(commit.submit(i) for i in (12, 1000, 14)),
                                   return_exceptions=True)
    assert await first == 0
    assert (results[0], results[2]) == (24, 28)
    assert isinstance(results[1], Broken)
    assert writer.batches == [[0], [12], [14]]


async def test_a_failure_that_is_not_the_items_fault_fails_the_batch_once() -> None:
    writer = FakeWriter()
    commit: GroupCommit[int, int] = GroupCommit(writer, max_concurrent=1,
                                                retry_alone=lambda exc: False)
    first = asyncio.ensure_future(commit.submit(0))
    await asyncio.sleep(0)
    results = await asyncio.gather(*(commit.submit(i) for i in (12, 1000, 14)),
                                   return_exceptions=True)
    assert await first == 0
    assert all(isinstance(r, Broken) for r in results)
    assert writer.batches == [[0]]


async def test_a_submitter_cancelled_before_its_batch_starts_is_not_written() -> None:
    writer = FakeWriter()
    commit: GroupCommit[int, int] = GroupCommit(writer, max_concurrent=1)
    first = asyncio.ensure_future(commit.submit(1))
    await asyncio.sleep(0)
    waiting = asyncio.ensure_future(commit.submit(2))
    third = asyncio.ensure_future(commit.submit(3))
    await asyncio.sleep(0)
    waiting.cancel()
    assert (await first, await third) == (2, 6)
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert writer.batches == [[1], [3]]


async def test_close_waits_for_what_is_pending() -> None:
    writer = FakeWriter()
    commit: GroupCommit[int, int] = GroupCommit(writer, max_concurrent=1)
    submitted = [asyncio.ensure_future(commit.submit(i)) for i in range(5)]
    await asyncio.sleep(0)
    await commit.close()
    assert all(s.done() for s in submitted)
    assert sorted(i for batch in writer.batches for i in batch) == list(range(5))
