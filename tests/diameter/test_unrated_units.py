"""Units chargingd does not rate (octets, service-specific units, money) over real TCP
on a real Redis: never served or closed for free. RFC 4006 §9.1 DIAMETER_RATING_FAILED
(5031) per MSCC or for the command, nothing held for them; a CCR-T that reports them
without CC-Time is charged for the session's time; an empty RSU and CC-Time as before.
Each scenario checks the ledger (balance, holds, debits) against the CDRs."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from diameter_client import Answered, open_client
from diameter_harness import Running, running_frontend
from sessions_harness import EUR, add_account, read_cdrs

from chargingd.diameter import client as cl
from chargingd.diameter import codec as dc
from chargingd.diameter.ccstate import cc_key
from chargingd.diameter.dictionary import A, Result
from chargingd.diameter.translate import NTP_UNIX_OFFSET_S

CALLER = "+4930555000"
BERLIN = "tel:+4930123456"  # 10_000 micros a second
PER_S = 10_000
BALANCE = 10 * EUR
RATING_FAILED = int(Result.RATING_FAILED)

UNITS = {
    "total-octets": (A.CC_TOTAL_OCTETS,),
    "in-out-octets": (A.CC_INPUT_OCTETS, A.CC_OUTPUT_OCTETS),
    "service-specific": (A.CC_SERVICE_SPECIFIC_UNITS,),
    "money": (A.CC_MONEY,),  # time is granted, not money: not rated either
}


@pytest.fixture
async def running(redis: aioredis.Redis, tmp_path: Path) -> AsyncIterator[Running]:
    async with running_frontend(redis, tmp_path) as r:
        await add_account(r.ledger, balance_micros=BALANCE, identities=(f"ani:{CALLER}",))
        yield r


def u64(code: int, value: int) -> bytes:
    return dc.avp(code, value.to_bytes(8, "big"))


def cc_money() -> bytes:
    """CC-Money (RFC 4006 §8.22): 1.50 EUR (Unit-Value 150 x 10^-2, ISO 4217 978)."""
    value = dc.grouped(
        A.UNIT_VALUE,
        dc.avp(A.VALUE_DIGITS, (150).to_bytes(8, "big")),
        dc.avp(A.EXPONENT, (-2).to_bytes(4, "big", signed=True)),
    )
    return dc.grouped(A.CC_MONEY, value, dc.u32(A.CURRENCY_CODE, 978))


def units(*codes: int, time_s: int | None = None) -> list[bytes]:
    """The unit AVPs of a Requested-/Used-Service-Unit (Unsigned64, RFC 4006 §8.21-8.23)."""
    out = [cc_money() if code == A.CC_MONEY else u64(code, 1_000_000) for code in codes]
    if time_s is not None:
        out.insert(0, dc.u32(A.CC_TIME, time_s))
    return out


def rsu(*codes: int, time_s: int | None = None) -> bytes:
    return dc.grouped(A.REQUESTED_SERVICE_UNIT, *units(*codes, time_s=time_s))


def usu(*codes: int, time_s: int | None = None) -> bytes:
    return dc.grouped(A.USED_SERVICE_UNIT, *units(*codes, time_s=time_s))


def mscc(rg: int, *parts: bytes) -> bytes:
    return dc.grouped(A.MULTIPLE_SERVICES_CREDIT_CONTROL, *parts, dc.u32(A.RATING_GROUP, rg))


def at(unix_s: int) -> bytes:
    """Event-Timestamp (RFC 6733 §8.21, NTP seconds): when the event happened."""
    return dc.u32(A.EVENT_TIMESTAMP, unix_s + NTP_UNIX_OFFSET_S)


def top_call(sid: str) -> cl.Call:
    """RFC 4006 single service: the units at the top level (no MSCC)."""
    return cl.Call(sid, calling=CALLER, called=BERLIN, rating_group=None)


async def money(r: Running) -> tuple[int, int, int]:
    acc = await r.ledger.get_account("acc1")
    return acc.balance_micros, acc.reserved_micros, acc.debits_micros


def msccs(answer: Answered) -> dict[int, tuple[int, int | None]]:
    """Rating-Group -> (Result-Code, GSU CC-Time or None: no Granted-Service-Unit)."""
    out = {}
    for m in answer.msg.all(A.MULTIPLE_SERVICES_CREDIT_CONTROL):
        inner = m.group()
        gsu = dc.find(inner, A.GRANTED_SERVICE_UNIT)
        t = dc.find(gsu.group(), A.CC_TIME) if gsu is not None else None
        rc = dc.find(inner, A.RESULT_CODE)
        rg = dc.find(inner, A.RATING_GROUP)
        assert rc is not None and rg is not None
        out[rg.u32()] = (rc.u32(), t.u32() if t is not None else None)
    return out


def failed_units(answer: Answered) -> list[tuple[int, tuple[int, ...]]]:
    """What Failed-AVP names: (unit AVP code, the codes inside it) each."""
    failed = answer.msg.get(A.FAILED_AVP)
    assert failed is not None, "5031 must name what could not be rated (RFC 4006 §9.1)"
    return [(a.code, tuple(u.code for u in a.group())) for a in failed.group()]


async def nothing_left(r: Running, sid: str) -> None:
    """No session, no CC state, no CDR: the refused request left nothing behind."""
    assert await r.sessions.store.find(sid) is None
    assert not await r.redis.exists(cc_key(sid))
    assert not [c for c in await read_cdrs(r.redis) if c.call_id == sid]


@pytest.mark.parametrize("kind", sorted(UNITS))
async def test_ccr_i_asking_only_unrated_units_is_refused_5031(
    running: Running, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Top-level Requested-Service-Unit of octets (service-specific units, money) and
    no CC-Time: 5031 for the command, no Granted-Service-Unit, the RSU in Failed-AVP;
    nothing authorized, nothing held, no session (a CCR-T after it is 5002)."""
    caplog.set_level(logging.WARNING, logger="chargingd.diameter.cc")
    client = await open_client(running.port)
    c = top_call(f"octets-{kind}")
    asked = rsu(*UNITS[kind])
    first = await client.ccr(c, 1, 0, extra=asked)
    assert first.result == RATING_FAILED and not first.msg.is_error
    assert first.msg.get(A.GRANTED_SERVICE_UNIT) is None and first.granted is None
    assert failed_units(first) == [(A.REQUESTED_SERVICE_UNIT, UNITS[kind])]
    assert await money(running) == (BALANCE, 0, 0)
    await nothing_left(running, c.session_id)
    end = await client.ccr(c, 3, 1, extra=usu(*UNITS[kind]))
    assert end.result == Result.UNKNOWN_SESSION_ID
    assert await money(running) == (BALANCE, 0, 0)
    await nothing_left(running, c.session_id)
    assert running.frontend.counters()["cc_unrated"] == 1
    [line] = [r.getMessage() for r in caplog.records if "does not rate" in r.getMessage()]
    assert c.session_id in line and "refused 5031" in line
    await client.close()


