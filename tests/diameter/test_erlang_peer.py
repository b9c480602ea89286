"""Interop with an independent Diameter stack: Erlang/OTP's diameter application.

The escript (tests/diameter/erlang/) does the CER, CCR-I/U/T and watchdog with OTP's
own code and dictionaries compiled by diameterc, and answers the server's ASR/RAR.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from diameter_harness import GW, Running, running_frontend
from diameter_peer import ErlangPeer, compile_dictionaries, erlang_missing
from sessions_harness import EUR, add_account, read_cdrs

pytestmark = pytest.mark.skipif(bool(erlang_missing()), reason=erlang_missing())

CALLER = "+4930555000"
BERLIN = "tel:+4930123456"  # 0.60 EUR/min, per second


@pytest.fixture(scope="module")
def dict_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return compile_dictionaries(tmp_path_factory.mktemp("otp-dicts"))


@pytest.fixture
async def peer(dict_dir: Path) -> AsyncIterator[ErlangPeer]:
    p = ErlangPeer(dict_dir)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()
        print("erlang peer events:", *p.events, sep="\n  ")
        print("erlang peer stderr:", p.stderr.decode(errors="replace"))


@pytest.fixture
async def running(redis: aioredis.Redis, tmp_path: Path) -> AsyncIterator[Running]:
    async with running_frontend(redis, tmp_path) as r:
        yield r


async def test_full_call_debits_the_rated_cost_and_writes_one_cdr(
    running: Running, peer: ErlangPeer
) -> None:
    await add_account(running.ledger, balance_micros=10 * EUR, identities=(f"ani:{CALLER}",))
    up = await peer.connect(running.port, origin_host=GW.origin_host, realm=GW.realm,
                            watchdog_ms=6000)  # fmt: skip
    assert up["event"] == "up"
    sid = "scscf.ims.test;1;otp-1"
    i = await peer.ccr("i", sid, 1, 0, calling=CALLER, called=BERLIN, requested=60,
                       rating_group=100)  # fmt: skip
    assert (i["result"], i["mscc_result"], i["rating_group"]) == (2001, 2001, 100)
    assert i["granted"] > 0 and i["validity"] == 60 and not i["fui"]
    u = await peer.ccr("u", sid, 2, 1, used=30, requested=60, rating_group=100)
    assert (u["result"], u["mscc_result"]) == (2001, 2001) and u["granted"] > 0
    t = await peer.ccr("t", sid, 3, 2, used=17, rating_group=100)
    assert t["result"] == 2001
    cdrs = await read_cdrs(running.redis)
    assert len(cdrs) == 1
    cdr = cdrs[0]
    price = running.sessions.pricer.price
    cost = price("retail", subject="acc1", number="+4930123456", start_ms=cdr.answer_ms,
                 usage_s=47).cost_micros  # fmt: skip
    assert cost == 470_000  # 47 s at 0.60 EUR/min, per second
    account = await running.ledger.get_account("acc1")
    assert account.balance_micros == 10 * EUR - cost
    assert account.reserved_micros == 0
    assert (cdr.source, cdr.call_id, cdr.duration_s, cdr.cost_micros, cdr.status) == (
        "diameter",
        sid,
        47,
        cost,
        "normal",
    )
    assert cdr.callee == "+4930123456" and cdr.extra["client"] == "ims1"
