"""Answers and state agree, through real daemons (issue 9, findings 9 and 12).

- finding 9: two daemons on one Redis; a retransmitted Access-Request whose first
  copy was refused for credit gets the same answer (h323-return-code 4, insufficient
  credit) from the other daemon, not "session id already used" (8), even once money
  arrived in between.
- finding 12: Redis stalls (SIGSTOP) longer than the command timeout; the gateway is
  refused "charging unavailable"; when Redis resumes, the commands already written
  run, and must leave nothing: no session, no hold, no CDR. On the fused path (a
  caller seen before: one script) and on the partial-grant path.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator

import pytest
from radius_e2e_harness import Call, Daemon, GatewaySocket, write_setup
from radius_peer import wait_until

from chargingd.core.money import parse_amount
from chargingd.radius import codec as rc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

COMMAND_TIMEOUT_S = 0.5


@pytest.fixture(scope="module")
def daemons(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Daemon, Daemon]]:
    """Daemon A (embedded Redis) and daemon B using A's Redis: two hosts, one Redis."""
    tmp = tmp_path_factory.mktemp("two-daemons")
    for name in ("a", "b"):
        (tmp / name).mkdir()
    options = {"reaper_interval_s": 0.5}
    first = Daemon(
        write_setup(
            tmp / "a",
            session_options=options,
            top=f"[redis]\ncommand_timeout_s = {COMMAND_TIMEOUT_S}\n",
        ),
        tmp / "a.log",
    )
    redis_url = f"unix://{first.setup.redis_socket}"
    second = Daemon(
        write_setup(
            tmp / "b",
            session_options=options,
            top=f'[redis]\nurl = "{redis_url}"\ncommand_timeout_s = {COMMAND_TIMEOUT_S}\n',
        ),
        tmp / "b.log",
    )
    try:
        first.start()
        first.wait_ready()
        second.start()
        second.wait_ready()
        yield first, second
    finally:
        second.kill()
        first.kill()
        print(f"---- daemon A log ----\n{first.log()}\n---- daemon B log ----\n{second.log()}")


def money(daemon: Daemon, account_id: str) -> tuple[int, int, int]:
    acc = daemon.call("account.get", {"id": account_id})
    return parse_amount(acc["balance"]), parse_amount(acc["reserved"]), acc["live_sessions"]


async def test_retransmission_refused_for_credit_gets_the_same_answer_from_any_daemon(
    daemons: tuple[Daemon, Daemon],
) -> None:
    a, b = daemons
    a.create_account("broke", "0.005")  # half a second's worth: nothing can be granted
    call = Call("retx-1", "broke")
    packet = call.access_request()
    sock = await GatewaySocket.open()
    try:
        first = await sock.ask(packet, a.setup.auth_port)
        a.call("account.topup", {"id": "broke", "amount": "5.00", "txn_id": "broke-t1"})
        again = await sock.ask(packet, b.setup.auth_port)  # the same bytes, the other daemon
    finally:
        sock.close()
    for reply in (first, again):
        assert reply.code == rc.ACCESS_REJECT
        assert reply.cisco_value(rc.H323_RETURN_CODE) == "4", reply.text(rc.REPLY_MESSAGE)
    assert money(a, "broke") == (5_005_000, 0, 0)


def redis_pid(daemon: Daemon) -> int:
    return int((daemon.setup.data / "redis" / "redis.pid").read_text())


async def stalled_authorize(daemon: Daemon, call: Call, stall_s: float) -> rc.Packet:
    """Stop Redis, send the Access-Request, resume Redis ``stall_s`` later."""
    pid = redis_pid(daemon)
    sock = await GatewaySocket.open()
    os.kill(pid, signal.SIGSTOP)
    try:
        reply = await sock.ask(call.access_request(), daemon.setup.auth_port, timeout_s=5.0)
        await asyncio.sleep(stall_s)
    finally:
        os.kill(pid, signal.SIGCONT)
        sock.close()
    return reply


async def wait_settled(daemon: Daemon, account_id: str, balance_micros: int) -> None:
    """The daemon's undo ran: the account holds nothing and has no live call."""

    def settled() -> bool:
        return money(daemon, account_id) == (balance_micros, 0, 0)

    await wait_until(settled, timeout_s=20.0)


@pytest.mark.parametrize(
    ("account_id", "balance"),
    [("stallfused", "10.00"), ("stallpartial", "0.20")],
    ids=["fused", "partial-grant"],
)
async def test_refusal_during_a_redis_stall_does_not_take_effect_afterwards(
    daemons: tuple[Daemon, Daemon], account_id: str, balance: str
) -> None:
    """10.00: the first grant is held in full (one script writes hold and record);
    0.20: it is partial (the script holds, the record is a second write)."""
    a, _ = daemons
    a.create_account(account_id, balance)
    balance_micros = parse_amount(balance)
    # A caller seen before: the authorize's first Redis command is its write (reads
    # of an unknown caller would time out first, with nothing written).
    sock = await GatewaySocket.open()
    try:
        warmup = Call(f"{account_id}-warm", account_id)
        accept = await sock.ask(warmup.access_request(), a.setup.auth_port)
        assert accept.code == rc.ACCESS_ACCEPT
        stop = warmup.accounting(rc.STATUS_STOP, 0)
        assert (await sock.ask(stop, a.setup.acct_port)).code == rc.ACCOUNTING_RESPONSE
    finally:
        sock.close()
    call = Call(f"{account_id}-1", account_id)
    reply = await stalled_authorize(a, call, stall_s=4 * COMMAND_TIMEOUT_S)
    assert reply.code == rc.ACCESS_REJECT
    assert reply.text(rc.REPLY_MESSAGE) == "charging unavailable"
    await wait_settled(a, account_id, balance_micros)
    assert a.call("session.list", {"account": account_id})["sessions"] == []
    # The caller's next call has all its money (the partial path held all of it).
    sock = await GatewaySocket.open()
    try:
        nxt = Call(f"{account_id}-2", account_id)
        accept = await sock.ask(nxt.access_request(), a.setup.auth_port)
        assert accept.code == rc.ACCESS_ACCEPT
        assert accept.integer(rc.SESSION_TIMEOUT) == min(balance_micros // 10_000, 10800)
        stop = nxt.accounting(rc.STATUS_STOP, 0)
        assert (await sock.ask(stop, a.setup.acct_port)).code == rc.ACCOUNTING_RESPONSE
    finally:
        sock.close()
    # No CDR ever for the refused call (a stale one would come from a live record).
    assert [c.call_id for c in a.cdrs() if c.call_id == call.session_id] == []
