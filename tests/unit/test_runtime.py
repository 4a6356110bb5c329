"""The waiting and stopping helpers the services' loops rely on to shut down."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from shared.runtime import serve_until_stopped, stop_task, wait_event


async def test_wait_event_reports_whether_the_event_was_set() -> None:
    event = asyncio.Event()
    assert await wait_event(event, 0.01) is False
    asyncio.get_running_loop().call_soon(event.set)
    assert await wait_event(event, 5) is True


async def test_a_cancel_arriving_with_the_event_is_not_swallowed() -> None:
    # The race of CPython gh-86296: the event is set and the waiter cancelled in the same
    # loop step. `asyncio.wait_for` on 3.11 returns normally here and the loop around it
    # never ends; this is what hung a generator worker's shutdown in CI.
    event = asyncio.Event()
    rounds = 0

    async def loop_until_cancelled() -> None:
        nonlocal rounds
        while True:
            event.clear()
            await wait_event(event, 10)
            rounds += 1

    task = asyncio.create_task(loop_until_cancelled())
    await asyncio.sleep(0)  # the task now waits on the event
    event.set()
    task.cancel()
    async with asyncio.timeout(2):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert rounds == 0


async def test_stop_task_ends_the_task_whatever_it_raised() -> None:
    async def fails_when_cancelled() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            raise RuntimeError("cleanup failed")

    task = asyncio.create_task(fails_when_cancelled())
    await asyncio.sleep(0)
    await stop_task(task)
    assert task.done()


async def test_stop_task_does_not_swallow_the_callers_cancellation() -> None:
    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                await asyncio.sleep(0.2)  # slow to stop
                return

    inner = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    caller = asyncio.create_task(stop_task(inner))
    await asyncio.sleep(0.05)  # the caller waits for the inner task
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await inner


async def test_a_background_task_that_ends_ends_the_service(tmp_path: Path) -> None:
    async def dies() -> None:
        await asyncio.sleep(0.01)
        raise ConnectionError("lost it")

    forever = asyncio.create_task(asyncio.sleep(60), name="relay")
    ready = tmp_path / "service.ready"
    with pytest.raises(RuntimeError, match="'worker' ended: ConnectionError"):
        await serve_until_stopped([asyncio.create_task(dies(), name="worker"), forever], ready)
    assert not ready.exists()
    await stop_task(forever)


async def test_the_stop_signal_ends_the_service_quietly(tmp_path: Path) -> None:
    """Ready while it serves; no longer ready once it stops (`make up` waits for a process
    without its ready file to serve or exit)."""
    ready = tmp_path / "service.ready"
    forever = asyncio.create_task(asyncio.sleep(60))
    seen: list[bool] = []
    loop = asyncio.get_running_loop()
    loop.call_later(0.03, lambda: seen.append(ready.read_text() == str(os.getpid())))
    loop.call_later(0.05, os.kill, os.getpid(), signal.SIGTERM)
    await serve_until_stopped([forever], ready)
    assert seen == [True]
    assert not ready.exists()
    assert not forever.done()  # the caller stops its tasks itself
    await stop_task(forever)
