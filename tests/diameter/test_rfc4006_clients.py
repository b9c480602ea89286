"""Client behaviours of RFC 4006 and 3GPP TS 32.299 over real TCP on a real Redis; each
scenario ends with the ledger's movements equal to the CDRs' charged_micros (DESIGN
invariant 7)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from diameter_client import open_client
from diameter_harness import Running, running_frontend
from sessions_harness import EUR, add_account, read_cdrs

from chargingd.billing.cdr import CDR
from chargingd.diameter import client as cl
from chargingd.diameter import codec as dc
from chargingd.diameter.dictionary import VENDOR_3GPP, A, G

CALLER = "+4930555000"
BERLIN = "tel:+4930123456"  # 10_000 micros a second
PER_S = 10_000
# Reporting-Reason (TS 32.299 §7.2.175)
FINAL, QUOTA_EXHAUSTED, VALIDITY_TIME = 2, 3, 4


@pytest.fixture
async def running(redis: aioredis.Redis, tmp_path: Path) -> AsyncIterator[Running]:
    async with running_frontend(redis, tmp_path) as r:
        await add_account(r.ledger, balance_micros=10 * EUR, identities=(f"ani:{CALLER}",))
        yield r


async def one_story(r: Running, account_id: str = "acc1") -> CDR:
    """The account's only CDR; its ledger moved exactly what that CDR says, no hold left."""
    account = await r.ledger.get_account(account_id)
    [cdr] = [c for c in await read_cdrs(r.redis) if c.account_id == account_id]
    assert account.debits_micros == cdr.charged_micros
    assert account.reserved_micros == 0
    return cdr


def mscc(rg: int, *, used_s: int | None = None, requested_s: int | None = None,
         reason: int | None = None, usu_reason: int | None = None) -> bytes:  # fmt: skip
    """One Multiple-Services-Credit-Control as a TS 32.299 client sends it (its
    Reporting-Reason in the MSCC, or ``usu_reason`` inside the Used-Service-Unit)."""
    parts = []
    if requested_s is not None:
        parts.append(dc.grouped(A.REQUESTED_SERVICE_UNIT, dc.u32(A.CC_TIME, requested_s)))
    if used_s is not None:
        usu = [dc.u32(A.CC_TIME, used_s)]
        if usu_reason is not None:
            usu.append(dc.u32(G.REPORTING_REASON, usu_reason, vendor=VENDOR_3GPP))
        parts.append(dc.grouped(A.USED_SERVICE_UNIT, *usu))
    parts.append(dc.u32(A.RATING_GROUP, rg))
    if reason is not None:
        parts.append(dc.u32(G.REPORTING_REASON, reason, vendor=VENDOR_3GPP))
    return dc.grouped(A.MULTIPLE_SERVICES_CREDIT_CONTROL, *parts)


async def test_rating_groups_reporting_in_different_ccrs_are_charged_once(
    running: Running,
) -> None:
    """Two rating groups of one call (voice and video of one IMS session) each report
    when their own quota runs out (TS 32.299 §5.2.2, Reporting-Reason per MSCC): RG 10
    alone in #1 (QUOTA_EXHAUSTED at 30 s), both in #2 (VALIDITY_TIME at 40 s), both
    FINAL in the CCR-T at 45 s. The call lasted 45 s; summing each CCR's longest report
    charged 30 + 40 + 5 = 75 s."""
    client = await open_client(running.port)
    c = cl.Call("rg-apart", calling=CALLER, called=BERLIN, rating_group=None)
    both = mscc(10, requested_s=60) + mscc(20, requested_s=60)
    assert (await client.ccr(c, 1, 0, extra=both)).result == 2001
    first = mscc(10, used_s=30, requested_s=60, reason=QUOTA_EXHAUSTED)
    assert (await client.ccr(c, 2, 1, extra=first)).result == 2001
    second = mscc(10, used_s=10, requested_s=60, reason=VALIDITY_TIME) + mscc(
        20, used_s=40, requested_s=60, reason=VALIDITY_TIME
    )
    assert (await client.ccr(c, 2, 2, extra=second)).result == 2001
    last = mscc(10, used_s=5, reason=FINAL) + mscc(20, used_s=5, reason=FINAL)
    assert (await client.ccr(c, 3, 3, extra=last)).result == 2001
    cdr = await one_story(running)
    assert (cdr.duration_s, cdr.charged_micros) == (45, 45 * PER_S)
    await client.close()


