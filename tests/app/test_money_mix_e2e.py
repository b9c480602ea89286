"""Money under mixed paths at once, against the real daemon (round money3).

RADIUS calls (with retransmitted Interims and Stops) and Diameter CCR-I/U/T (with
duplicated request numbers) on the same prepaid account at the same moment as
top-ups and adjustments over the admin socket (with and without a txn id, the
same txn id sent twice at once), the exporter draining to PostgreSQL while the
calls close. After each scenario: our own arithmetic (balance == initial + top-ups
+ adjustments - sum of the CDRs' charged_micros, to the micro-unit), one CDR per
call, no hold left, the billing database equal to Redis, and `chargingd assure`
finding nothing.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import ports
import psycopg
import pytest
from assurance_harness import SwitchCall, cisco_detail_file
from diameter_client import Answered, TcpClient, open_client
from radius_e2e_harness import (
    BIN,
    MICROS_PER_S,
    TARIFF,
    Call,
    Daemon,
    GatewaySocket,
    serving,
    write_setup,
)

from chargingd.core.money import parse_amount
from chargingd.diameter import client as cl
from chargingd.diameter.dictionary import RequestType
from chargingd.radius import codec as rc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

PEER_HOST, PEER_REALM = "scscf.ims.test", "ims.test"
UK = "+442079460000"
ANI = "+4930999000"  # the caller of every call of the test's account

EXTRA = """
[ledger]
sweep_interval_s = 0.5

[mediation.sources.sw1]
format = "cisco_radius"
charge = "record_only"
default_country = "DE"