async def test_mscc_octets_refused_beside_a_time_mscc_that_is_served(running: Running) -> None:
    """One CCR-I, two MSCCs: RG 20 asks octets only, RG 10 asks CC-Time. RG 20 gets
    5031 and no Granted-Service-Unit; RG 10 is granted time and held for; the command
    is 2001. The call is charged for RG 10's time only, once, no hold left."""
    client = await open_client(running.port)
    c = top_call("mixed")
    ask = mscc(10, rsu(time_s=60)) + mscc(20, rsu(A.CC_TOTAL_OCTETS))
    first = await client.ccr(c, 1, 0, extra=ask)
    assert first.result == 2001
    results = msccs(first)
    assert results[20] == (RATING_FAILED, None)
    assert results[10][0] == 2001 and results[10][1]
    assert failed_units(first) == [(A.REQUESTED_SERVICE_UNIT, (A.CC_TOTAL_OCTETS,))]
    granted_s = results[10][1]
    balance, held, debits = await money(running)
    assert (balance, debits) == (BALANCE, 0) and held == granted_s * PER_S
    # RG 20 asks again with its octets report: refused again, RG 10 goes on.
    again = mscc(10, usu(time_s=30), rsu(time_s=60)) + mscc(
        20, usu(A.CC_TOTAL_OCTETS), rsu(A.CC_TOTAL_OCTETS)
    )
    update = await client.ccr(c, 2, 1, extra=again)
    assert update.result == 2001
    assert msccs(update)[20] == (RATING_FAILED, None) and msccs(update)[10][0] == 2001
    assert (await client.ccr(c, 3, 2, extra=mscc(10, usu(time_s=10)))).result == 2001
    [cdr] = [x for x in await read_cdrs(running.redis) if x.call_id == c.session_id]
    assert (cdr.duration_s, cdr.charged_micros) == (40, 40 * PER_S)
    assert await money(running) == (BALANCE - 40 * PER_S, 0, 40 * PER_S)
    assert running.frontend.counters()["cc_unrated"] == 2
    await client.close()


