"""Worker -> main process reports over an inherited pipe (one per worker).

The main process creates the pipe when it spawns a worker and passes the write end
(``--report-fd``); the worker writes a length-prefixed msgpack document every
``report_interval_s``: its cumulative counters and its status. The read end seeing
EOF means the worker is gone: its last counters are kept as "retired" so the host's
sums never go backwards (monitoring/host.py). Local to the host by construction: two
hosts never mix (the old ``stats:radius`` hash in Redis was keyed by pid).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
from collections.abc import Callable
from typing import Any

import msgpack

log = logging.getLogger("chargingd.monitoring")

_LEN = struct.Struct("!I")
MAX_REPORT_BYTES = 16 << 20
MAX_BUFFERED_BYTES = 1 << 20  # the main process does not read: drop reports, not memory


def encode(doc: dict[str, Any]) -> bytes:
    body: bytes = msgpack.packb(doc, use_bin_type=True)
    return _LEN.pack(len(body)) + body


class ReportSender:
    """The worker's end: ``send(doc)`` never blocks; reports are dropped while the
    pipe is full (the next one carries the same cumulative counters)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._transport: asyncio.WriteTransport | None = None
        self.dropped = 0

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        pipe = os.fdopen(self.fd, "wb", buffering=0)
        self._transport, _ = await loop.connect_write_pipe(asyncio.Protocol, pipe)

    def send(self, doc: dict[str, Any]) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() > MAX_BUFFERED_BYTES:
            self.dropped += 1
            return
        transport.write(encode(doc))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None


async def receive_reports(
    fd: int, on_report: Callable[[dict[str, Any]], None], on_eof: Callable[[], None]
) -> None:
    """The main process's end of one worker's pipe: decode reports until EOF."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    pipe = os.fdopen(fd, "rb", buffering=0)
    transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    try:
        while True:
            try:
                head = await reader.readexactly(_LEN.size)
                (size,) = _LEN.unpack(head)
                if size > MAX_REPORT_BYTES:
                    log.error("worker report of %d bytes refused; channel closed", size)
                    return
                body = await reader.readexactly(size)
            except asyncio.IncompleteReadError:
                return
            try:
                doc = msgpack.unpackb(body, raw=False)
            except ValueError as exc:
                log.error("undecodable worker report dropped: %s", exc)
                continue
            if isinstance(doc, dict):
                on_report(doc)
    finally:
        on_eof()
        with contextlib.suppress(OSError):
            transport.close()
