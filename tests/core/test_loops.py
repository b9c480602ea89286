import asyncio
import logging

import pytest

from chargingd.core.loops import run_every, wait_or_stop


async def test_a_failing_pass_is_logged_and_the_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = asyncio.Event()
    calls: list[int] = []

    async def one_pass() -> None:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("boom")
        if len(calls) == 3:
            stop.set()

    with caplog.at_level(logging.ERROR):
        await asyncio.wait_for(
            run_every(stop, 0.001, one_pass, log=logging.getLogger("t"), what="demo"), 5
        )
    assert calls == [0, 1, 2]
    assert "demo pass failed" in caplog.text


async def test_wait_or_stop_returns_at_once_when_stopped() -> None:
    stop = asyncio.Event()
    assert await wait_or_stop(stop, 0.001) is False
    stop.set()
    assert await asyncio.wait_for(wait_or_stop(stop, 60), 1) is True