async def test_rating_groups_used_one_after_another_are_each_charged(running: Running) -> None:
    """A service change mid-call (TS 32.299 §5.2.2): RG 100 reports 30 s, then its last
    20 s (FINAL) in the CCR that asks quota for RG 200, which reports 30 s and 10 s after
    it. RFC 4006 §8.19: a report covers the time since that group's previous one, so the
    two groups' windows do not overlap: 90 s. The longest group's sum charged 50. A
    retransmitted CCR changes nothing; the state is read back from Redis (dia:cc) by a
    process that lost its memory of the session."""
    client = await open_client(running.port)
    c = cl.Call("rg-sequential", calling=CALLER, called=BERLIN, rating_group=None)
    assert (await client.ccr(c, 1, 0, extra=mscc(100, requested_s=60))).result == 2001
    assert (await client.ccr(c, 2, 1, extra=mscc(100, used_s=30, requested_s=60))).result == 2001
    change = mscc(100, used_s=20, reason=FINAL) + mscc(200, requested_s=60)
    assert (await client.ccr(c, 2, 2, extra=change)).result == 2001
    running.frontend.app.store.forget("rg-sequential")  # another process: Redis's state
    third = mscc(200, used_s=30, requested_s=60, reason=VALIDITY_TIME)
    first_answer = await client.ccr(c, 2, 3, extra=third)
    again = await client.ccr(c, 2, 3, extra=third)  # retransmitted: the same answer
    assert (first_answer.result, again.result) == (2001, 2001)
    assert [a.raw() for a in again.msg.avps] == [a.raw() for a in first_answer.msg.avps]
    account = await running.ledger.get_account("acc1")
    assert account.debits_micros == 80 * PER_S  # 30 + 20 + 30 committed at the interim
    assert (await client.ccr(c, 3, 4, extra=mscc(200, used_s=10, reason=FINAL))).result == 2001
    cdr = await one_story(running)
    assert (cdr.duration_s, cdr.charged_micros) == (90, 90 * PER_S)
    await client.close()


async def test_reports_in_windows_that_do_not_overlap_are_not_the_same_seconds(
    running: Running,
) -> None:
    """Both groups report in every CCR; the longer one changes: 30 s of RG 10 (RG 20:
    10 s) up to #1, then 30 s of RG 20 (RG 10: 5 s) between #1 and #2. Those two 30 s
    lie in windows that do not overlap: at least 60 s, where the longest sum said 40.
    Groups that report the same seconds (the test above) stay charged once."""
    client = await open_client(running.port)
    c = cl.Call("rg-windows", calling=CALLER, called=BERLIN, rating_group=None)
    both = mscc(10, requested_s=60) + mscc(20, requested_s=60)
    assert (await client.ccr(c, 1, 0, extra=both)).result == 2001
    one = mscc(10, used_s=30, requested_s=60) + mscc(20, used_s=10, requested_s=60)
    assert (await client.ccr(c, 2, 1, extra=one)).result == 2001
    two = mscc(10, used_s=5, reason=FINAL) + mscc(20, used_s=30, reason=FINAL)
    assert (await client.ccr(c, 3, 2, extra=two)).result == 2001
    cdr = await one_story(running)
    assert (cdr.duration_s, cdr.charged_micros) == (60, 60 * PER_S)
    await client.close()