async def test_ccr_event_of_unrated_units_is_refused_5031(running: Running) -> None:
    """Direct debiting (RFC 4006 §6.3) of octets: 5031, nothing debited, nothing left;
    one of two MSCCs asking octets refuses the whole debit (it is all or nothing).
    Direct debiting of CC-Time still debits."""
    client = await open_client(running.port)
    octets = top_call("event-octets")
    answer = await client.ccr(octets, 4, 0, extra=rsu(A.CC_TOTAL_OCTETS))
    assert answer.result == RATING_FAILED and answer.granted is None
    assert failed_units(answer) == [(A.REQUESTED_SERVICE_UNIT, (A.CC_TOTAL_OCTETS,))]
    mixed = top_call("event-mixed")
    both = mscc(10, rsu(time_s=30)) + mscc(20, rsu(A.CC_SERVICE_SPECIFIC_UNITS))
    answer = await client.ccr(mixed, 4, 0, extra=both)
    assert answer.result == RATING_FAILED
    assert msccs(answer) == {10: (RATING_FAILED, None), 20: (RATING_FAILED, None)}
    assert await money(running) == (BALANCE, 0, 0)
    for sid in ("event-octets", "event-mixed"):
        await nothing_left(running, sid)
    timed = top_call("event-time")
    answer = await client.ccr(timed, 4, 0, extra=rsu(time_s=30))
    assert (answer.result, answer.granted) == (2001, 30)
    [cdr] = await read_cdrs(running.redis)
    assert (cdr.call_id, cdr.duration_s, cdr.charged_micros) == ("event-time", 30, 30 * PER_S)
    assert await money(running) == (BALANCE - 30 * PER_S, 0, 30 * PER_S)
    await client.close()