[assurance]
hold_grace_s = 1
session_grace_s = 1
stuck_after_s = 0
"""


@pytest.fixture
def daemon(tmp_path: Path, pg_url: str) -> Iterator[Daemon]:
    port = ports.free_port(socket.SOCK_STREAM)
    setup = write_setup(
        tmp_path,
        billing=f'db_url = "{pg_url}"',
        export="run_in_serve = true\nblock_ms = 50",
        extra=EXTRA_DIAMETER.format(port=port),
    )
    double = tmp_path / "double.toml"
    double.write_text(TARIFF.replace('id = "e2e"', 'id = "double"').replace('"0.60"', '"1.20"'))
    plans = f'\n[rating.plans]\ndouble = "{double}"\n'
    setup.config.write_text(setup.config.read_text() + EXTRA + plans)
    with serving(setup, tmp_path / "daemon.log") as d:
        d.diameter_port = port  # type: ignore[attr-defined]
        yield d


def account(daemon: Daemon, account_id: str) -> dict[str, Any]:
    return daemon.call("account.get", {"id": account_id})  # type: ignore[no-any-return]


Placed = SwitchCall  # a RADIUS call as its gateway's own accounting file records it


async def mediate(daemon: Daemon, path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(BIN), "mediate", "--config", str(daemon.setup.config), "--source", "sw1",
        "--quiet", str(path),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()


_CALLEES: dict[str, int] = {}


def callee_of(sid: str, *, national: bool = False) -> str:
    """A number of its own per call: one caller's concurrent calls to one number within
    the start tolerance are what assure takes for one call charged twice. Numbered in
    order of first use (a hash of the id modulo 10,000 gave two calls one number now and
    then: CI saw r-3 and r-11 reported as a double charge)."""
    n = _CALLEES.setdefault(sid, len(_CALLEES))
    assert n < 10_000, "more calls than numbers"
    number = f"44207946{n:04d}"
    return f"00{number}" if national else f"+{number}"


async def radius_call(daemon: Daemon, sid: str, user: str, usage_s: int) -> Placed:
    """Authorize, Start, Interim (sent twice), Stop (sent twice): a lossy gateway."""
    setup = daemon.setup
    setup_ms = int(time.time() * 1000)
    call = Call(sid, user, called=callee_of(sid, national=True), calling=ANI)
    sock = await GatewaySocket.open()
    try:
        accept = await sock.ask(call.access_request(), setup.auth_port)
        assert accept.code == rc.ACCESS_ACCEPT, (sid, accept)
        await sock.ask(call.accounting(rc.STATUS_START, 0), setup.acct_port)
        interim = call.accounting(rc.STATUS_INTERIM, usage_s // 2)
        await asyncio.gather(sock.ask(interim, setup.acct_port), sock.ask(interim, setup.acct_port))
        stop = call.accounting(rc.STATUS_STOP, usage_s)
        await asyncio.gather(sock.ask(stop, setup.acct_port), sock.ask(stop, setup.acct_port))
    finally:
        sock.close()
    return Placed(sid, call.calling, call.called, usage_s, setup_ms)


async def diameter_call(client: TcpClient, sid: str, ani: str, used: list[int]) -> None:
    """CCR-I, a CCR-U per chunk (each sent twice, same CC-Request-Number), CCR-T."""
    call = cl.Call(f"{PEER_HOST};{sid}", calling=ani, called=f"tel:{callee_of(sid)}")
    i = await client.ccr(call, RequestType.INITIAL, 0, requested_s=30)
    assert i.result == 2001, (sid, i)
    n = 1
    for chunk in used[:-1]:
        a, b = await asyncio.gather(
            client.ccr(call, RequestType.UPDATE, n, used_s=chunk, requested_s=30),
            client.ccr(call, RequestType.UPDATE, n, used_s=chunk, requested_s=30),
        )
        assert (a.result, b.result) == (2001, 2001), (sid, a, b)
        n += 1
    t = await client.ccr(call, RequestType.TERMINATION, n, used_s=used[-1])
    assert t.result == 2001, (sid, t)


async def db_rows(url: str, account_id: str, count: int) -> dict[str, int]:
    """call_id -> charged_micros of the account's CDRs in the billing DB, once it holds
    ``count`` of them."""
    rows: dict[str, int] = {}
    for _ in range(400):
        async with await psycopg.AsyncConnection.connect(url) as conn:
            cur = await conn.execute(
                "SELECT call_id, charged_micros FROM cdrs WHERE account_id = %s", (account_id,)
            )
            rows = {r[0]: r[1] for r in await cur.fetchall()}
        if len(rows) >= count:
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"{account_id}: billing DB holds {len(rows)} CDRs, not {count}")


def assure(daemon: Daemon) -> tuple[int, dict[str, Any]]:
    day = datetime.now(UTC)
    first, last = (day - timedelta(days=1)).date(), (day + timedelta(days=1)).date()
    done = subprocess.run(
        [str(BIN), "assure", "--config", str(daemon.setup.config), "--from", str(first),
         "--to", str(last), "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode in (0, 3), done.stderr
    return done.returncode, json.loads(done.stdout)


def assert_one_close_each(daemon: Daemon, call_ids: dict[str, int]) -> None:
    """Each call closed (one CDR written) once: the daemon logs each CDR it writes."""
    log = daemon.log()
    counts = {sid: log.count(f" closed {sid} account=") for sid in call_ids}
    assert set(counts.values()) == {1}, counts


async def ctl(daemon: Daemon, *args: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        str(BIN), "ctl", "--config", str(daemon.setup.config), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()


async def wait_no_holds(daemon: Daemon, account_id: str) -> dict[str, Any]:
    for _ in range(200):
        acc = account(daemon, account_id)
        if parse_amount(acc["reserved"]) == 0 and acc["live_sessions"] == 0:
            return acc
        await asyncio.sleep(0.05)
    raise AssertionError(f"{account_id}: holds left: {acc}")


async def test_radius_diameter_topups_adjustments_on_one_account_at_once(
    daemon: Daemon, pg_url: str, tmp_path: Path
) -> None:
    ani = ANI
    daemon.create_account("mix", "20.00", identities=["user:mix", f"ani:{ani}"])
    client = await open_client(daemon.diameter_port)  # type: ignore[attr-defined]
    loop = asyncio.get_running_loop()

    def admin(method: str, params: dict[str, Any]) -> Any:
        return loop.run_in_executor(None, daemon.call, method, params)

    radius_usage = {f"r-{i}": 20 + 3 * i for i in range(12)}
    diameter_usage = {f"d-{i}": [10, 7 + i, 4] for i in range(8)}
    try:
        ops: list[Any] = [radius_call(daemon, s, "mix", u) for s, u in radius_usage.items()]
        ops += [diameter_call(client, s, ani, u) for s, u in diameter_usage.items()]
        # top-ups with a txn id, each sent twice at once: one applies
        for k in range(5):
            ops += [admin("account.topup", {"id": "mix", "amount": "1.00", "txn_id": f"t{k}"})]
            ops += [admin("account.topup", {"id": "mix", "amount": "1.00", "txn_id": f"t{k}"})]
        # top-ups without one (`chargingd ctl` makes one each): each applies
        ops += [ctl(daemon, "account", "topup", "mix", "0.25") for _ in range(4)]
        # adjustments both ways, with a txn id sent twice, and without
        for k in range(3):
            adj = {"id": "mix", "amount": "-0.10", "txn_id": f"a{k}", "reason": "goodwill back"}
            ops += [admin("account.adjust", adj), admin("account.adjust", adj)]
        ops += [ctl(daemon, "account", "adjust", "mix", "0.30", "--reason", "credit")]
        results = await asyncio.gather(*ops, return_exceptions=True)
    finally:
        await client.close()
    errors = [r for r in results if isinstance(r, BaseException)]
    assert not errors, errors

    calls = len(radius_usage) + len(diameter_usage)
    acc = await wait_no_holds(daemon, "mix")
    expected = {s: u * MICROS_PER_S for s, u in radius_usage.items()}
    expected |= {f"{PEER_HOST};{s}": sum(u) * MICROS_PER_S for s, u in diameter_usage.items()}
    charged = await db_rows(pg_url, "mix", calls)  # the exporter drained as calls closed
    assert charged == expected
    assert_one_close_each(daemon, expected)
    topups = 5 * 1_000_000 + 4 * 250_000
    adjustments = -3 * 100_000 + 300_000
    balance = parse_amount(acc["balance"])
    assert balance == 20_000_000 + topups + adjustments - sum(charged.values())
    # The switch's own file of the RADIUS calls (record_only): no money moves.
    placed = [r for r in results if isinstance(r, Placed)]
    assert len(placed) == len(radius_usage)
    await mediate(daemon, cisco_detail_file(tmp_path / "sw1.detail", placed))
    assert parse_amount(account(daemon, "mix")["balance"]) == balance
    code, run = assure(daemon)
    assert (code, run["findings"]) == (0, []), run


async def granted_diameter_calls(client: TcpClient, prefix: str, n: int) -> list[cl.Call]:
    """``n`` Diameter calls of ANI opened at once (CCR-I, 30 s asked), each granted."""
    calls = [
        cl.Call(
            f"{PEER_HOST};{prefix}-{i}", calling=ANI, called=f"tel:{callee_of(f'{prefix}-{i}')}"
        )
        for i in range(n)
    ]
    answers = await asyncio.gather(
        *(client.ccr(c, RequestType.INITIAL, 0, requested_s=30) for c in calls)
    )
    assert {a.result for a in answers} == {2001}
    return calls


async def started_radius(daemon: Daemon, sid: str, user: str) -> tuple[Call, GatewaySocket]:
    call = Call(sid, user, called=callee_of(sid, national=True), calling=ANI)
    sock = await GatewaySocket.open()
    accept = await sock.ask(call.access_request(), daemon.setup.auth_port)
    assert accept.code == rc.ACCESS_ACCEPT, (sid, accept)
    await sock.ask(call.accounting(rc.STATUS_START, 0), daemon.setup.acct_port)
    return call, sock


async def stop_radius(daemon: Daemon, call: Call, sock: GatewaySocket, usage_s: int) -> None:
    try:
        stop = call.accounting(rc.STATUS_STOP, usage_s)
        port = daemon.setup.acct_port
        await asyncio.gather(sock.ask(stop, port), sock.ask(stop, port))
    finally:
        sock.close()


async def test_suspend_and_resume_while_calls_of_both_protocols_run(
    daemon: Daemon, pg_url: str
) -> None:
    """Suspended mid-call (RADIUS Disconnect-Requests nobody answers, Diameter ASRs
    answered): the calls' Stops and CCR-Ts still charge exactly their usage, once; a
    call authorized while suspended is refused and leaves nothing; after resume new
    calls are charged as usual. Top-ups run all along."""
    daemon.create_account("sus", "10.00", identities=["user:sus", f"ani:{ANI}"])
    client = await open_client(daemon.diameter_port)  # type: ignore[attr-defined]
    loop = asyncio.get_running_loop()

    def admin(method: str, params: dict[str, Any]) -> Any:
        return loop.run_in_executor(None, daemon.call, method, params)

    try:
        live = await asyncio.gather(*(started_radius(daemon, f"s-{i}", "sus") for i in range(6)))
        calls = await granted_diameter_calls(client, "sd", 4)
        # suspend while Interims, CCR-Us and top-ups arrive
        port = daemon.setup.acct_port
        await asyncio.gather(
            admin("account.suspend", {"id": "sus", "reason": "test"}),
            *(sock.ask(call.accounting(rc.STATUS_INTERIM, 10), port) for call, sock in live),
            *(client.ccr(c, RequestType.UPDATE, 1, used_s=10, requested_s=30) for c in calls),
            admin("account.topup", {"id": "sus", "amount": "0.50", "txn_id": "sus-t1"}),
        )
        refused_call = Call("s-refused", "sus", called=callee_of("s-refused", national=True))
        sock = await GatewaySocket.open()
        try:
            answer = await sock.ask(refused_call.access_request(), daemon.setup.auth_port)
        finally:
            sock.close()
        assert answer.code == rc.ACCESS_REJECT
        await asyncio.gather(
            *(stop_radius(daemon, call, sock, 15 + i) for i, (call, sock) in enumerate(live)),
            *(client.ccr(c, RequestType.TERMINATION, 2, used_s=3 + i)
              for i, c in enumerate(calls)),
            admin("account.resume", {"id": "sus"}),
            admin("account.topup", {"id": "sus", "amount": "0.50", "txn_id": "sus-t2"}),
            admin("account.topup", {"id": "sus", "amount": "0.50", "txn_id": "sus-t2"}),
        )  # fmt: skip
        after = [radius_call(daemon, f"s-after-{i}", "sus", 12) for i in range(3)]
        placed_after = await asyncio.gather(*after)
    finally:
        await client.close()
    acc = await wait_no_holds(daemon, "sus")
    expected = {f"s-{i}": (15 + i) * MICROS_PER_S for i in range(6)}
    expected |= {f"{PEER_HOST};sd-{i}": (13 + i) * MICROS_PER_S for i in range(4)}
    expected |= {p.session_id: 12 * MICROS_PER_S for p in placed_after}
    charged = await db_rows(pg_url, "sus", len(expected))
    assert charged == expected
    assert_one_close_each(daemon, expected)
    assert parse_amount(acc["balance"]) == 10_000_000 + 1_000_000 - sum(charged.values())
    _, run = assure(daemon)
    # the live RADIUS calls are not on a switch file here
    kinds = {f["kind"] for f in run["findings"]} - {"unknown_to_switch"}
    assert kinds == set(), run


async def test_tariff_change_while_calls_of_both_protocols_run(daemon: Daemon, pg_url: str) -> None:
    """The account's tariff changes between a call's Interim and its Stop: whatever
    price the Stop uses, the CDR's charged_micros is what the ledger moved, its cost
    and charge agree or carry a reason, and assure finds nothing."""
    daemon.create_account("tar", "10.00", identities=["user:tar", f"ani:{ANI}"])
    client = await open_client(daemon.diameter_port)  # type: ignore[attr-defined]
    loop = asyncio.get_running_loop()
    try:
        live = await asyncio.gather(*(started_radius(daemon, f"t-{i}", "tar") for i in range(4)))
        calls = await granted_diameter_calls(client, "td", 3)
        port = daemon.setup.acct_port
        await asyncio.gather(
            *(sock.ask(call.accounting(rc.STATUS_INTERIM, 10), port) for call, sock in live),
            *(client.ccr(c, RequestType.UPDATE, 1, used_s=10, requested_s=30) for c in calls),
        )
        await loop.run_in_executor(
            None, daemon.call, "account.update", {"id": "tar", "tariff": "double"}
        )
        await asyncio.gather(
            *(stop_radius(daemon, call, sock, 20) for call, sock in live),
            *(client.ccr(c, RequestType.TERMINATION, 2, used_s=10) for c in calls),
        )
    finally:
        await client.close()
    acc = await wait_no_holds(daemon, "tar")
    ids = [f"t-{i}" for i in range(4)] + [f"{PEER_HOST};td-{i}" for i in range(3)]
    charged = await db_rows(pg_url, "tar", len(ids))
    assert set(charged) == set(ids)
    assert_one_close_each(daemon, dict.fromkeys(ids, 0))
    assert parse_amount(acc["balance"]) == 10_000_000 - sum(charged.values())
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        cur = await conn.execute(
            "SELECT call_id, tariff, cost_micros, charged_micros, charge_reason FROM cdrs"
            " WHERE account_id = 'tar'"
        )
        rows = await cur.fetchall()
    # the price is the one the call was authorized under, Interim and Stop alike
    assert {(r[1], r[2], r[3], r[4]) for r in rows} == {("default", 200_000, 200_000, "")}
    _, run = assure(daemon)
    kinds = {f["kind"] for f in run["findings"]} - {"unknown_to_switch"}
    assert kinds == set(), run


# -- two daemons on one Redis, one SIGKILLed mid-traffic and restarted ----------------


def two_daemon_setups(tmp_path: Path, redis_url: str, pg_url: str, dia_port: int) -> list[Any]:
    out = []
    for name in ("a", "b"):
        base = tmp_path / name
        base.mkdir()
        dia = EXTRA_DIAMETER.format(port=dia_port) if name == "a" else ""
        setup = write_setup(
            base,
            redis=f'url = "{redis_url}"',
            billing=f'db_url = "{pg_url}"',
            export="run_in_serve = true\nblock_ms = 50",
            session_options={"interim_interval_s": 10, "stale_factor": 2,
                             "reaper_interval_s": 0.5},
            extra=dia,
        )  # fmt: skip
        setup.config.write_text(setup.config.read_text() + EXTRA)
        out.append(setup)
    return out


# The Diameter frontend of a daemon on a port: EXTRA_DIAMETER.format(port=...)
EXTRA_DIAMETER = f"""
[diameter]
enabled = true
bind = "127.0.0.1"
port = {{port}}
origin_host = "ocs.chargingd.test"
origin_realm = "chargingd.test"
request_timeout_s = 1.0