def test_spans_of_a_state_written_before_them_and_their_bound() -> None:
    """A state written without Spans (by the version before): its usage so far is a
    final cut, and a group's next report, whose window is not known, counts in the
    per-group sums only (never more than before). A group that stopped reporting keeps
    the open starts from being made final: they stay bounded."""
    from chargingd.diameter.ccstate import SPANS_OPEN_MAX, CcSession, Spans

    old = CcSession("s", 3, 40, "d", b"", groups=(("10", 40), ("20", 15)))
    used_s, groups, spans = old.reported(4, {"20": 30}, ())
    assert (used_s, groups) == (45, (("10", 40), ("20", 45)))  # the longest sum, as before
    state = CcSession("s", 4, used_s, "d", b"", groups=groups, spans=spans)
    used_s, groups, spans = state.reported(5, {"20": 10}, ())  # its window is known now
    assert used_s == 55 and spans.least == 55
    state = CcSession("s", 0, 0, "d", b"", spans=Spans.initial(0, ("1",)))
    used_s, groups, spans = state.reported(1, {"1": 30}, ("2",))  # group 2 asked here
    state = CcSession("s", 1, used_s, "d", b"", groups=groups, spans=spans)
    for n in range(2, 60):  # group 1 is never heard of again; group 2 reports 10 s each
        used_s, groups, spans = state.reported(n, {"2": 10}, ())
        assert len(spans.open) <= SPANS_OPEN_MAX
        state = CcSession("s", n, used_s, "d", b"", groups=groups, spans=spans)
    assert state.used_s == 30 + 58 * 10  # one after the other
    assert Spans.decode(spans.encode().encode()) == spans


def test_per_group_usage_survives_redis_and_an_older_writers_state() -> None:
    """The per-group sums round-trip through dia:cc; a state an older version wrote (no
    per-group field) counts its cumulative usage as each group's, never less."""
    from chargingd.diameter.ccstate import CcSession

    state = CcSession("s", 2, 40, "d", b"", groups=(("10", 40), ("20", 35)))
    raw = {k.encode(): str(v).encode() if not isinstance(v, bytes) else v
           for k, v in state.to_mapping().items()}  # fmt: skip
    again = CcSession.from_raw("s", raw)
    assert again == state
    assert again.after({"20": 10}) == (45, (("10", 40), ("20", 45)))
    del raw[b"g"]
    older = CcSession.from_raw("s", raw)
    assert older is not None and older.legacy
    assert older.after({"20": 10}) == (50, (("20", 50),))


async def test_ccr_t_without_usu_and_its_termination_cause_in_the_cdr(running: Running) -> None:
    """A CCR-T without Used-Service-Unit (nothing used since the last report, RFC 4006
    §5.1.2) charges the usage reported so far; its Termination-Cause (RFC 6733 §8.15)
    is the CDR's terminate_cause, by name, or by number when no RFC names it (it was
    dropped). RFC 7155's values (RADIUS Acct-Terminate-Cause + 10, from NASREQ-derived
    clients) are named as a RADIUS gateway's CDR names them (before: "11", "16")."""
    client = await open_client(running.port)
    causes = (
        ("tc-known", 8, "Session-Timeout"),
        ("tc-odd", 99, "99"),
        ("tc-nas-user", 11, "User-Request"),
        ("tc-nas-admin", 16, "Admin-Reset"),
        ("tc-nas-host", 28, "Host-Request"),
    )
    for sid, cause, named in causes:
        c = cl.Call(sid, calling=CALLER, called=BERLIN)
        assert (await client.ccr(c, 1, 0, requested_s=60)).result == 2001
        assert (await client.ccr(c, 2, 1, used_s=20, requested_s=60)).result == 2001
        end = await client.ccr(c, 3, 2, extra=dc.u32(A.TERMINATION_CAUSE, cause))
        assert end.result == 2001
        [cdr] = [x for x in await read_cdrs(running.redis) if x.call_id == sid]
        assert (cdr.duration_s, cdr.charged_micros) == (20, 20 * PER_S)
        assert cdr.extra["terminate_cause"] == named
    account = await running.ledger.get_account("acc1")
    cdrs = await read_cdrs(running.redis)
    assert account.debits_micros == sum(x.charged_micros for x in cdrs) == 20 * PER_S * len(causes)
    assert account.reserved_micros == 0
    await client.close()