@pytest.mark.parametrize(
    ("form", "reported_s", "end_after_s", "charged_s"),
    [
        ("mscc", None, 50, 50),  # only octets reported: the session's time
        ("top", None, 50, 50),  # the same without MSCC
        ("mscc", 30, 50, 50),  # 30 s reported, then octets only: 50 s, not 30 nor 80
        ("mscc", 40, 20, 40),  # the clocks say less than was reported: never lowered
    ],
)
async def test_usage_reported_in_octets_only_is_charged_for_the_session_time(
    running: Running, form: str, reported_s: int | None, end_after_s: int, charged_s: int
) -> None:
    """A session granted time (an empty RSU, the VoIP case) whose Used-Service-Unit
    says octets and no CC-Time: the CCR-U is refused 5031 without a new grant (no more
    quota for usage that cannot be charged), and the CCR-T is charged for the session's
    time, from its Event-Timestamps (CCR-I to CCR-T), never less than the CC-Time
    reported before. Before, both were accepted and the call cost nothing."""
    client = await open_client(running.port)
    sid = f"usu-octets-{form}-{reported_s}-{end_after_s}"
    c = top_call(sid)

    def units_of(*parts: bytes) -> bytes:
        return mscc(100, *parts) if form == "mscc" else b"".join(parts)

    start = int(time.time()) - 60
    first = await client.ccr(c, 1, 0, extra=units_of(rsu()) + at(start))
    granted = msccs(first)[100][1] if form == "mscc" else first.granted
    assert first.result == 2001 and granted
    number = 1
    if reported_s is not None:
        update = await client.ccr(c, 2, number, extra=units_of(usu(time_s=reported_s), rsu()))
        assert update.result == 2001
        number += 1
    octets_only = units_of(usu(A.CC_INPUT_OCTETS, A.CC_OUTPUT_OCTETS), rsu())
    refused = await client.ccr(c, 2, number, extra=octets_only + at(start + end_after_s - 5))
    assert refused.result == RATING_FAILED
    assert refused.msg.get(A.GRANTED_SERVICE_UNIT) is None
    if form == "mscc":
        assert msccs(refused) == {100: (RATING_FAILED, None)}
    assert failed_units(refused) == [(A.USED_SERVICE_UNIT, (A.CC_INPUT_OCTETS, A.CC_OUTPUT_OCTETS))]
    # The same CCR again (a retransmission): the same answer, nothing moves.
    held = await money(running)
    again = await client.ccr(c, 2, number, extra=octets_only + at(start + end_after_s - 5))
    assert [a.raw() for a in again.msg.avps] == [a.raw() for a in refused.msg.avps]
    assert await money(running) == held
    end = await client.ccr(
        c, 3, number + 1, extra=units_of(usu(A.CC_TOTAL_OCTETS)) + at(start + end_after_s)
    )
    assert end.result == 2001
    [cdr] = [x for x in await read_cdrs(running.redis) if x.call_id == sid]
    assert (cdr.duration_s, cdr.charged_micros) == (charged_s, charged_s * PER_S)
    assert cdr.status == "normal"
    derived = charged_s > (reported_s or 0)
    assert (cdr.extra.get("usage_from") == "event_timestamps") == derived
    assert await money(running) == (BALANCE - charged_s * PER_S, 0, charged_s * PER_S)
    assert running.frontend.counters()["cc_unrated"] == 2
    await client.close()


@pytest.mark.parametrize("form", ["mscc", "top"])
async def test_empty_rsu_and_cc_time_work_as_before(running: Running, form: str) -> None:
    """The usual VoIP CCR-I (an empty RSU), an RSU with CC-Time, and one with CC-Time
    and octets (time is granted), reports of CC-Time with octets beside it or in a
    second Used-Service-Unit: granted and charged by time exactly as before (this test
    passes on the code before units were checked); nothing counted as unrated."""
    client = await open_client(running.port)

    def units_of(*parts: bytes) -> bytes:
        return mscc(100, *parts) if form == "mscc" else b"".join(parts)

    def granted_of(answer: Answered) -> int | None:
        assert answer.msg.get(A.FAILED_AVP) is None
        return msccs(answer)[100][1] if form == "mscc" else answer.granted

    total = 0
    for sid, asked, used_s in (
        ("empty", rsu(), 20),
        ("time", rsu(time_s=60), 30),
        ("time-and-octets", rsu(A.CC_TOTAL_OCTETS, time_s=60), 25),
    ):
        c = top_call(f"{sid}-{form}")
        first = await client.ccr(c, 1, 0, extra=units_of(asked))
        assert first.result == 2001 and granted_of(first) == 75
        report = usu(A.CC_TOTAL_OCTETS, time_s=used_s - 5)
        if sid == "time-and-octets":  # two reports (a tariff change), one of them timed
            report = usu(time_s=used_s - 5) + usu(A.CC_TOTAL_OCTETS)
        update = await client.ccr(c, 2, 1, extra=units_of(report, rsu()))
        assert update.result == 2001 and granted_of(update)
        end = await client.ccr(c, 3, 2, extra=units_of(usu(time_s=5)))
        assert end.result == 2001
        [cdr] = [x for x in await read_cdrs(running.redis) if x.call_id == c.session_id]
        assert (cdr.duration_s, cdr.charged_micros) == (used_s, used_s * PER_S)
        assert "usage_from" not in cdr.extra
        total += used_s
    assert await money(running) == (BALANCE - total * PER_S, 0, total * PER_S)
    assert running.frontend.counters().get("cc_unrated", 0) == 0  # (main has no counter)
    await client.close()
