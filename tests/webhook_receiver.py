"""A local HTTP server (aiohttp, 127.0.0.1, a free port) that receives alert webhooks.

Answers each POST with the next status of ``statuses`` (then 200), records every
request, and can hold requests until released (a receiver that hangs).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    url: str
    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)  # every request, answered or not
    hold: asyncio.Event | None = None  # set: requests wait for it before answering
    retry_after: str = ""  # the Retry-After header of every non-2xx answer ("" none)
    _arrived: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def wait_for(self, count: int, timeout_s: float = 10.0) -> list[Received]:
        """Until at least ``count`` requests arrived (never a fixed sleep)."""
        async with asyncio.timeout(timeout_s):
            async with self._arrived:
                await self._arrived.wait_for(lambda: len(self.received) >= count)
        return self.received

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        async with self._arrived:
            self.received.append(Received(body, dict(request.headers)))
            self._arrived.notify_all()
        if self.hold is not None:
            await self.hold.wait()
        status = self.statuses.pop(0) if self.statuses else 200
        headers = {"Retry-After": self.retry_after} if status >= 300 and self.retry_after else {}
        return web.Response(status=status, text="ok" if status < 300 else "no", headers=headers)


@asynccontextmanager
async def webhook_receiver(path: str = "/hook") -> AsyncIterator[Receiver]:
    app = web.Application()
    receiver = Receiver(url="")
    app.router.add_post(path, receiver.handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    receiver.url = f"http://127.0.0.1:{port}{path}"
    try:
        yield receiver
    finally:
        if receiver.hold is not None:
            receiver.hold.set()
        await runner.cleanup()
