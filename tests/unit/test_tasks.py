"""supervised(): a long-running loop that raises is logged with its traceback and restarted; cancel stops it."""

from __future__ import annotations

import asyncio
import logging

import pytest

from node.core.tasks import Backoff, supervised

FAST = Backoff(first=0.001, cap=0.004, jitter=0.5)


async def test_a_loop_that_raises_is_logged_with_its_traceback_and_restarted(caplog: pytest.LogCaptureFixture):
    runs: list[int] = []
    again = asyncio.Event()

    async def loop() -> None:
        runs.append(len(runs))
        if len(runs) < 3:
            raise RuntimeError(f"bug number {len(runs)}")
        again.set()
        await asyncio.Event().wait()  # the third run keeps going

    caplog.set_level(logging.ERROR, logger="node.core.tasks")
    task = asyncio.create_task(supervised("the test loop", loop, backoff=FAST))
    async with asyncio.timeout(5):
        await again.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert runs == [0, 1, 2]
    failures = [r for r in caplog.records if "the test loop failed" in r.getMessage()]
    assert len(failures) == 2 and all(r.exc_info is not None for r in failures)
    assert "bug number 1" in caplog.text and "Traceback" in caplog.text


async def test_a_loop_that_returns_is_restarted_too(caplog: pytest.LogCaptureFixture):
    runs = 0

    async def loop() -> None:
        nonlocal runs
        runs += 1
        if runs >= 3:
            await asyncio.Event().wait()

    task = asyncio.create_task(supervised("the short loop", loop, backoff=FAST))
    async with asyncio.timeout(5):
        while runs < 3:
            await asyncio.sleep(0.001)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert "the short loop stopped by itself" in caplog.text


async def test_cancelling_stops_it_while_running_and_while_waiting_to_restart():
    started = asyncio.Event()

    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(supervised("forever", forever, backoff=FAST))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    async def failing() -> None:
        raise RuntimeError("always")

    slow = asyncio.create_task(supervised("failing", failing, backoff=Backoff(first=60, cap=60)))
    await asyncio.sleep(0.01)  # now in its 60 s backoff
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow


def test_backoff_doubles_up_to_its_cap_with_bounded_jitter():
    backoff = Backoff(first=1, cap=8, jitter=0.25)
    for failures, base in [(1, 1), (2, 2), (3, 4), (4, 8), (10, 8)]:
        assert base <= backoff.delay(failures) <= base * 1.25