[[diameter.peers]]
name = "ims1"
origin_host = "{PEER_HOST}"
realm = "{PEER_REALM}"
addresses = ["127.0.0.1"]
"""


async def ask_either(sock: GatewaySocket, packet: bytes, ports: list[int]) -> rc.Packet:
    """A gateway with two servers: resend the same bytes, alternating, until answered."""
    ident = packet[1]
    for attempt in range(40):
        sock.transport.sendto(packet, ("127.0.0.1", ports[attempt % len(ports)]))
        deadline = time.monotonic() + 0.4
        while (left := deadline - time.monotonic()) > 0:
            try:
                data = await asyncio.wait_for(sock.proto.inbox.get(), left)
            except TimeoutError:
                break
            if data[1] == ident:
                return rc.decode(data)
    raise AssertionError("neither daemon answered")


async def failover_call(
    a: Daemon, b: Daemon, sid: str, usage_s: int, pause_s: float
) -> tuple[str, int]:
    """Authorize on one daemon, account on either, with pauses: some packets meet the
    kill of daemon A. Returns (session id, usage) when accepted, else (sid, -1)."""
    call = Call(sid, "kil", called=callee_of(sid, national=True), calling=ANI)
    auth = [a.setup.auth_port, b.setup.auth_port]
    acct = [a.setup.acct_port, b.setup.acct_port]
    if hash(sid) % 2:
        auth.reverse()
        acct.reverse()
    sock = await GatewaySocket.open()
    try:
        accept = await ask_either(sock, call.access_request(), auth)
        if accept.code != rc.ACCESS_ACCEPT:
            return sid, -1
        await ask_either(sock, call.accounting(rc.STATUS_START, 0), acct)
        await asyncio.sleep(pause_s)
        await ask_either(sock, call.accounting(rc.STATUS_INTERIM, usage_s // 2), acct[::-1])
        await asyncio.sleep(pause_s)
        await ask_either(sock, call.accounting(rc.STATUS_STOP, usage_s), acct)
    finally:
        sock.close()
    return sid, usage_s


async def diameter_failover_call(port: int, sid: str, used: list[int], pause_s: float) -> None:
    """CCRs to daemon A over a connection that its kill drops: reconnect, resend."""
    call = cl.Call(f"{PEER_HOST};{sid}", calling=ANI, called=f"tel:{callee_of(sid)}")
    steps = [(RequestType.INITIAL, 0, None)]
    steps += [(RequestType.UPDATE, n + 1, u) for n, u in enumerate(used[:-1])]
    steps += [(RequestType.TERMINATION, len(used), used[-1])]
    client: TcpClient | None = None
    try:
        for kind, number, u in steps:
            for _ in range(100):
                try:
                    if client is None or client.closed.is_set():
                        client = await open_client(port)
                    kw: dict[str, Any] = {"used_s": u} if u is not None else {}
                    if kind != RequestType.TERMINATION:
                        kw["requested_s"] = 30
                    data = cl.ccr(client.me, call, kind, number, *client.next_ids(), **kw)
                    answer = Answered.of(await client.ask(data, timeout_s=1.0))
                except (OSError, TimeoutError, AssertionError, ConnectionError):
                    if client is not None:
                        await client.close()
                    client = None
                    await asyncio.sleep(0.2)
                    continue
                assert answer.result == 2001, (sid, number, answer)
                break
            else:
                raise AssertionError(f"{sid}: CCR {number} never answered")
            await asyncio.sleep(pause_s)
    finally:
        if client is not None:
            await client.close()


async def test_two_daemons_one_killed_mid_traffic(
    tmp_path: Path, redis7_server: Any, pg_url: str
) -> None:
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(redis7_server.url)
    await r.flushall()
    await r.execute_command("FUNCTION", "FLUSH")
    await r.aclose()
    dia_port = ports.free_port(socket.SOCK_STREAM)
    setup_a, setup_b = two_daemon_setups(tmp_path, redis7_server.url, pg_url, dia_port)
    a, b = Daemon(setup_a, tmp_path / "a.log"), Daemon(setup_b, tmp_path / "b.log")
    a.start()
    b.start()
    try:
        a.wait_ready()
        b.wait_ready()
        a.create_account("kil", "30.00", identities=["user:kil", f"ani:{ANI}"])
        loop = asyncio.get_running_loop()

        async def kill_and_restart() -> None:
            await asyncio.sleep(0.7)
            assert a.proc is not None
            a.proc.kill()  # SIGKILL: no grace, requests in flight are lost
            a.proc.wait()
            await asyncio.sleep(0.5)
            a.start()
            await loop.run_in_executor(None, a.wait_ready)

        radius = {f"k-{i}": 20 + i for i in range(16)}
        diameter = {f"kd-{i}": [10, 5 + i, 3] for i in range(6)}
        results = await asyncio.gather(
            *(failover_call(a, b, s, u, 0.1 * (i % 8)) for i, (s, u) in enumerate(radius.items())),
            *(diameter_failover_call(dia_port, s, u, 0.15 * (i % 5))
              for i, (s, u) in enumerate(diameter.items())),
            *(loop.run_in_executor(None, b.call, "account.topup",
                                   {"id": "kil", "amount": "1.00", "txn_id": f"k{i % 3}"})
              for i in range(6)),
            kill_and_restart(),
        )  # fmt: skip
        accepted = dict(x for x in results[: len(radius)] if isinstance(x, tuple))
        assert all(u >= 0 for u in accepted.values()), accepted
        acc = await wait_no_holds(b, "kil")
        expected = {s: u * MICROS_PER_S for s, u in accepted.items()}
        expected |= {f"{PEER_HOST};{s}": sum(u) * MICROS_PER_S for s, u in diameter.items()}
        charged = await db_rows(pg_url, "kil", len(expected))
        assert charged == expected
        assert parse_amount(acc["balance"]) == 30_000_000 + 3_000_000 - sum(charged.values())
        _, run = assure(b)
        kinds = {f["kind"] for f in run["findings"]} - {"unknown_to_switch"}
        assert kinds == set(), run
    finally:
        for d in (a, b):
            d.kill()
        print(f"---- daemon A ----\n{a.log()}\n---- daemon B ----\n{b.log()}")


@pytest.fixture
def reaping(tmp_path: Path, pg_url: str) -> Iterator[Daemon]:
    """A daemon whose reaper takes a call silent for 20 s (2 x 10 s), exporter on."""
    setup = write_setup(
        tmp_path,
        billing=f'db_url = "{pg_url}"',
        export="run_in_serve = true\nblock_ms = 50",
        session_options={"interim_interval_s": 10, "stale_factor": 2, "reaper_interval_s": 0.5},
    )
    double = tmp_path / "double.toml"
    double.write_text(TARIFF.replace('id = "e2e"', 'id = "double"').replace('"0.60"', '"1.20"'))
    setup.config.write_text(setup.config.read_text() + EXTRA)
    with serving(setup, tmp_path / "daemon.log") as d:
        yield d


def rerate_apply(daemon: Daemon, account_id: str, plan: Path) -> subprocess.CompletedProcess[str]:
    day = datetime.now(UTC).date()
    return subprocess.run(
        [str(BIN), "rerate", "--config", str(daemon.setup.config), "--from", str(day),
         "--to", str(day), "--account", account_id, "--plan", str(plan), "--apply",
         "--reason", "price rise"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


async def db_row(url: str, call_id: str, revision: int) -> tuple[Any, ...]:
    for _ in range(400):
        async with await psycopg.AsyncConnection.connect(url) as conn:
            cur = await conn.execute(
                "SELECT duration_s, cost_micros, charged_micros, charge_reason, revision"
                " FROM cdrs WHERE call_id = %s",
                (call_id,),
            )
            row = await cur.fetchone()
        if row is not None and row[4] >= revision:
            return tuple(row)
        await asyncio.sleep(0.05)
    raise AssertionError(f"{call_id}: no CDR of revision {revision} in the billing DB")


async def test_rerate_of_a_reaped_call_then_its_late_stop(
    reaping: Daemon, pg_url: str, tmp_path: Path
) -> None:
    """A call reaped with a provisional charge is rerated (--apply) before its late Stop
    comes: the ledger's movements for the call and its final CDR tell one story."""
    daemon = reaping
    daemon.create_account("rr", "10.00", identities=["user:rr", f"ani:{ANI}"])
    call = Call("rr-1", "rr", called=callee_of("rr-1", national=True), calling=ANI)
    sock = await GatewaySocket.open()
    try:
        assert (await sock.ask(call.access_request(), daemon.setup.auth_port)).code == (
            rc.ACCESS_ACCEPT
        )
        await sock.ask(call.accounting(rc.STATUS_START, 0), daemon.setup.acct_port)
        provisional = await db_row(pg_url, "rr-1", 0)  # reaped after 20 s of silence
        assert provisional[3] == "provisional", provisional
        done = rerate_apply(daemon, "rr", tmp_path / "double.toml")
        assert done.returncode == 0, done.stdout + done.stderr
        rerated = await db_row(pg_url, "rr-1", 0)
        print("provisional", provisional, "rerated", rerated, done.stdout)
        stop = call.accounting(rc.STATUS_STOP, 100)
        assert (await sock.ask(stop, daemon.setup.acct_port)).code == rc.ACCOUNTING_RESPONSE
    finally:
        sock.close()
    final = await db_row(pg_url, "rr-1", 1)
    print("final", final)
    acc = await wait_no_holds(daemon, "rr")
    assert parse_amount(acc["balance"]) == 10_000_000 - final[2], (acc, final)
    _, run = assure(daemon)
    kinds = {f["kind"] for f in run["findings"]} - {"unknown_to_switch"}
    assert kinds == set(), run


