"""Group commit: items that arrive while a batch is being written wait, and go together in
the next one.

Under light load every item is written at once, alone (no timer, no added latency). Under
heavy load the batches grow by themselves: a transaction costs about the same for one item
as for a hundred, so the throughput follows the load instead of the number of round trips.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: Writes a batch; returns one result (or the exception that refuses it) per item, in order.
WriteBatch = Callable[[list[T]], Awaitable[Sequence[R | Exception]]]


class GroupCommit(Generic[T, R]):
    """Writes submitted items in batches of at most `max_batch`, with at most
    `max_concurrent` batches in flight.

    When a batch of several items fails as a whole (one item may have broken it), each of its
    items is written again alone, so that one bad item costs no other its write; unless
    `retry_alone(exc)` says the failure is not the items' fault (the database is away)."""

    def __init__(
        self,
        write: WriteBatch[T, R],
        *,
        max_batch: int = 128,
        max_concurrent: int = 2,
        retry_alone: Callable[[Exception], bool] = lambda _exc: True,
    ) -> None:
        self._write = write
        self._max_batch = max_batch
        self._max_concurrent = max_concurrent
        self._retry_alone = retry_alone
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._writers: set[asyncio.Task[None]] = set()
        #: Writers running; counted apart from the tasks, whose done-callbacks run late.
        self._active = 0
        #: Batches and items written so far (mean batch size: items / batches).
        self.batches = 0
        self.items = 0

    async def submit(self, item: T) -> R:
        """Write `item` with the next batch; its result, or its exception raised."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._active < self._max_concurrent:
            self._active += 1
            writer = asyncio.create_task(self._drain(), name="group-commit")
            self._writers.add(writer)
            writer.add_done_callback(self._writers.discard)
        return await future

    async def close(self) -> None:
        """Wait for the batches in flight and what is still pending."""
        while self._writers:
            await asyncio.gather(*self._writers, return_exceptions=True)

    async def _drain(self) -> None:
        try:
            while self._pending:
                # An item whose submitter was cancelled before its batch started is dropped.
                taken = [entry for entry in self._pending[: self._max_batch]
                         if not entry[1].done()]
                del self._pending[: self._max_batch]
                if taken:
                    await self._write_batch(taken)
        finally:
            # No await between the empty queue seen above and this: a submit in between
            # would find every writer busy and nobody left to write its item.
            self._active -= 1

    async def _write_batch(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._write([item for item, _ in batch])
        except asyncio.CancelledError:
            for _, future in batch:
                future.cancel()
            raise
        except Exception as exc:
            if len(batch) > 1 and self._retry_alone(exc):
                for entry in batch:
                    await self._write_batch([entry])
                return
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        self.batches += 1
        self.items += len(batch)
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)
