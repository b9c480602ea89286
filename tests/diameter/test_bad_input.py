"""Bad input over real TCP: an error answer or a closed connection, never a crash,
never money moved (DESIGN invariant 6), and a duplicate never charges twice (3)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from diameter_client import ME, TcpClient, open_client
from diameter_harness import Running, running_frontend
from sessions_harness import EUR, add_account

from chargingd.diameter import client as cl
from chargingd.diameter import codec as dc
from chargingd.diameter.dictionary import A, Result
from chargingd.diameter.messages import result_code

CALLER = "+4930555000"
BERLIN = "tel:+4930123456"  # 10_000 micros a second


def call(sid: str) -> cl.Call:
    return cl.Call(sid, calling=CALLER, called=BERLIN)


@pytest.fixture
async def running(redis: aioredis.Redis, tmp_path: Path) -> AsyncIterator[Running]:
    async with running_frontend(redis, tmp_path) as r:
        await add_account(r.ledger, balance_micros=10 * EUR, identities=(f"ani:{CALLER}",))
        yield r


async def money(running: Running) -> tuple[int, int, int]:
    acc = await running.ledger.get_account("acc1")
    return acc.balance_micros, acc.reserved_micros, acc.debits_micros


async def still_serves(running: Running) -> None:
    """A fresh client completes a whole call: the daemon survived and charges right."""
    before = await money(running)
    client = await open_client(running.port)
    try:
        c = call(f"check-{random.getrandbits(32)}")
        assert (await client.ccr(c, 1, 0, requested_s=60)).result == 2001
        assert (await client.ccr(c, 3, 1, used_s=2)).result == 2001
    finally:
        await client.close()
    after = await money(running)
    assert after[0] == before[0] - 20_000 and after[1] == before[1]


async def raw_connection(running: Running) -> TcpClient:
    return await TcpClient.connect(running.port)


async def test_truncated_header_then_eof_closes_and_moves_nothing(running: Running) -> None:
    before = await money(running)
    client = await open_client(running.port)
    client.writer.write(cl.ccr(ME, call("trunc"), 1, 0, 5, 5)[:12])
    client.writer.write_eof()
    await asyncio.wait_for(client.closed.wait(), 5)
    await client.close()
    assert await money(running) == before
    await still_serves(running)


async def test_wrong_message_length_closes_the_connection(running: Running) -> None:
    before = await money(running)
    client = await open_client(running.port)
    data = bytearray(cl.ccr(ME, call("len"), 1, 0, 5, 5))
    data[1:4] = (len(data) + 2).to_bytes(3, "big")  # not a multiple of 4
    client.writer.write(bytes(data))
    await asyncio.wait_for(client.closed.wait(), 5)
    await client.close()
    assert running.frontend.server.counters.framing_lost == 1
    assert await money(running) == before
    await still_serves(running)


async def test_avp_overrunning_its_message_gets_5014(running: Running) -> None:
    before = await money(running)
    client = await open_client(running.port)
    data = bytearray(cl.ccr(ME, call("overrun"), 1, 0, 7, 7, requested_s=60))
    data[25:28] = (4000).to_bytes(3, "big")  # Session-Id claims 4000 bytes
    answer = await client.ask(bytes(data))
    assert result_code(answer) == Result.INVALID_AVP_LENGTH
    assert answer.get(A.FAILED_AVP) is not None
    assert await money(running) == before
    await client.close()
    await still_serves(running)


async def test_unknown_command_gets_3001(running: Running) -> None:
    client = await open_client(running.port)
    answer = await client.ask(dc.encode(8388620, dc.FLAG_R, 4, 77, 77, ME.origin()))
    assert result_code(answer) == Result.COMMAND_UNSUPPORTED and answer.is_error
    await client.close()


async def test_ccr_before_cer_is_refused_and_closed(running: Running) -> None:
    before = await money(running)
    client = await raw_connection(running)
    answer = await client.ask(cl.ccr(ME, call("early"), 1, 0, 9, 9, requested_s=60))
    assert result_code(answer) == Result.UNKNOWN_PEER
    await asyncio.wait_for(client.closed.wait(), 5)
    await client.close()
    assert await money(running) == before
    assert await running.sessions.store.find("early") is None


async def test_ccr_u_for_an_unknown_session_gets_5002(running: Running) -> None:
    before = await money(running)
    client = await open_client(running.port)
    answer = await client.ccr(call("never-started"), 2, 1, used_s=30)
    assert answer.result == Result.UNKNOWN_SESSION_ID
    answer = await client.ccr(call("never-started"), 3, 2, used_s=30)
    assert answer.result == Result.UNKNOWN_SESSION_ID
    assert await money(running) == before
    assert not await running.redis.xlen("cdr:stream")
    await client.close()


async def test_repeated_request_number_same_answer_or_refused(running: Running) -> None:
    client = await open_client(running.port)
    c = call("repeat")
    assert (await client.ccr(c, 1, 0, requested_s=60)).result == 2001
    first = await client.ccr(c, 2, 1, used_s=30, requested_s=60)
    assert first.result == 2001
    after_first = await money(running)
    assert after_first[2] == 30 * 10_000
    # The same request again (a retransmission with new ids): the same answer.
    again = await client.ccr(c, 2, 1, used_s=30, requested_s=60)
    assert (again.result, again.granted) == (first.result, first.granted)
    # The same number saying other units: refused, nothing moved.
    changed = await client.ccr(c, 2, 1, used_s=50, requested_s=60)
    assert changed.result == Result.INVALID_AVP_VALUE
    failed = changed.msg.get(A.FAILED_AVP).group()  # type: ignore[union-attr]
    assert failed[0].code == A.CC_REQUEST_NUMBER
    stale = await client.ccr(c, 2, 0, used_s=10, requested_s=60)
    assert stale.result == Result.INVALID_AVP_VALUE
    assert await money(running) == after_first
    assert (await client.ccr(c, 3, 2, used_s=5)).result == 2001
    assert (await money(running))[2] == 35 * 10_000
    await client.close()


async def test_concurrent_copies_of_one_ccr_charge_once(running: Running) -> None:
    clients = [await open_client(running.port) for _ in range(4)]
    c = call("concurrent")
    assert (await clients[0].ccr(c, 1, 0, requested_s=60)).result == 2001
    # 16 copies of CCR-U #1 on 4 connections at once, half with one End-to-End id.
    same_e2e = cl.ccr(ME, c, 2, 1, 4242, 4242, used_s=40, requested_s=60)
    copies = []
    for i in range(16):
        client = clients[i % 4]
        if i % 2:
            copies.append(client.ccr(c, 2, 1, used_s=40, requested_s=60))
        else:
            data = bytearray(same_e2e)
            data[12:16] = (9000 + i).to_bytes(4, "big")  # own Hop-by-Hop id per copy
            copies.append(client.ask(bytes(data)))
    answers = await asyncio.gather(*copies)
    codes = {a.result if hasattr(a, "result") else result_code(a) for a in answers}
    assert codes == {2001}
    balance, _, debits = await money(running)
    assert debits == 40 * 10_000 and balance == 10 * EUR - 40 * 10_000
    for client in clients:
        await client.close()


async def test_garbage_storm_never_crashes_nor_moves_money(running: Running) -> None:
    """Like the RADIUS fuzz test, over live TCP: mutated and random frames."""
    rng = random.Random(16)
    valid = [
        cl.ccr(ME, call("fuzz"), 1, 0, 1, 1, requested_s=60),
        cl.ccr(ME, call("fuzz"), 2, 1, 2, 2, used_s=10),
        cl.cer(ME, 3, 3),
        cl.dwr(ME, 4, 4),
    ]
    before = await money(running)
    for round_no in range(60):
        client = await open_client(running.port) if round_no % 3 else await raw_connection(running)
        for _ in range(5):
            frame = bytearray(rng.choice(valid))
            for _ in range(rng.randint(1, 4)):
                frame[rng.randrange(20 if round_no % 2 else len(frame))] = rng.randrange(256)
            if round_no % 5 == 0:
                frame = bytearray(rng.randbytes(rng.randint(1, 64)))
            client.writer.write(bytes(frame))
        await asyncio.sleep(0)
        await client.close()
    server = running.frontend.server
    for _ in range(500):  # until every connection is gone and every request worked
        if not server.links and not server.in_flight:
            break
        await asyncio.sleep(0.01)
    assert not server.links and not server.in_flight
    # Mutated CCR-Is may have opened sessions (a mutated number still authorizes):
    # what matters is that nothing but holds and their debits moved, and it serves.
    balance, _, debits = await money(running)
    assert balance + debits == before[0] + before[2], "money only moved by debits"
    assert running.frontend.server.errors == 0 and running.frontend.app.errors == 0
    await still_serves(running)


def _cca_ids(answer: dc.Message) -> tuple[int | None, ...]:
    return tuple(
        a.u32() if a is not None else None
        for a in (
            answer.get(A.AUTH_APPLICATION_ID),
            answer.get(A.CC_REQUEST_TYPE),
            answer.get(A.CC_REQUEST_NUMBER),
        )
    )


async def test_5xxx_error_ccas_keep_the_cca_grammar(running: Running) -> None:
    """A 5xxx answer is a CCA (no E bit, RFC 6733 §7.2), so it carries the AVPs RFC 4006
    §3.2 requires of one: Auth-Application-Id, CC-Request-Type, CC-Request-Number.
    Without them OTP diameter and freeDiameter discard the answer as malformed and the
    client times out instead of reading the error. Nothing is charged by any of them."""
    before = await money(running)
    client = await open_client(running.port)
    # 5005: Service-Context-Id left out.
    full = dc.decode(cl.ccr(ME, call("no-context"), 1, 0, 0, 0, requested_s=60))
    body = b"".join(a.raw() for a in full.avps if a.code != A.SERVICE_CONTEXT_ID)
    hbh, e2e = client.next_ids()
    missing = await client.ask(dc.encode(full.command, full.flags, 4, hbh, e2e, body))
    # 5001: an unknown AVP with the M bit.
    hbh, e2e = client.next_ids()
    stranger = dc.u32(99999, 1, vendor=12345)
    unknown = await client.ask(cl.ccr(ME, call("stranger"), 1, 0, hbh, e2e, extra=stranger))
    # 5004: a used CC-Time no call can have.
    hbh, e2e = client.next_ids()
    absurd = await client.ask(cl.ccr(ME, call("absurd"), 2, 3, hbh, e2e, used_s=10**6))
    for answer, code, ids in (
        (missing, Result.MISSING_AVP, (4, 1, 0)),
        (unknown, Result.AVP_UNSUPPORTED, (4, 1, 0)),
        (absurd, Result.INVALID_AVP_VALUE, (4, 2, 3)),
    ):
        assert result_code(answer) == code and not answer.is_error
        assert _cca_ids(answer) == ids, code
        assert answer.get(A.FAILED_AVP) is not None
    assert await money(running) == before
    # Counted where ctl status shows them: the CCR-level ones and the unknown AVP.
    counters = running.frontend.counters()
    assert (counters["cc_malformed"], counters["frontend"]["unsupported_avp"]) == (2, 1)
    await client.close()
    await still_serves(running)


async def test_refused_request_numbers_say_why(running: Running) -> None:
    """5004 with CC-Request-Number in Failed-AVP alone does not tell the operator whether
    the client reused a Session-Id or repeated a number: Error-Message says which."""
    client = await open_client(running.port)
    c = call("reused")
    assert (await client.ccr(c, 1, 0, requested_s=60)).result == 2001
    assert (await client.ccr(c, 2, 1, used_s=30, requested_s=60)).result == 2001
    changed = await client.ccr(c, 2, 1, used_s=50, requested_s=60)
    stale = await client.ccr(c, 2, 0, used_s=10, requested_s=60)
    assert (await client.ccr(c, 3, 2, used_s=5)).result == 2001
    after_call = await money(running)
    assert after_call[2] == 35 * 10_000
    # A new call under the ended call's Session-Id (a client restarted its counter).
    reused = await client.ccr(c, 1, 0, requested_s=60)
    for answer, why in (
        (changed, "CC-Request-Number 1 already answered for other units"),
        (stale, "CC-Request-Number older than the last answered (1)"),
        (reused, "Session-Id already used"),
    ):
        assert answer.result == Result.INVALID_AVP_VALUE
        assert answer.msg.get(A.ERROR_MESSAGE).text() == why  # type: ignore[union-attr]
        failed = answer.msg.get(A.FAILED_AVP).group()  # type: ignore[union-attr]
        assert failed[0].code == A.CC_REQUEST_NUMBER
    assert await money(running) == after_call
    await client.close()


async def test_cer_without_origin_host_gets_5005_not_unknown_peer(running: Running) -> None:
    """A CER lacking Origin-Host is malformed (5005 naming it in Failed-AVP, counted as
    malformed), not a peer missing from the table (3010 would send the operator to the
    peer configuration)."""
    client = await raw_connection(running)
    full = dc.decode(cl.cer(ME, 1, 1))
    body = b"".join(a.raw() for a in full.avps if a.code != A.ORIGIN_HOST)
    cea = await client.ask(dc.encode(full.command, full.flags, 0, 1, 1, body))
    assert result_code(cea) == Result.MISSING_AVP and not cea.is_error
    [named] = cea.get(A.FAILED_AVP).group()  # type: ignore[union-attr]
    assert named.code == A.ORIGIN_HOST
    await asyncio.wait_for(client.closed.wait(), 5)
    await client.close()
    counters = running.frontend.server.counters
    assert (counters.malformed, counters.unknown_peer) == (1, 0)


async def test_a_session_id_sessions_cannot_keep_is_5004_not_5012(running: Running) -> None:
    """Sessions and the ledger take 1-256 printable characters as a session id. A
    longer Session-Id was refused there as a system error: 5012 UNABLE_TO_COMPLY,
    "invalid session id", uncounted. It is the request's value that is wrong: 5004
    with the Session-Id in Failed-AVP, counted as malformed; nothing moves."""
    before = await money(running)
    client = await open_client(running.port)
    try:
        long_sid = "scscf.ims.test;1;" + "x" * 300
        answer = await client.ccr(call(long_sid), 1, 0, requested_s=60)
        assert answer.result == Result.INVALID_AVP_VALUE
        failed = answer.msg.get(A.FAILED_AVP).group()  # type: ignore[union-attr]
        assert [(a.code, a.text()) for a in failed] == [(A.SESSION_ID, long_sid)]
        assert running.frontend.counters()["cc_malformed"] == 1
        ok = await client.ccr(call("scscf.ims.test;1;" + "x" * 239), 1, 0, requested_s=60)
        assert ok.result == 2001, "256 characters are still taken"
        assert (
            await client.ccr(call("scscf.ims.test;1;" + "x" * 239), 3, 1, used_s=2)
        ).result == 2001
    finally:
        await client.close()
    assert (await money(running))[0] == before[0] - 20_000