@pytest.fixture
def reaping_no_exporter(tmp_path: Path, pg_url: str) -> Iterator[Daemon]:
    """As ``reaping``, the exporter a process of its own (`chargingd export --once`)."""
    setup = write_setup(
        tmp_path,
        billing=f'db_url = "{pg_url}"',
        session_options={"interim_interval_s": 10, "stale_factor": 2, "reaper_interval_s": 0.5},
    )
    double = tmp_path / "double.toml"
    double.write_text(TARIFF.replace('id = "e2e"', 'id = "double"').replace('"0.60"', '"1.20"'))
    setup.config.write_text(setup.config.read_text() + EXTRA)
    with serving(setup, tmp_path / "daemon.log") as d:
        yield d


def export_once(daemon: Daemon) -> None:
    done = subprocess.run(
        [str(BIN), "export", "--config", str(daemon.setup.config), "--once"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


async def test_rerate_while_a_late_stops_correction_waits_for_the_exporter(
    reaping_no_exporter: Daemon, pg_url: str, tmp_path: Path
) -> None:
    """The late Stop corrected the ledger (revision 1 in the stream), the billing DB
    still has the provisional revision 0 when `rerate --apply` runs: the rerate must
    not move the call's money from the provisional charge the ledger no longer has."""
    daemon = reaping_no_exporter
    daemon.create_account("rw", "10.00", identities=["user:rw", f"ani:{ANI}"])
    call = Call("rw-1", "rw", called=callee_of("rw-1", national=True), calling=ANI)
    sock = await GatewaySocket.open()
    try:
        accept = await sock.ask(call.access_request(), daemon.setup.auth_port)
        assert accept.code == rc.ACCESS_ACCEPT
        await sock.ask(call.accounting(rc.STATUS_START, 0), daemon.setup.acct_port)
        for _ in range(600):  # reaped after 20 s of silence
            export_once(daemon)
            async with await psycopg.AsyncConnection.connect(pg_url) as conn:
                cur = await conn.execute("SELECT 1 FROM cdrs WHERE call_id = 'rw-1'")
                if await cur.fetchone():
                    break
            await asyncio.sleep(0.5)
        provisional = await db_row(pg_url, "rw-1", 0)
        assert provisional[3] == "provisional", provisional
        stop = call.accounting(rc.STATUS_STOP, 100)
        assert (await sock.ask(stop, daemon.setup.acct_port)).code == rc.ACCOUNTING_RESPONSE
    finally:
        sock.close()
    acc = await wait_no_holds(daemon, "rw")
    assert parse_amount(acc["balance"]) == 10_000_000 - 100 * MICROS_PER_S  # corrected
    done = rerate_apply(daemon, "rw", tmp_path / "double.toml")  # sees revision 0 only
    print(done.stdout, done.stderr)
    export_once(daemon)  # revision 1 arrives
    final = await db_row(pg_url, "rw-1", 1)
    acc = account(daemon, "rw")
    print("final", final, acc["balance"])
    assert parse_amount(acc["balance"]) == 10_000_000 - final[2], (acc, final)
    _, run = assure(daemon)
    kinds = {f["kind"] for f in run["findings"]} - {"unknown_to_switch"}
    assert kinds == set(), run


async def test_rerate_apply_while_new_calls_of_both_protocols_arrive(
    daemon: Daemon, pg_url: str, tmp_path: Path
) -> None:
    """`chargingd rerate --apply` at double price runs while new RADIUS and Diameter
    calls are authorized, charged, closed and exported: whichever calls it priced,
    the billing DB's charged_micros add up to what the ledger took."""
    daemon.create_account("rn", "50.00", identities=["user:rn", f"ani:{ANI}"])
    first = await asyncio.gather(*(radius_call(daemon, f"rn-old-{i}", "rn", 30) for i in range(6)))
    await db_rows(pg_url, "rn", len(first))
    loop = asyncio.get_running_loop()
    client = await open_client(daemon.diameter_port)  # type: ignore[attr-defined]
    try:
        results = await asyncio.gather(
            loop.run_in_executor(None, rerate_apply, daemon, "rn", tmp_path / "double.toml"),
            *(radius_call(daemon, f"rn-new-{i}", "rn", 10 + i) for i in range(10)),
            *(diameter_call(client, f"rnd-{i}", ANI, [5, 5, i + 1]) for i in range(5)),
        )
    finally:
        await client.close()
    done = results[0]
    assert done.returncode == 0, done.stdout + done.stderr
    acc = await wait_no_holds(daemon, "rn")
    charged = await db_rows(pg_url, "rn", 6 + 10 + 5)
    assert parse_amount(acc["balance"]) == 50_000_000 - sum(charged.values()), charged
    # the old calls at double price now (the new ones: whichever the rerate saw)
    assert all(charged[f"rn-old-{i}"] == 2 * 30 * MICROS_PER_S for i in range(6)), charged
    _, run = assure(daemon)
    kinds = {f["kind"] for f in run["findings"]} - {"unknown_to_switch"}
    assert kinds == set(), run


async def both_at_once(sock: GatewaySocket, packet: bytes, ports: list[int]) -> None:
    """The same bytes to both daemons at the same moment (a gateway that sends every
    accounting packet to both of its servers); both answers awaited."""
    for port in ports:
        sock.transport.sendto(packet, ("127.0.0.1", port))
    for _ in ports:
        data = await asyncio.wait_for(sock.proto.inbox.get(), 10)
        assert data[1] == packet[1]


async def test_two_daemons_get_every_accounting_packet_at_once(
    tmp_path: Path, redis7_server: Any, pg_url: str
) -> None:
    """Start, Interims and Stop of each call to both daemons at the same moment, the
    same txn id's top-up to both, calls of the account from both: one charge per
    call, one top-up per txn id, the story adds up."""
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(redis7_server.url)
    await r.flushall()
    await r.execute_command("FUNCTION", "FLUSH")
    await r.aclose()
    setup_a, setup_b = two_daemon_setups(
        tmp_path, redis7_server.url, pg_url, ports.free_port(socket.SOCK_STREAM)
    )
    a, b = Daemon(setup_a, tmp_path / "a.log"), Daemon(setup_b, tmp_path / "b.log")
    a.start()
    b.start()
    loop = asyncio.get_running_loop()
    try:
        a.wait_ready()
        b.wait_ready()
        a.create_account("dup", "20.00", identities=["user:dup", f"ani:{ANI}"])
        acct = [a.setup.acct_port, b.setup.acct_port]

        async def call(sid: str, usage_s: int) -> None:
            c = Call(sid, "dup", called=callee_of(sid, national=True), calling=ANI)
            sock = await GatewaySocket.open()
            try:
                auth = a.setup.auth_port if hash(sid) % 2 else b.setup.auth_port
                assert (await sock.ask(c.access_request(), auth)).code == rc.ACCESS_ACCEPT
                await both_at_once(sock, c.accounting(rc.STATUS_START, 0), acct)
                await both_at_once(sock, c.accounting(rc.STATUS_INTERIM, usage_s // 3), acct)
                await both_at_once(sock, c.accounting(rc.STATUS_INTERIM, usage_s // 2), acct)
                await both_at_once(sock, c.accounting(rc.STATUS_STOP, usage_s), acct)
            finally:
                sock.close()

        def topup(d: Daemon, txn: str) -> Any:
            params = {"id": "dup", "amount": "0.70", "txn_id": txn}
            return loop.run_in_executor(None, d.call, "account.topup", params)

        usage = {f"dup-{i}": 15 + 2 * i for i in range(16)}
        await asyncio.gather(
            *(call(s, u) for s, u in usage.items()),
            *(topup(d, f"dt{i}") for i in range(4) for d in (a, b)),
        )
        acc = await wait_no_holds(a, "dup")
        expected = {s: u * MICROS_PER_S for s, u in usage.items()}
        charged = await db_rows(pg_url, "dup", len(expected))
        assert charged == expected
        assert parse_amount(acc["balance"]) == 20_000_000 + 4 * 700_000 - sum(charged.values())
        both_logs = a.log() + b.log()
        closes = {s: both_logs.count(f" closed {s} account=") for s in usage}
        assert set(closes.values()) == {1}, closes
        _, run = assure(a)
        kinds = {f["kind"] for f in run["findings"]} - {"unknown_to_switch"}
        assert kinds == set(), run
    finally:
        for d in (a, b):
            d.kill()
        print(f"---- daemon A ----\n{a.log()}\n---- daemon B ----\n{b.log()}")


@pytest.fixture
def reaping_both(tmp_path: Path, pg_url: str) -> Iterator[Daemon]:
    """RADIUS and Diameter, the reaper at 20 s of silence, the exporter on."""
    port = ports.free_port(socket.SOCK_STREAM)
    setup = write_setup(
        tmp_path,
        billing=f'db_url = "{pg_url}"',
        export="run_in_serve = true\nblock_ms = 50",
        session_options={"interim_interval_s": 10, "stale_factor": 2, "reaper_interval_s": 0.5},
        extra=EXTRA_DIAMETER.format(port=port),
    )
    double = tmp_path / "double.toml"
    double.write_text(TARIFF.replace('id = "e2e"', 'id = "double"').replace('"0.60"', '"1.20"'))
    setup.config.write_text(setup.config.read_text() + EXTRA)
    with serving(setup, tmp_path / "daemon.log") as d:
        d.diameter_port = port  # type: ignore[attr-defined]
        yield d


async def test_reaped_calls_of_both_protocols_rerated_then_their_late_ends(
    reaping_both: Daemon, pg_url: str, tmp_path: Path
) -> None:
    """A RADIUS call and a Diameter session go silent, are reaped, rerated (--apply),
    then end late (Stop, CCR-T) while top-ups arrive: each final CDR says all the
    ledger took for its call."""
    daemon = reaping_both
    daemon.create_account("rb", "10.00", identities=["user:rb", f"ani:{ANI}"])
    call = Call("rb-1", "rb", called=callee_of("rb-1", national=True), calling=ANI)
    dcall = cl.Call(f"{PEER_HOST};rbd-1", calling=ANI, called=f"tel:{callee_of('rbd-1')}")
    sock = await GatewaySocket.open()
    client = await open_client(daemon.diameter_port)  # type: ignore[attr-defined]
    loop = asyncio.get_running_loop()
    try:
        accept = await sock.ask(call.access_request(), daemon.setup.auth_port)
        assert accept.code == rc.ACCESS_ACCEPT
        await sock.ask(call.accounting(rc.STATUS_START, 0), daemon.setup.acct_port)
        i = await client.ccr(dcall, RequestType.INITIAL, 0, requested_s=30)
        assert i.result == 2001
        await db_row(pg_url, "rb-1", 0)
        await db_row(pg_url, dcall.session_id, 0)  # both reaped, provisional
        done = rerate_apply(daemon, "rb", tmp_path / "double.toml")
        assert done.returncode == 0, done.stdout + done.stderr
        stop = call.accounting(rc.STATUS_STOP, 90)
        await asyncio.gather(
            sock.ask(stop, daemon.setup.acct_port),
            client.ccr(dcall, RequestType.TERMINATION, 1, used_s=70),
            *(loop.run_in_executor(None, daemon.call, "account.topup",
                                   {"id": "rb", "amount": "0.10", "txn_id": f"rb{k}"})
              for k in range(3)),
        )  # fmt: skip
    finally:
        sock.close()
        await client.close()
    final = await db_row(pg_url, "rb-1", 1)
    dfinal = await db_row(pg_url, dcall.session_id, 1)
    assert (final[0], dfinal[0]) == (90, 70)
    acc = await wait_no_holds(daemon, "rb")
    assert parse_amount(acc["balance"]) == 10_000_000 + 300_000 - final[2] - dfinal[2]
    _, run = assure(daemon)
    kinds = {f["kind"] for f in run["findings"]} - {"unknown_to_switch"}
    assert kinds == set(), run
