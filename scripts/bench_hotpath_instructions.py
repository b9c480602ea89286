#!/usr/bin/env python3
"""Instructions per item of the daemon's per-request pieces, counted by callgrind: the
count does not move with the load average (docs/performance.md, round 8b).

Pieces: ``codec`` (decode an Access-Request, check its Message-Authenticator, build
and sign an Access-Accept), ``frontend`` (the RADIUS frontend's own work per new
Access-Request around the authorize: client, decode, duplicate cache,
Message-Authenticator, CallInfo, the Cisco Access-Accept signed, the reply cached; no
socket), ``e164`` (the called and the calling number of the kit's Access-Requests,
100,000 of each, normalised as an authorize does), ``pricer`` (an authorize's three
rating questions: the first grant's price, then paid_s twice, as
scripts/bench_pricer.py), ``acct`` (the sessions' work per accounting packet: a
Start, an Interim and a Stop of each of N calls authorized before, 32 in flight,
through Sessions.account on an embedded redis-server as scripts/bench_accounting.py,
each CDR handed to a KPI feeder's ``remember`` as serve.py wires it with [monitoring] on
(its feeder does not run here: see ``kpiown``); per item = per packet, the Redis
server's own work not counted), ``authorize`` (a known
caller's Access-Request decided as the daemon does: MeteredCredit -> Sessions.authorize
-> the fused script through the batcher's thin connection, 32 in flight on uvloop, on
the same embedded redis-server, its own work not counted; 1,000 accounts remembered
first), ``kpi`` (the KPI feeder's work per CDR: read from cdr:stream, counted, written
back with its XACK; the Redis server's own work not counted), ``kpiown`` (the same for
CDRs this process wrote, which the feeder is told of: docs/performance.md, round 16b).
Each piece runs
under ``valgrind --tool=callgrind`` twice, with N and 2N items after the same set-up;
the difference over N is printed.

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_hotpath_instructions.py [--count 3000]

Compiled or not is whatever the tree holds (the .so files next to the modules).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chargingd.core.redisconn import EmbeddedRedis

REPO = Path(__file__).resolve().parent.parent
SECRET = b"s3cr3t-bench"
PIECES = ("codec", "frontend", "e164", "pricer", "acct", "authorize", "kpi", "kpiown")
REDIS_PIECES = ("acct", "authorize", "kpi", "kpiown")


def _codec(items: int, setup: int) -> Callable[[], None]:
    from chargingd.radius import codec as rc

    attrs = b"".join(
        (
            rc.attr_bytes(rc.USER_NAME, b"000000000042"),
            rc.attr_bytes(rc.CALLING_STATION_ID, b"316123412345"),
            rc.attr_bytes(rc.CALLED_STATION_ID, b"00442079812345"),
            rc.attr_ipv4(rc.NAS_IP_ADDRESS, "127.0.0.1"),
            rc.attr_bytes(rc.ACCT_SESSION_ID, b"a-00000001-DEADBEEF-0001"),
            rc.cisco_vsa(rc.H323_CONF_ID, b"h323-conf-id=a-00000001-DEADBEEF-0001"),
        )
    )
    rng = random.Random(3)
    packets = [
        rc.encode_access_request(i % 256, rng.randbytes(16), attrs, SECRET) for i in range(setup)
    ][:items]

    def run() -> None:
        for data in packets:
            packet = rc.decode(data)
            rc.verify_message_authenticator(packet, SECRET, packet.authenticator)
            reply = rc.accept_attributes(3600, 60, True, 12_340_000, "EUR")
            rc.encode_reply(
                rc.ACCESS_ACCEPT, packet.identifier, packet.authenticator, reply, SECRET
            )

    return run


def _kit_attrs() -> bytes:
    from chargingd.radius import codec as rc

    return b"".join(
        (
            rc.attr_bytes(rc.USER_NAME, b"000000000042"),
            rc.attr_bytes(rc.CALLING_STATION_ID, b"316123412345"),
            rc.attr_bytes(rc.CALLED_STATION_ID, b"00442079812345"),
            rc.attr_ipv4(rc.NAS_IP_ADDRESS, "127.0.0.1"),
            rc.attr_bytes(rc.ACCT_SESSION_ID, b"a-00000001-DEADBEEF-0001"),
            rc.cisco_vsa(rc.H323_CONF_ID, b"h323-conf-id=a-00000001-DEADBEEF-0001"),
        )
    )


def _frontend(items: int, setup: int) -> Callable[[], None]:
    import asyncio
    import socket

    from chargingd.core.config import config_from_dict
    from chargingd.radius import codec as rc
    from chargingd.radius.intake import IntakeQueue, UdpPort
    from chargingd.radius.server import RadiusFrontend
    from chargingd.radius.translate import call_info
    from chargingd.sessions.ccapi import Authorized

    client = {"name": "gw", "address": "127.0.0.1", "secret": SECRET.decode()}
    raw = {"bind": "127.0.0.1", "auth_port": 0, "acct_port": 0, "clients": [client]}
    frontend = RadiusFrontend(config_from_dict({"radius": raw}).radius, None)  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    port = UdpPort(sock, IntakeQueue(0, loop), frontend.counters, max_wait_s=0.5, loop=loop)
    attrs = _kit_attrs()
    rng = random.Random(3)
    packets = [
        rc.encode_access_request(i % 256, rng.randbytes(16), attrs, SECRET) for i in range(setup)
    ][:items]
    decision = Authorized("000000000042", 3600, 60, 12_345_670_000, "EUR", grant_s=3600)
    addr = ("127.0.0.1", 40_000)

    def run() -> None:
        for data in packets:
            admitted = frontend._admit(data, addr, rc.ACCESS_REQUEST, port)
            assert admitted is not None
            gw, packet, key = admitted
            assert frontend._access_authentic(packet, gw, addr)
            call_info(packet, gw, addr[0])
            frontend.cache.start(key)
            reply = frontend._auth_reply(packet, gw, decision)
            frontend.cache.finish(key, reply)

    return run


def _e164(items: int, setup: int) -> Callable[[], None]:
    from chargingd.core.numbers import normalize_or_raw, to_e164

    rng = random.Random(1)
    pairs = [
        (f"004420798{rng.randrange(100_000):05d}", f"3161234{rng.randrange(100_000):05d}")
        for _ in range(setup)
    ][:items]
    to_e164("004420798000", country="DE")

    def run() -> None:
        for called, calling in pairs:
            to_e164(called, country="DE")
            normalize_or_raw(calling, country="DE")

    return run


def _pricer(items: int, setup: int) -> Callable[[], None]:
    sys.path.insert(0, str(REPO / "scripts"))
    from bench_pricer import calls

    from chargingd.rating.loaders import load_plan
    from chargingd.sessions.pricing import Pricer

    pricer = Pricer({}, default=load_plan(REPO / "config" / "tariffs" / "sample.toml"))
    work = calls(setup + 2000)

    def one(subject: str, number: str, start_ms: int) -> None:
        pricer.price("default", subject=subject, number=number, start_ms=start_ms, usage_s=60)
        for amount in (70_000, 5_000_000):
            pricer.paid_s(
                "default", subject=subject, number=number, start_ms=start_ms, amount_micros=amount
            )

    for call in work[:2000]:  # warm: cards built
        one(*call)
    timed = work[2000 : 2000 + items]

    def run() -> None:
        for call in timed:
            one(*call)

    return run


def _clock_ms() -> Callable[[], int]:
    """The sessions' clock: the wall clock, or (--clock-at, BENCH_CLOCK_AT_MS) one that
    starts at a given instant and runs on with it: the rating of a call depends on the
    hour (round 18a: before a tariff period boundary the Session-Timeout's walk crosses
    it)."""
    import time

    at_ms = int(os.environ.get("BENCH_CLOCK_AT_MS", "0"))
    if not at_ms:
        return lambda: int(time.time() * 1000)
    offset_ms = at_ms - int(time.time() * 1000)
    return lambda: int(time.time() * 1000) + offset_ms


def _sessions(client: object, ledger: object, fraud: object = None) -> Any:
    """Sessions as the daemon builds them: the sample retail plan, default config
    (imported here, as the pieces import theirs); ``fraud``: its fraud rules."""
    import tempfile

    from chargingd.core.config import SessionsConfig
    from chargingd.rating.loaders import load_plan
    from chargingd.sessions.pricing import Pricer
    from chargingd.sessions.service import Sessions

    return Sessions(
        redis=client,  # type: ignore[arg-type]
        ledger=ledger,  # type: ignore[arg-type]
        pricer=Pricer({"retail": load_plan(REPO / "config" / "tariffs" / "sample.toml")}),
        cfg=SessionsConfig(),
        clock_ms=_clock_ms(),
        data_dir=Path(tempfile.mkdtemp()),
        fraud=fraud,  # type: ignore[arg-type]
    )


def _acct(items: int, setup: int) -> Callable[[], None]:
    import asyncio
    import time

    import redis.asyncio as aioredis
    import uvloop

    sys.path.insert(0, str(REPO / "scripts"))
    from bench_common import seed_prepaid

    from chargingd.ledger import Ledger
    from chargingd.monitoring.feeder import KpiFeeder
    from chargingd.monitoring.windows import KpiStore
    from chargingd.sessions.ccapi import Authorized, CallInfo, UsageKind, UsageReport
    from chargingd.sessions.service import Sessions

    loop = uvloop.new_event_loop()
    client = aioredis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    infos = [
        CallInfo(f"c{i}", f"u{i % 100}", "", f"0301234{i % 1000:03d}", "10.0.0.1", "gw1")
        for i in range(setup)
    ]
    sem = asyncio.Semaphore(32)

    async def prepare() -> Sessions:
        await client.flushall()
        ledger = Ledger(client, audit_holds=False)
        await ledger.load_scripts()
        await seed_prepaid(ledger, 100)
        sessions = _sessions(client, ledger)
        await sessions.store.load_scripts()
        if hasattr(sessions.store, "cdr_written"):  # as serve.py wires it ([monitoring] on)
            feeder = KpiFeeder(client, KpiStore(client, max_groups=200), group="kpi")
            sessions.store.cdr_written = feeder.remember

        async def authorize(info: CallInfo) -> None:
            async with sem:
                assert isinstance(await sessions.authorize(info), Authorized)

        await asyncio.gather(*(authorize(info) for info in infos))
        return sessions

    sessions = loop.run_until_complete(prepare())
    start_ms = int(time.time() * 1000)

    async def account(info: CallInfo, kind: UsageKind, usage_s: int) -> None:
        async with sem:
            await sessions.account(UsageReport(info, kind, usage_s, start_ms + usage_s * 1000))

    async def phases() -> None:
        for kind, usage_s in ((UsageKind.START, 0), (UsageKind.INTERIM, 30), (UsageKind.STOP, 95)):
            await asyncio.gather(*(account(info, kind, usage_s) for info in infos[:items]))

    def run() -> None:
        loop.run_until_complete(phases())
        assert loop.run_until_complete(client.xlen("cdr:stream")) == items

    return run


def _authorize(items: int, setup: int) -> Callable[[], None]:
    import asyncio

    import redis.asyncio as aioredis
    import uvloop

    from chargingd.core.config import RedisConfig
    from chargingd.ledger import Ledger, Mode
    from chargingd.monitoring.metered import MeteredCredit
    from chargingd.monitoring.meters import ProcessMeters
    from chargingd.sessions.ccapi import Authorized, CallInfo

    accounts = 1000
    # --calls-before: each account called this many times before (values as a load run's)
    before = int(os.environ.get("BENCH_CALLS_BEFORE", "1"))
    # --numbers: the called numbers repeat every N calls (a load run's 10,000: classified once)
    numbers = int(os.environ.get("BENCH_NUMBERS", "100000"))
    # --sid-bytes: session ids of that length (default 0: this bench's own, 24 bytes)
    sid_bytes = int(os.environ.get("BENCH_SID_BYTES", "0"))
    sized_sid: Callable[[int, int, str], str] | None = None
    if sid_bytes:  # (imported only then: the default runs import what they did before)
        sys.path.insert(0, str(REPO / "scripts"))
        from bench_common import sized_sid

    loop = uvloop.new_event_loop()
    client = aioredis.Redis.from_url(os.environ["BENCH_REDIS_URL"])

    def call(i: int) -> CallInfo:  # as scripts/bench_authorize_redis.py
        sid = f"m-{i:08X}-{(i * 2654435761) & 0xFFFFFFFF:08X}-{i & 0xFFFF:04X}"
        if sized_sid is not None:  # --sid-bytes
            sid = sized_sid(i, sid_bytes, sid)
        called = f"004420798{i % numbers:05d}"
        return CallInfo(
            sid, f"{i % accounts:012d}", f"3161234{i % 100000:05d}", called, "127.0.0.1",
            "load", sid,
        )  # fmt: skip

    async def build() -> tuple[MeteredCredit, Any]:
        await client.flushall()
        rc = RedisConfig()
        ledger = Ledger(
            client, audit_holds=False, request_timeout_s=rc.command_timeout_s,
            batch_early=rc.batch_early,
        )  # fmt: skip
        await ledger.load_scripts()
        for n in range(accounts):
            await ledger.create_account(
                f"acc{n:04d}", mode=Mode.PREPAID, currency="EUR", balance_micros=10**15,
                tariff="retail", identities=(f"user:{n:012d}",), who="bench",
            )  # fmt: skip
        fraud = None
        local_values = os.environ.get("BENCH_FRAUD_LOCAL_VALUES", "")
        if local_values:  # the default fraud rules, decided here or in Lua (0)
            sys.path.insert(0, str(REPO / "scripts"))
            from bench_common import default_fraud

            fraud = await default_fraud(client, ledger, ledger.clock_ms, int(local_values))
        sessions = _sessions(client, ledger, fraud)
        await sessions.store.load_scripts()
        return MeteredCredit(sessions, ProcessMeters("main"), "radius"), sessions

    credit, sessions = loop.run_until_complete(build())

    async def some(first: int, count: int) -> None:
        sem = asyncio.Semaphore(32)

        async def one(i: int) -> None:
            async with sem:
                answer = await credit.authorize(call(i))
                assert isinstance(answer, Authorized), answer

        await asyncio.gather(*(one(i) for i in range(first, first + count)))

    for k in range(before):  # every caller remembered (and its values grown)
        loop.run_until_complete(some(k * accounts, accounts))

    first = os.environ.get("BENCH_FRAUD_FIRST") == "1"

    def run() -> None:
        if first and sessions.fraud is not None:  # as after a start: none known
            local = sessions.fraud.fraud.local
            assert local is not None and items <= accounts
            local.values._known.clear()
        loop.run_until_complete(some(before * accounts, items))

    return run


def _kpi(items: int, setup: int, own: bool = False) -> Callable[[], None]:
    """The KPI feeder's work per CDR (monitoring/feeder.py, in the daemon's main process:
    one CDR per Stop): ``setup`` CDRs as a Stop of the kit writes them (answered, 31-270
    s, three destinations, one gateway) in cdr:stream, the first ``items`` (a multiple
    of feeder.BATCH) read by XREADGROUP, decoded, summed and written back with their
    XACK; the Redis server's own work not counted. ``own`` (piece kpiown): the CDRs
    written by this process, each remembered with its entry id as the daemon's closer
    tells the feeder of its own process (KpiFeeder.remember, not counted), so the
    feeder does not decode them."""
    import time

    import redis.asyncio as aioredis
    import uvloop

    from chargingd.billing.cdr import CDR, CDR_STREAM
    from chargingd.monitoring.feeder import KpiFeeder
    from chargingd.monitoring.windows import KpiStore

    loop = uvloop.new_event_loop()
    client = aioredis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    rng = random.Random(5)
    now_ms = int(time.time() * 1000)
    cdrs = []
    for i in range(setup):  # all written first: the same set-up for N and 2N
        usage_s = 31 + rng.randrange(240)
        answer_ms = now_ms - usage_s * 1000
        cdrs.append(
            CDR.of(
                {
                    "source": "radius",
                    "call_id": f"c-{i:08X}-{rng.getrandbits(32):08X}-{rng.getrandbits(16):04X}",
                    "account_id": f"acc{rng.randrange(1000):04d}",
                    "caller": f"+49316123{i % 100_000:05d}",
                    "callee": f"+4420798{rng.randrange(100_000):05d}",
                    "destination": ("UK_FIXED", "UK_MOBILE", "DE_FIXED")[i % 3],
                    "start_ms": answer_ms - 10,
                    "answer_ms": answer_ms,
                    "end_ms": now_ms,
                    "duration_s": usage_s,
                    "billed_s": usage_s + 60 - usage_s % 60,
                    "cost_micros": 10_000 * usage_s,
                    "currency": "EUR",
                    "tariff": "default",
                    "gateway": "127.0.0.1",
                    "disconnect_cause": 0,
                    "status": "normal",
                    "extra": {"client": "load", "user_name": f"{i % 1000:012d}"},
                    "charged_micros": 10_000 * usage_s,
                    "charge": "live",
                    "charge_reason": "",
                    "revision": 0,
                }
            )
        )
    feeder = KpiFeeder(client, KpiStore(client, max_groups=200), group="kpi", settle_s=0)

    async def prepare() -> None:
        await client.flushall()
        await feeder.step(block_ms=None)  # the group made, the scripts loaded
        pipe = client.pipeline(transaction=False)
        for cdr in cdrs:
            pipe.xadd(CDR_STREAM, {"cdr": cdr.pack()})
        ids = await pipe.execute()
        if own:
            for entry_id, cdr in zip(ids, cdrs, strict=True):
                feeder.remember(entry_id, cdr)

    loop.run_until_complete(prepare())

    async def drain() -> None:
        done = 0
        while done < items:
            done += await feeder.step(block_ms=None)

    def run() -> None:
        loop.run_until_complete(drain())

    return run


def _child(piece: str, items: int, setup: int) -> None:
    pieces = {"codec": _codec, "frontend": _frontend, "e164": _e164, "pricer": _pricer}
    if piece == "kpiown":
        _kpi(items, setup, own=True)()
        return
    run = {**pieces, "acct": _acct, "authorize": _authorize, "kpi": _kpi}[piece](items, setup)
    run()


def _count(piece: str, items: int, setup: int, keep: Path | None = None) -> int:
    dump = "/dev/null" if keep is None else str(keep / f"callgrind.{piece}.{items}")
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={dump}", sys.executable,
         __file__, "--child", piece, str(items), str(setup)],
        capture_output=True, text=True, check=True, env=dict(os.environ),
    )  # fmt: skip
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise SystemExit(f"no callgrind total for {piece}: {out.stderr[-500:]}")
    return int(found.group(1))


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        _child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000, help="N (items per run)")
    parser.add_argument(
        "--keep", type=Path, metavar="DIR",
        help="keep the callgrind dumps in DIR (callgrind.PIECE.ITEMS, for callgrind_annotate)",
    )  # fmt: skip
    parser.add_argument(
        "--fraud-local-values",
        default="",
        metavar="N",
        help="authorize with the default fraud rules on ([fraud] local_values N; 0: the "
        "rules decided in Redis's Lua on every call)",
    )
    parser.add_argument(
        "--fraud-first",
        action="store_true",
        help="with --fraud-local-values: each authorize counted is its account's first in "
        "this process (the kept values forgotten before, as after a start; --count <= 500)",
    )
    parser.add_argument(
        "--clock-at",
        default="",
        metavar="ISO",
        help="the sessions' clock starts at this instant (e.g. 2026-12-07T17:30:00+00:00, "
        "1.5 h before the sample tariff's 19:00 boundary), not now",
    )
    parser.add_argument(
        "--calls-before",
        type=int,
        default=1,
        help="authorize: each account called this many times before the counted calls "
        "(with the fraud rules: values of that many live calls, as a load run's)",
    )
    parser.add_argument(
        "--numbers",
        type=int,
        default=100_000,
        help="authorize: the called numbers repeat every N calls (default: each new)",
    )
    parser.add_argument(
        "--sid-bytes",
        type=int,
        default=0,
        help="authorize: session ids of this many bytes (36: a UUID's form, as the load "
        "bench's; default: 24)",
    )
    parser.add_argument("pieces", nargs="*", help=f"any of {', '.join(PIECES)} (default all)")
    args = parser.parse_args()
    if args.clock_at:
        from datetime import datetime

        os.environ["BENCH_CLOCK_AT_MS"] = str(
            int(datetime.fromisoformat(args.clock_at).timestamp() * 1000)
        )
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)  # else callgrind fails to write there
    if args.fraud_local_values:
        os.environ["BENCH_FRAUD_LOCAL_VALUES"] = args.fraud_local_values
    if args.fraud_first:
        os.environ["BENCH_FRAUD_FIRST"] = "1"
    os.environ["BENCH_CALLS_BEFORE"] = str(args.calls_before)
    os.environ["BENCH_NUMBERS"] = str(args.numbers)
    os.environ["BENCH_SID_BYTES"] = str(args.sid_bytes)
    for piece in args.pieces or PIECES:
        if piece not in PIECES:
            raise SystemExit(f"unknown piece {piece!r}: {', '.join(PIECES)}")
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        if any(piece in REDIS_PIECES for piece in args.pieces or PIECES):
            server = EmbeddedRedis(Path(tmp), appendfsync="no")
            server.start()
            stack.callback(server.stop)
            os.environ["BENCH_REDIS_URL"] = server.url
        for piece in args.pieces or PIECES:
            # acct: N packets of each kind; per packet
            per = 3 * args.count if piece == "acct" else args.count
            once = _count(piece, args.count, 2 * args.count, args.keep)
            twice = _count(piece, 2 * args.count, 2 * args.count, args.keep)
            print(f"{piece:<8} {(twice - once) / per:10,.0f} instructions per item")


if __name__ == "__main__":
    main()
