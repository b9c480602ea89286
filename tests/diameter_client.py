"""A Diameter client over real TCP for the tests: CER, CCRs, answers to ASR/RAR.

Built on chargingd.diameter.client (pre-encoded requests) and the codec's Framer;
server requests are answered with ``answer_asr`` / ``answer_rar`` and recorded.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from dataclasses import dataclass, field

from chargingd.diameter import client as cl
from chargingd.diameter import codec as dc
from chargingd.diameter.dictionary import A, Cmd
from chargingd.diameter.messages import result_code

ME = cl.ClientIdentity("scscf.ims.test", "ims.test", destination_realm="chargingd.test")


@dataclass
class Answered:
    """What the tests read of a CCA."""

    result: int
    mscc_result: int | None
    granted: int | None
    fui: bool
    msg: dc.Message

    @classmethod
    def of(cls, msg: dc.Message) -> Answered:
        mscc = msg.get(A.MULTIPLE_SERVICES_CREDIT_CONTROL)
        avps = mscc.group() if mscc is not None else msg.avps
        gsu = dc.find(avps, A.GRANTED_SERVICE_UNIT)
        t = dc.find(gsu.group(), A.CC_TIME) if gsu is not None else None
        rc = dc.find(avps, A.RESULT_CODE) if mscc is not None else None
        return cls(
            result=result_code(msg),
            mscc_result=rc.u32() if rc is not None else None,
            granted=t.u32() if t is not None else None,
            fui=dc.find(avps, A.FINAL_UNIT_INDICATION) is not None,
            msg=msg,
        )


@dataclass
class TcpClient:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    me: cl.ClientIdentity = ME
    answer_asr: int = 2001
    answer_rar: int = 2001
    server_requests: list[dc.Message] = field(default_factory=list)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    # RFC 6733 §3: End-to-End ids unique per originator, also across restarts.
    _ids: itertools.count[int] = field(
        default_factory=lambda: itertools.count(random.getrandbits(31))
    )
    _pending: dict[int, asyncio.Future[dc.Message]] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, port: int, me: cl.ClientIdentity = ME) -> TcpClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        client = cls(reader, writer, me)
        client._task = asyncio.create_task(client._read())
        return client

    async def _read(self) -> None:
        framer = dc.Framer(1 << 20)
        try:
            while data := await self.reader.read(65536):
                for frame in framer.feed(data):
                    self._frame(dc.decode(frame))
        except (ConnectionError, dc.Malformed):
            pass
        finally:
            self.closed.set()
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("closed"))

    def _frame(self, msg: dc.Message) -> None:
        if msg.is_request:
            self.server_requests.append(msg)
            code = self.answer_asr if msg.command == Cmd.ABORT_SESSION else self.answer_rar
            self.writer.write(cl.answer_to(msg, self.me, code))
            return
        fut = self._pending.pop(msg.hop_by_hop, None)
        if fut is not None and not fut.done():
            fut.set_result(msg)

    def next_ids(self) -> tuple[int, int]:
        n = next(self._ids)
        return n, n

    async def ask(self, data: bytes, *, timeout_s: float = 5.0) -> dc.Message:
        """Send a request (its Hop-by-Hop id read from the bytes) and await its answer."""
        hbh = int.from_bytes(data[12:16], "big")
        fut: asyncio.Future[dc.Message] = asyncio.get_running_loop().create_future()
        self._pending[hbh] = fut
        self.writer.write(data)
        return await asyncio.wait_for(fut, timeout_s)

    async def cer(self, **kw: object) -> dc.Message:
        return await self.ask(cl.cer(self.me, *self.next_ids(), **kw))  # type: ignore[arg-type]

    async def ccr(self, call: cl.Call, request_type: int, number: int, **kw: object) -> Answered:
        data = cl.ccr(self.me, call, request_type, number, *self.next_ids(), **kw)  # type: ignore[arg-type]
        return Answered.of(await self.ask(data))

    async def close(self) -> None:
        self.writer.close()
        if self._task is not None:
            await asyncio.wait([self._task], timeout=5)


async def open_client(port: int, me: cl.ClientIdentity = ME) -> TcpClient:
    """Connected and capabilities exchanged."""
    client = await TcpClient.connect(port, me)
    cea = await client.cer()
    assert result_code(cea) == 2001, cea
    return client