def _mscc_results(msg: dc.Message) -> dict[int, tuple[int, int | None, bool]]:
    """Rating-Group -> (Result-Code, GSU CC-Time or None, FUI there) of each MSCC."""
    out = {}
    for m in msg.all(A.MULTIPLE_SERVICES_CREDIT_CONTROL):
        inner = m.group()
        gsu = dc.find(inner, A.GRANTED_SERVICE_UNIT)
        t = dc.find(gsu.group(), A.CC_TIME) if gsu is not None else None
        out[dc.find(inner, A.RATING_GROUP).u32()] = (  # type: ignore[union-attr]
            dc.find(inner, A.RESULT_CODE).u32(),  # type: ignore[union-attr]
            t.u32() if t is not None else None,
            dc.find(inner, A.FINAL_UNIT_INDICATION) is not None,
        )
    return out


async def test_two_msccs_in_one_ccr_one_used_up(running: Running) -> None:
    """A CCR-U with two MSCCs: RG 10 used its final units (QUOTA_EXHAUSTED, asks for
    more), RG 20 ends (FINAL, asks nothing). Each is answered in its own MSCC: RG 10
    4012 with GSU 0 and the FUI, RG 20 2001 without GSU (its report is in: the 4012
    is for the group that asks; before, it got 4012 too), the command 2001 (RFC 4006
    §8.16); the CCR-T's 0 s
    adds nothing. 20 s charged, the balance exactly used."""
    await add_account(running.ledger, "poor", balance_micros=200_000,
                      identities=("ani:+4930777000",))  # fmt: skip
    client = await open_client(running.port)
    c = cl.Call("one-used-up", calling="+4930777000", called=BERLIN, rating_group=None)
    first = await client.ccr(c, 1, 0, extra=mscc(10, requested_s=60) + mscc(20, requested_s=60))
    assert _mscc_results(first.msg) == {10: (2001, 20, True), 20: (2001, 20, True)}
    both = mscc(10, used_s=20, requested_s=60, reason=QUOTA_EXHAUSTED) + mscc(
        20, used_s=5, reason=FINAL
    )
    update = await client.ccr(c, 2, 1, extra=both)
    assert update.result == 2001
    results = _mscc_results(update.msg)
    assert results[10] == (4012, 0, True)
    assert results[20] == (2001, None, False)  # its last report taken, nothing granted
    assert (await client.ccr(c, 3, 2, extra=mscc(10, used_s=0, reason=FINAL))).result == 2001
    cdr = await one_story(running, "poor")
    assert (cdr.duration_s, cdr.charged_micros) == (20, 200_000)
    assert (await running.ledger.get_account("poor")).balance_micros == 0
    await client.close()


# -- Reporting-Reason FINAL: a rating group's service ended ----------------------------
QHT = 1


async def test_a_final_group_gets_no_quota_and_the_other_goes_on(running: Running) -> None:
    """Voice (RG 10) and video (RG 20) from the CCR-I. At #1 the video ends: its MSCC
    says FINAL with its last 30 s, and (as some clients send one in every MSCC) an RSU.
    FINAL is the group's last report (TS 32.299 §7.2.175): its MSCC is answered 2001
    without Granted-Service-Unit; voice is granted as before and goes on: 40 s, then
    10 s in the CCR-T. Video ran beside voice: 30 + 40 + 10 = 80 s. (Before, the
    finished video was granted 75 s more.)"""
    client = await open_client(running.port)
    c = cl.Call("rg-final", calling=CALLER, called=BERLIN, rating_group=None)
    first = await client.ccr(c, 1, 0, extra=mscc(10, requested_s=60) + mscc(20, requested_s=60))
    assert _mscc_results(first.msg) == {10: (2001, 75, False), 20: (2001, 75, False)}
    ends = mscc(10, used_s=30, requested_s=60, reason=VALIDITY_TIME) + mscc(
        20, used_s=30, requested_s=60, reason=FINAL
    )
    update = await client.ccr(c, 2, 1, extra=ends)
    assert update.result == 2001
    assert _mscc_results(update.msg) == {10: (2001, 75, False), 20: (2001, None, False)}
    voice = await client.ccr(c, 2, 2, extra=mscc(10, used_s=40, requested_s=60))
    assert _mscc_results(voice.msg) == {10: (2001, 75, False)}
    assert (await running.ledger.get_account("acc1")).debits_micros == 70 * PER_S
    assert (await client.ccr(c, 3, 3, extra=mscc(10, used_s=10, reason=FINAL))).result == 2001
    cdr = await one_story(running)
    assert (cdr.duration_s, cdr.charged_micros) == (80, 80 * PER_S)
    await client.close()


