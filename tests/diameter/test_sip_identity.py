"""A Subscription-Id END_USER_SIP_URI finds its account whatever the case of the URI's
scheme and host (RFC 3261 §19.1.4), over real TCP to the Diameter frontend on a real
Redis; the user part stays case-sensitive, E.164 subscribers are unchanged, and an
identity stored before identities were stored canonical is still found as sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from diameter_client import open_client
from diameter_harness import Running, running_frontend
from sessions_harness import EUR, add_account

from chargingd.diameter import client as cl
from chargingd.ledger import keys as K

BERLIN = "tel:+4930123456"


@pytest.fixture
async def running(redis: aioredis.Redis, tmp_path: Path) -> AsyncIterator[Running]:
    async with running_frontend(redis, tmp_path) as r:
        yield r


async def first_answer(r: Running, sid: str, *, sip_uri: str = "", calling: str = "") -> int:
    """The Result-Code of a CCR-I (the call closed again at once when it was authorized)."""
    client = await open_client(r.port)
    try:
        c = cl.Call(sid, sip_uri=sip_uri, calling=calling, called=BERLIN)
        answer = await client.ccr(c, 1, 0, requested_s=60)
        if answer.result == 2001:
            assert (await client.ccr(c, 3, 1, used_s=1)).result == 2001
        return answer.result
    finally:
        await client.close()


async def test_sip_uri_scheme_and_host_in_any_case_find_the_account(running: Running) -> None:
    await add_account(
        running.ledger,
        "alice",
        balance_micros=10 * EUR,
        identities=("user:sip:alice@example.com", "ani:+4930555001"),
    )
    account = await running.ledger.get_account("alice")
    # Stored as a gateway's SIP URI is looked up: the address of record, host folded.
    assert account.identities == ("user:alice@example.com", "ani:+4930555001")
    for n, uri in enumerate(
        (
            "sip:alice@example.com",
            "sip:alice@EXAMPLE.COM",
            "SIP:alice@Example.com;transport=udp",
            "<sips:alice@Example.Com>",
            "sip:%61lice@example.com",  # an escape of an unreserved character is the character
        )
    ):
        assert await first_answer(running, f"sip-ok-{n}", sip_uri=uri) == 2001, uri
    # RFC 3261 §19.1.4: the userinfo is compared with its case; another port is another URI.
    for n, uri in enumerate(("sip:Alice@example.com", "sip:alice@example.com:5060")):
        assert await first_answer(running, f"sip-other-{n}", sip_uri=uri) == 5030, uri
    # E.164 subscribers as before, also written as a tel: URI.
    assert await first_answer(running, "e164", calling="+4930555001") == 2001
    assert await first_answer(running, "tel", calling="tel:+4930555001") == 2001
    account = await running.ledger.get_account("alice")
    assert account.reserved_micros == 0 and account.debits_micros > 0


async def test_an_identity_stored_in_upper_case_before_is_found_as_sent(
    running: Running, redis: aioredis.Redis
) -> None:
    """Written by an older version (as typed: "user:bob@EXAMPLE.ORG"): the CCR that names
    it so still finds it (sessions tries the canonical form, then the name as sent);
    saving the identities again stores them canonical, and then every case finds it."""
    await add_account(running.ledger, "bob", identities=("user:bob@example.org",))
    await redis.hdel(K.IDENTITIES_KEY, "user:bob@example.org")
    await redis.hset(K.IDENTITIES_KEY, "user:bob@EXAMPLE.ORG", "bob")
    await redis.hset(K.acct_key("bob"), "identities", "user:bob@EXAMPLE.ORG")
    assert await first_answer(running, "old-1", sip_uri="sip:bob@EXAMPLE.ORG") == 2001
    assert await first_answer(running, "old-2", sip_uri="sip:bob@example.org") == 5030
    await running.ledger.update_account(
        "bob", identities=("user:bob@EXAMPLE.ORG",), who="test", why="canonical"
    )
    assert (await running.ledger.get_account("bob")).identities == ("user:bob@example.org",)
    assert await redis.hget(K.IDENTITIES_KEY, "user:bob@EXAMPLE.ORG") is None
    assert await first_answer(running, "old-3", sip_uri="sip:bob@example.org") == 2001
    assert await first_answer(running, "old-4", sip_uri="SIP:bob@Example.Org") == 2001
