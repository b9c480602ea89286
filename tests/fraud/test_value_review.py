"""The account's one fraud value ({a:ID}:fr:v) against review3's findings: a call is
told from a retransmission by its whole session id, the value stays bounded, windows
of another width, refusals remembered by time, the cluster path's refusals."""

from __future__ import annotations

import hashlib
import zlib

import redis.asyncio as aioredis
from fakes import Clock
from fraud_harness import call, make_fraud

from chargingd.fraud import Decision


def _crc32_twins(prefix: str) -> tuple[str, str]:
    """Two printable session ids with the same CRC-32 (a birthday search: ~0.3 s)."""
    seen: dict[int, str] = {}
    for i in range(2_000_000):
        sid = prefix + hashlib.md5(str(i).encode()).hexdigest()[:16]
        crc = zlib.crc32(sid.encode())
        if crc in seen:
            return seen[crc], sid
        seen[crc] = sid
    raise AssertionError("no twins")


async def test_a_second_call_is_never_taken_for_a_retransmission_of_the_first(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """A retransmission is the SAME session id. A caller chooses its Acct-Session-Id
    where the gateway uses the SIP Call-ID: a call whose id shares a live call's CRC-32
    is a new call, counted by every rule (2 live, limit 1; 2 calls in 60 s, limit 1)."""
    concurrent = {"name": "concurrent", "kind": "concurrent", "max_calls": 1, "action": "refuse"}
    velocity = {"name": "velocity-account", "kind": "velocity", "scope": "account",
                "max_calls": 1, "window_s": 60, "action": "refuse"}  # fmt: skip
    first, second = _crc32_twins("hijack-")
    assert first != second
    fraud = await make_fraud(redis, clock, [concurrent, velocity])
    assert (await fraud.check(call(sid=first))).allowed
    clock.advance(1)
    verdict = await fraud.check(call(sid=second))
    assert verdict.decision is Decision.REFUSE, (first, second, verdict.again)
    assert not verdict.again
    # the first one's retransmission is still known (not counted, not refused)
    again = await fraud.check(call(sid=first))
    assert again.allowed


async def test_a_twin_on_the_step_path_is_counted_too(redis: aioredis.Redis, clock: Clock) -> None:
    """The step-by-step path (Redis Cluster) remembers the ids it counted last ('q'):
    a twin of one of them is a new call as well."""
    velocity = {"name": "velocity-account", "kind": "velocity", "scope": "account",
                "max_calls": 1, "window_s": 60, "action": "refuse"}  # fmt: skip
    first, second = _crc32_twins("step-")
    fraud = await make_fraud(redis, clock, [velocity], single_redis=False)
    assert (await fraud.check(call(sid=first))).allowed
    verdict = await fraud.check(call(sid=second))
    assert verdict.decision is Decision.REFUSE and not verdict.again


SAME_RANGE = {
    "name": "same-range",
    "kind": "same_destination",
    "range_digits": 3,
    "max_calls": 20,
    "window_s": 600,
}


async def test_value_grows_with_every_range_called_and_is_rewritten_whole(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """The default same-range rule keeps a counter per range called in the window, in
    the account's one value, which every authorize reads and writes whole. A trunk
    calling 2000 ranges in 10 min (3.3 calls/s) keeps at most G_MAX of them: the value,
    and the Redis CPU of every authorize, do not grow with its traffic."""
    fraud = await make_fraud(redis, clock, [SAME_RANGE])
    usec = []
    for i in range(2000):
        if i in (0, 1900):
            await redis.config_resetstat()
        if i in (100, 1999):
            usec.append((await redis.info("commandstats"))["cmdstat_evalsha"]["usec_per_call"])
        await fraud.check(call(f"+1{2125550000 + i * 1000}"))  # a new range each call
        clock.advance(0.3)
    size = await redis.strlen("{a:acc1}:fr:v")
    assert size < 4096, (
        f"{{a:acc1}}:fr:v is {size} bytes, read+written whole per call;"
        f" Redis usec per check: first 100 calls {usec[0]}, last 100 calls {usec[1]}"
    )


async def test_a_hammered_range_is_counted_exactly_among_many_other_ranges(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """A range called again soon keeps its counter however many other ranges are
    called (a hundred new ones between each of its calls): its 20th call in the window
    is just under the limit, its 21st fires."""
    fraud = await make_fraud(redis, clock, [{**SAME_RANGE, "action": "refuse"}])
    target = "+12125550"
    other = iter(range(10_000))
    verdicts = []
    for n in range(21):
        verdicts.append(await fraud.check(call(f"{target}{n:03d}")))
        clock.advance(0.1)
        if n == 0:
            continue  # called twice in a row: counted from then on
        for _ in range(100):
            assert (await fraud.check(call(f"+1313{next(other):04d}000"))).allowed
            clock.advance(0.05)
    assert [v.allowed for v in verdicts] == [True] * 20 + [False]
    assert verdicts[-1].fired[0].count == 21


VELOCITY_IDENTITY = {
    "name": "velocity-identity",
    "kind": "velocity",
    "scope": "identity",
    "max_calls": 5,
    "window_s": 60,
    "action": "refuse",
}


async def test_a_pbx_with_many_identities_keeps_a_bounded_value(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """Per-identity counters are capped like the ranges: an account whose calls come
    from 2000 extensions within the window keeps a small value."""
    fraud = await make_fraud(redis, clock, [VELOCITY_IDENTITY])
    for i in range(2000):
        assert (await fraud.check(call(identity=f"user:ext{i}"))).allowed
        clock.advance(0.02)
    size = await redis.strlen("{a:acc1}:fr:v")
    assert size < 4096, f"{{a:acc1}}:fr:v is {size} bytes after 2000 identities"


async def test_a_hammered_identity_is_counted_exactly_among_many_others(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """An identity calling again soon keeps its counter however many other identities
    call in between (a hundred): its 5th call in the window is just under the limit,
    its 6th is refused; the others, one call each, are never refused."""
    fraud = await make_fraud(redis, clock, [VELOCITY_IDENTITY])
    others = iter(range(10_000))
    verdicts = []
    for n in range(6):
        verdicts.append(await fraud.check(call(identity="user:hijacked")))
        clock.advance(0.1)
        if n == 0:
            continue  # called twice in a row: counted from then on
        for _ in range(100):
            assert (await fraud.check(call(identity=f"user:ext{next(others)}"))).allowed
            clock.advance(0.01)
    assert [v.allowed for v in verdicts] == [True] * 5 + [False]
    assert verdicts[-1].fired[0].count == 6


VELOCITY_IP = {
    "name": "velocity-ip",
    "kind": "velocity",
    "scope": "caller_ip",
    "max_calls": 3,
    "window_s": 3600,
    "action": "refuse",
}
IP = "192.0.2.7"


async def test_ip_counter_shared_by_tariffs_with_other_windows_undercounts(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """velocity-ip with a per-tariff window override: the caller IP's value is shared
    by every account; a tariff with a shorter window counts apart (its own counter),
    never reads the longer window's buckets with its width: the IP's 4th call in the
    hour of the 1 h tariff is refused (3 allowed per hour)."""
    fraud = await make_fraud(
        redis,
        clock,
        [VELOCITY_IP],
        tariff_overrides={"retail": {"velocity-ip": {"window_s": 60}}},
    )
    for i in range(3):  # three calls of the (1 h window) tariff from the IP
        assert (await fraud.check(call(account_id=f"w{i}", caller_ip=IP))).allowed
        clock.advance(1)
    # one call of an account whose tariff has the 60 s window (1 call: within its limit)
    assert (await fraud.check(call(account_id="r1", caller_ip=IP, tariff="retail"))).allowed
    clock.advance(1)
    fourth = await fraud.check(call(account_id="w9", caller_ip=IP))
    assert fourth.decision is Decision.REFUSE, "4 calls from the IP in 1 h, limit 3"


async def test_window_grown_by_config_counts_old_buckets_forever(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """An operator widens a rule's window (restart with the new config): the counter of
    the old window is not read with the new width (its bucket numbers would be far
    ahead of the new current bucket and count forever): calls made long ago no longer
    keep an account over its limit."""
    rule = {
        "name": "velocity-account",
        "kind": "velocity",
        "scope": "account",
        "max_calls": 3,
        "window_s": 60,
        "action": "refuse",
    }
    old = await make_fraud(redis, clock, [rule])
    for _ in range(3):
        assert (await old.check(call())).allowed
    clock.advance(2 * 86400)  # two days later, the window is now one hour
    new = await make_fraud(redis, clock, [{**rule, "window_s": 3600}])
    assert (await new.check(call())).allowed
    clock.advance(1)
    second = await new.check(call())  # two calls in the last hour, limit 3
    assert second.allowed, "2 days old calls still counted: " + repr(second.fired)
    clock.advance(1)
    assert (await new.check(call())).allowed  # the 3rd
    clock.advance(1)
    assert not (await new.check(call())).allowed  # the 4th in the hour


async def test_retransmission_counted_again_after_16_other_refusals(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """Remembered answers are forgotten by time, never by count: an account whose calls
    are refused at more than 16 per retransmission interval (an attack, a dialer on an
    empty account) still has each answered again, not counted again, by its
    retransmission; on the fused path and on the step path (Redis Cluster)."""
    from fraud_harness import LIBERIA_PREMIUM, counted, fraud_value

    risky = {"name": "risky", "kind": "destination", "max_calls": 0, "window_s": 3600,
             "action": "refuse"}  # fmt: skip
    for single in (True, False):
        await redis.flushdb()
        fraud = await make_fraud(redis, clock, [risky], single_redis=single)
        sids = [f"call-{i}" for i in range(40)]
        for sid in sids:
            assert (await fraud.check(call(LIBERIA_PREMIUM, sid=sid))).decision is Decision.REFUSE
            clock.advance(0.1)
        before = counted(await fraud_value(redis))
        for sid in sids:  # each one's retransmission
            again = await fraud.check(call(LIBERIA_PREMIUM, sid=sid))
            assert again.again and again.decision is Decision.REFUSE, (single, sid)
        assert counted(await fraud_value(redis)) == before
        value = await fraud_value(redis)
        assert len(value["r"]) <= 16  # the value stays bounded
        clock.advance(61)  # past the refusal memory: a new call of that id counts
        assert not (await fraud.check(call(LIBERIA_PREMIUM, sid=sids[-1]))).again


async def test_cluster_path_ip_refusal_leaves_a_phantom_live_call(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """Redis Cluster (step by step): check.lua admits the call live in the account's
    value, then check_ip refuses it (velocity-ip): the refusal's note drops the live
    entry too, so the refused call does not count for `concurrent` (for live_ttl, a
    day by default). Here: 1 call really live, limit 2, the next call is allowed."""
    concurrent = {"name": "concurrent", "kind": "concurrent", "max_calls": 2, "action": "refuse"}
    vel_ip = {**VELOCITY_IP, "max_calls": 1, "window_s": 60}
    fraud = await make_fraud(redis, clock, [concurrent, vel_ip], single_redis=False)
    assert (await fraud.check(call(sid="a", caller_ip=IP))).allowed  # live: a
    refused = await fraud.check(call(sid="b", caller_ip=IP))  # 2nd from the IP in 60 s
    assert refused.decision is Decision.REFUSE and refused.rule is not None
    assert refused.rule.name == "velocity-ip"
    await fraud.settle()
    again = await fraud.check(call(sid="b", caller_ip=IP))  # its retransmission
    assert again.again and again.decision is Decision.REFUSE
    clock.advance(120)
    third = await fraud.check(call(sid="c", caller_ip="198.51.100.1"))  # live: a, c
    assert third.allowed, "only call a is live (b was refused), limit 2: " + repr(third)
    fourth = await fraud.check(call(sid="d", caller_ip="198.51.100.2"))  # a, c, d
    assert fourth.decision is Decision.REFUSE