async def test_a_retransmitted_final_charges_once(running: Running) -> None:
    """A service change: voice and video from the CCR-I; video ends at #1 (FINAL, 30 s,
    voice 30 s beside it), voice ends at #2 (FINAL, 20 s) in the CCR that asks video
    again, which then reports 40 s in the CCR-T. Video's new use lies after #2, not
    beside voice: 30 + 20 + 40 = 90 s (before, video's window still began at its last
    report and its 40 s were taken as beside voice's 20 s: 70 s). Each FINAL CCR-U is
    sent three times: as sent, again with the same Hop-by-Hop and End-to-End ids and
    the T flag (RFC 6733 duplicate), and again under new ids (the same
    CC-Request-Number): the same answer, charged once; #2 is worked by a process that
    reads the state back from Redis."""
    client = await open_client(running.port)
    c = cl.Call("rg-final-again", calling=CALLER, called=BERLIN, rating_group=None)
    both = mscc(10, requested_s=60) + mscc(20, requested_s=60)
    assert (await client.ccr(c, 1, 0, extra=both)).result == 2001

    async def thrice(number: int, extra: bytes) -> dict[int, tuple[int, int | None, bool]]:
        hbh, e2e = client.next_ids()
        data = cl.ccr(client.me, c, 2, number, hbh, e2e, extra=extra)
        answers = [await client.ask(data)]
        again = bytearray(data)
        again[4] |= dc.FLAG_T  # the command flags: a retransmission
        answers.append(await client.ask(bytes(again)))
        answers.append((await client.ccr(c, 2, number, extra=extra)).msg)
        bodies = {tuple(a.raw() for a in m.avps) for m in answers}
        assert len(bodies) == 1, "one answer, sent again"
        return _mscc_results(answers[0])

    video_ends = mscc(10, used_s=30, requested_s=60) + mscc(20, used_s=30, reason=FINAL)
    assert await thrice(1, video_ends) == {10: (2001, 75, False), 20: (2001, None, False)}
    assert (await running.ledger.get_account("acc1")).debits_micros == 30 * PER_S
    running.frontend.app.store.forget("rg-final-again")  # another process: Redis's state
    voice_ends = mscc(10, used_s=20, reason=FINAL) + mscc(20, requested_s=60)
    assert await thrice(2, voice_ends) == {10: (2001, None, False), 20: (2001, 75, False)}
    assert (await running.ledger.get_account("acc1")).debits_micros == 50 * PER_S
    assert (await client.ccr(c, 3, 3, extra=mscc(20, used_s=40, reason=FINAL))).result == 2001
    cdr = await one_story(running)
    assert (cdr.duration_s, cdr.charged_micros) == (90, 90 * PER_S)
    await client.close()


