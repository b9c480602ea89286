#!/usr/bin/env python3
"""RADIUS load generator: pre-encoded packets, many in flight, several processes.

    loadgen.py --mode auth|acct|call [--procs 2] [--inflight 32] [--seconds 10]

Each process owns --sockets UDP sockets and keeps --inflight requests outstanding
(a slot sends its next packet as soon as the answer to its last one arrives).
Every packet has its own authenticator, so the server's duplicate cache never
answers for it. Prints requests/s, p50/p99/max latency and the generator's CPU.
`call` = Access-Request, Start, 2 Interim-Updates, Stop for one Acct-Session-Id.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import multiprocessing as mp
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from chargingd.radius import codec as rc

Step = tuple[int, bytes]  # (0 = auth port | 1 = acct port, packet)


def _call_attrs(n: int, user: bytes = b"", called: bytes = b"", users: int = 1000) -> bytes:
    # Session ids carry the pid: runs after one another never reuse a closed id.
    pid = os.getpid()
    return b"".join(
        (
            rc.attr_bytes(rc.USER_NAME, user or b"load%d" % (n % users)),
            rc.attr_bytes(rc.CALLING_STATION_ID, b"+4930%07d" % (n % 10_000_000)),
            rc.attr_bytes(rc.CALLED_STATION_ID, called or b"0044207946%04d" % (n % 10000)),
            rc.attr_ipv4(rc.NAS_IP_ADDRESS, "127.0.0.1"),
            rc.attr_bytes(rc.ACCT_SESSION_ID, b"lg-%d-%d" % (pid, n)),
            rc.cisco_vsa(rc.H323_CONF_ID, b"h323-conf-id=%08X%024X" % (pid, n)),
        )
    )


def _acct(ident: int, attrs: bytes, status: int, usage_s: int, secret: bytes) -> bytes:
    extra = rc.attr_u32(rc.ACCT_STATUS_TYPE, status) + rc.attr_u32(rc.ACCT_SESSION_TIME, usage_s)
    return rc.encode_request(rc.ACCOUNTING_REQUEST, ident, attrs + extra, secret)


def build_steps(
    mode: str,
    ident: int,
    n: int,
    secret: bytes,
    user: bytes = b"",
    called: bytes = b"",
    users: int = 1000,
) -> list[Step]:
    """The packets of one unit of work: 1 for auth/acct, 5 for a call."""
    attrs = _call_attrs(n, user, called, users)
    if mode == "auth":
        return [(0, rc.encode_access_request(ident, os.urandom(16), attrs, secret))]
    if mode == "acct":
        return [(1, _acct(ident, attrs, rc.STATUS_INTERIM, 60, secret))]
    return [
        (0, rc.encode_access_request(ident, os.urandom(16), attrs, secret)),
        (1, _acct(ident, attrs, rc.STATUS_START, 0, secret)),
        (1, _acct(ident, attrs, rc.STATUS_INTERIM, 30, secret)),
        (1, _acct(ident, attrs, rc.STATUS_INTERIM, 60, secret)),
        (1, _acct(ident, attrs, rc.STATUS_STOP, 75, secret)),
    ]


def slot_start(slot: int, slots: int, users: int) -> int:
    """The first call number of a slot (of ``slots`` in all processes): its own block of a
    billion numbers (session ids never meet), starting ``users // slots`` users (and
    called numbers) after the slot before, so the slots walk the accounts spread out,
    not in step: in step every outstanding request is the same account's, calling the
    same number at once (a hot account; the fraud rules' concurrency and same-range
    counts fire for an honest load)."""
    return slot * 1_000_000_000 + slot * max(1, users // slots)


@dataclass
class Slot:
    ident: int
    steps: list[Step]  # all units of this slot, flattened
    rebuild: Callable[[], list[Step]]  # fresh packets (new authenticators) when used up
    next_step: int = 0
    sent_ns: int = 0


@dataclass
class Result:
    requests: int = 0
    timeouts: int = 0
    unexpected: int = 0
    latencies_us: list[int] = field(default_factory=list)
    cpu_s: float = 0.0
    elapsed_s: float = 0.0
    pools_rebuilt: int = 0


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, run: _Run) -> None:
        self.run = run
        self.transport: asyncio.DatagramTransport | None = None
        self.slots: dict[int, Slot] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        slot = self.slots.get(data[1]) if len(data) >= 20 else None
        if slot is None or not slot.sent_ns:
            self.run.result.unexpected += 1
            return
        self.run.result.latencies_us.append((time.perf_counter_ns() - slot.sent_ns) // 1000)
        self.run.result.requests += 1
        self.send(slot)

    def send(self, slot: Slot) -> None:
        if not self.run.running:
            slot.sent_ns = 0
            return
        if slot.next_step >= len(slot.steps):
            slot.steps = slot.rebuild()  # never resend old bytes: the server would cache-hit
            slot.next_step = 0
            self.run.result.pools_rebuilt += 1
        port, packet = slot.steps[slot.next_step]
        slot.next_step += 1
        assert self.transport is not None
        slot.sent_ns = time.perf_counter_ns()
        self.transport.sendto(packet, self.run.ports[port])


@dataclass
class _Run:
    ports: tuple[tuple[str, int], tuple[str, int]]
    running: bool = True
    result: Result = field(default_factory=Result)


async def _run(args: argparse.Namespace, proc: int, barrier: object) -> Result:
    host = args.host
    run = _Run(((host, args.auth_port), (host, args.acct_port)))
    secret = args.secret.encode()
    user, called = args.user.encode(), args.called.encode()
    units_per_slot = max(1, args.pool // args.inflight)
    loop = asyncio.get_running_loop()
    sockets: list[_Socket] = []
    for _ in range(args.sockets):
        _, proto = await loop.create_datagram_endpoint(lambda: _Socket(run), local_addr=(host, 0))
        sockets.append(proto)
    slots = args.procs * args.inflight
    for i in range(args.inflight):
        sock = sockets[i % len(sockets)]
        ident = len(sock.slots)
        counter = itertools.count(slot_start(proc * args.inflight + i, slots, args.users))

        def rebuild(
            ident: int = ident, counter: Iterator[int] = counter, units: int = 100
        ) -> list[Step]:
            # Small refills during the run: a long one would stall every slot.
            numbers = [next(counter) for _ in range(units)]
            return [
                s
                for n in numbers
                for s in build_steps(args.mode, ident, n, secret, user, called, args.users)
            ]

        sock.slots[ident] = Slot(ident, rebuild(units=units_per_slot), rebuild)
    if barrier is not None:
        barrier.wait(timeout=120)  # type: ignore[attr-defined]
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for sock in sockets:
        for slot in sock.slots.values():
            sock.send(slot)
    deadline = t0 + args.seconds
    while time.perf_counter() < deadline:
        await asyncio.sleep(0.05)
        _resend_lost(sockets, args.timeout_s, run.result)
    run.running = False
    run.result.elapsed_s = time.perf_counter() - t0
    run.result.cpu_s = time.process_time() - cpu0
    await asyncio.sleep(0.2)  # let the last answers land (not counted in elapsed)
    for sock in sockets:
        if sock.transport is not None:
            sock.transport.close()
    return run.result


def _resend_lost(sockets: list[_Socket], timeout_s: float, result: Result) -> None:
    limit = time.perf_counter_ns() - int(timeout_s * 1e9)
    for sock in sockets:
        for slot in sock.slots.values():
            if slot.sent_ns and slot.sent_ns < limit:
                result.timeouts += 1
                sock.send(slot)  # give up on that one, go on with the next


def _child(args: argparse.Namespace, proc: int, barrier: object, out: object) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(_run(args, proc, barrier))
    out.send(result)  # type: ignore[attr-defined]


def _percentile(sorted_values: list[int], q: float) -> int:
    if not sorted_values:
        return 0
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", choices=["auth", "acct", "call"], default="auth")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--auth-port", type=int, default=1812)
    p.add_argument("--acct-port", type=int, default=1813)
    p.add_argument("--secret", default="testing123")
    p.add_argument("--user", default="", help="User-Name of every call (default: load0..999)")
    p.add_argument("--users", type=int, default=1000, help="calls cycle through load0..N-1")
    p.add_argument("--called", default="", help="Called-Station-Id (default: 0044207946NNNN)")
    p.add_argument("--procs", type=int, default=1)
    p.add_argument("--inflight", type=int, default=32, help="outstanding requests per process")
    p.add_argument("--sockets", type=int, default=8, help="UDP sockets per process")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--timeout-s", type=float, default=1.0)
    p.add_argument("--pool", type=int, default=0, help="pre-encoded units per process")
    args = p.parse_args(argv)
    if not 1 <= args.inflight <= 256 * args.sockets:
        p.error("--inflight must be 1..256 per socket")
    args.pool = args.pool or (30_000 if args.mode == "call" else 150_000)

    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(args.procs + 1)
    pipes = []
    procs = []
    for i in range(args.procs):
        recv_end, send_end = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(args, i, barrier, send_end))
        proc.start()
        send_end.close()  # a child that dies then gives EOFError, not a hang
        pipes.append(recv_end)
        procs.append(proc)
    barrier.wait(timeout=120)
    results: list[Result] = [pipe.recv() for pipe in pipes]
    for proc in procs:
        proc.join()
    _report(args, results)
    return 0


def _report(args: argparse.Namespace, results: list[Result]) -> None:
    latencies = sorted(v for r in results for v in r.latencies_us)
    requests = sum(r.requests for r in results)
    elapsed = max(r.elapsed_s for r in results)
    cpu = sum(r.cpu_s for r in results)
    per_unit = 5 if args.mode == "call" else 1
    rate = requests / elapsed if elapsed else 0.0
    print(
        f"mode={args.mode} procs={args.procs} inflight/proc={args.inflight} "
        f"seconds={elapsed:.1f} requests={requests} timeouts={sum(r.timeouts for r in results)}"
    )
    print(f"requests/s={rate:,.0f}" + (f" calls/s={rate / per_unit:,.0f}" if per_unit > 1 else ""))
    print(
        f"latency_ms p50={_percentile(latencies, 0.50) / 1000:.3f} "
        f"p99={_percentile(latencies, 0.99) / 1000:.3f} "
        f"max={(latencies[-1] if latencies else 0) / 1000:.3f}"
    )
    print(f"generator_cpu_s={cpu:.2f} ({100 * cpu / elapsed if elapsed else 0:.0f}% of one core)")
    rebuilt = sum(r.pools_rebuilt for r in results)
    if rebuilt:
        print(f"note: {rebuilt} slot pools re-encoded during the run (raise --pool to avoid it)")
    if any(r.unexpected for r in results):
        print(f"unexpected answers: {sum(r.unexpected for r in results)}")


if __name__ == "__main__":
    sys.exit(main())