async def test_final_on_the_only_group_keeps_the_session_without_quota(
    running: Running,
) -> None:
    """The only group ends in a CCR-U (FINAL, here inside its Used-Service-Unit as some
    clients put it; 30 s, no RSU anywhere): its report is
    charged, the CCA is 2001 with the MSCC's 2001 and no GSU (nothing to report
    before it asks again), and the session stays open for the CCR-T. Later the client
    asks quota again, for video (RG 20), which ends after 40 s in the CCR that asks
    voice (RG 10) again; voice's last 25 s come in the CCR-T. Each use lies after the
    previous one's end: 30 + 40 + 25 = 95 s (before, voice's second use was taken as
    beside video, from voice's last report on: 70 s)."""
    client = await open_client(running.port)
    c = cl.Call("rg-final-only", calling=CALLER, called=BERLIN, rating_group=None)
    assert (await client.ccr(c, 1, 0, extra=mscc(10, requested_s=60))).result == 2001
    ends = await client.ccr(c, 2, 1, extra=mscc(10, used_s=30, usu_reason=FINAL))
    assert ends.result == 2001
    assert _mscc_results(ends.msg) == {10: (2001, None, False)}
    assert ends.msg.get(A.VALIDITY_TIME) is None
    assert (await running.ledger.get_account("acc1")).debits_micros == 30 * PER_S
    assert (await running.sessions.grant_state("rg-final-only")) is not None  # still open
    video = await client.ccr(c, 2, 2, extra=mscc(20, requested_s=60))
    assert _mscc_results(video.msg) == {20: (2001, 75, False)}
    back = mscc(20, used_s=40, reason=FINAL) + mscc(10, requested_s=60)
    assert _mscc_results((await client.ccr(c, 2, 3, extra=back)).msg) == {
        20: (2001, None, False),
        10: (2001, 75, False),
    }
    assert (await client.ccr(c, 3, 4, extra=mscc(10, used_s=25, reason=FINAL))).result == 2001
    cdr = await one_story(running)
    assert (cdr.duration_s, cdr.charged_micros) == (95, 95 * PER_S)
    await client.close()


async def test_final_without_mscc(running: Running) -> None:
    """RFC 4006 single service (no MSCC): a FINAL inside the top-level Used-Service-Unit
    ends the service: 2001 without Granted-Service-Unit (before: 75 s more granted); the
    CCR-T without USU charges the 30 s reported."""
    client = await open_client(running.port)
    c = cl.Call("single-final", calling=CALLER, called=BERLIN, rating_group=None)
    assert (await client.ccr(c, 1, 0, requested_s=60)).granted == 75
    usu = dc.grouped(
        A.USED_SERVICE_UNIT,
        dc.u32(A.CC_TIME, 30),
        dc.u32(G.REPORTING_REASON, FINAL, vendor=VENDOR_3GPP),
    )
    ends = await client.ccr(c, 2, 1, extra=usu)
    assert (ends.result, ends.granted, ends.msg.get(A.GRANTED_SERVICE_UNIT)) == (2001, None, None)
    assert (await client.ccr(c, 3, 2)).result == 2001
    cdr = await one_story(running)
    assert (cdr.duration_s, cdr.charged_micros) == (30, 30 * PER_S)
    await client.close()


def test_what_ends_a_groups_window() -> None:
    """FINAL ends a group's use, also with an RSU beside it (then nothing is asked);
    QHT (quota given back after its holding time) ends it unless the MSCC asks again;
    the other reasons only say why the report came. An ended group's window no longer
    holds the final cuts back (the state stays one cut), and quota asked for it later
    opens a new window there."""
    from chargingd.diameter.ccstate import Spans
    from chargingd.diameter.translate import Service

    def service(*reasons: int, requested: bool = False) -> Service:
        return Service(mscc=True, rating_group=10, used_s=5, timed=True,
                       requested=requested, reasons=reasons)  # fmt: skip

    assert service(FINAL).ended and service(FINAL, requested=True).final
    assert service(QHT).ended and not service(QHT, requested=True).ended
    others = (0, QUOTA_EXHAUSTED, VALIDITY_TIME, 5, 6, 7, 8, 9)
    assert not any(service(r).ended or service(r).final for r in others)
    spans = Spans.initial(0, ("10", "20"))
    spans = spans.step(1, {"10": 30, "20": 30}, ("10",), ended=("20",))
    assert (spans.least, spans.cut, spans.marks) == (30, 1, (("10", 1),))
    spans = spans.step(2, {"10": 20}, ("20",), ended=("10",))
    assert (spans.least, spans.cut, spans.marks, spans.open) == (50, 2, (("20", 2),), ())
    spans = spans.step(3, {"20": 40}, (), ended=("20",))
    assert (spans.least, spans.marks) == (90, ())
    assert Spans.decode(spans.encode().encode()) == spans
