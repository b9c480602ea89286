"""Each authorize rule kind on a real Redis: the call that crosses its threshold is
refused (action refuse), the calls up to it are not; windows slide; retransmissions
count once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio as aioredis
from fakes import Clock
from fraud_harness import (
    BERLIN,
    DE_SHARED,
    LIBERIA_PREMIUM,
    UK_PREMIUM,
    add_account,
    call,
    fraud_config,
    make_fraud,
)

from chargingd.core.config import ConfigError
from chargingd.fraud import CallFacts, Decision, Fraud, Verdict

Calls = Callable[[], list[CallFacts]]


async def run(fraud: Fraud, calls: list[CallFacts]) -> list[Verdict]:
    return [await fraud.check(c) for c in calls]


def _range(n: int) -> list[CallFacts]:  # numbers of one range (the last 3 digits vary)
    return [call(f"+4930123{400 + i}") for i in range(n)]


# kind, rule thresholds, the calls up to the threshold, the call that crosses it
CASES: list[tuple[str, dict[str, Any], Calls, Callable[[], CallFacts]]] = [
    (
        "velocity-account",
        {"kind": "velocity", "scope": "account", "max_calls": 5, "window_s": 60},
        lambda: [call(identity=f"user:u{i}") for i in range(5)],
        lambda: call(identity="user:other"),
    ),
    (
        "velocity-identity",
        {"kind": "velocity", "scope": "identity", "max_calls": 3, "window_s": 60},
        lambda: (
            [call(identity="user:alice") for _ in range(3)]
            + [call(identity="user:bob") for _ in range(3)]
        ),
        lambda: call(identity="user:alice"),
    ),
    (
        "velocity-ip",
        {"kind": "velocity", "scope": "caller_ip", "max_calls": 3, "window_s": 60},
        lambda: (
            [call(account_id=f"acc{i}", caller_ip="192.0.2.7") for i in range(3)]
            + [call(caller_ip="192.0.2.8")]
        ),
        lambda: call(account_id="acc9", caller_ip="192.0.2.7"),
    ),
    (
        "concurrent",
        {"kind": "concurrent", "max_calls": 2},
        lambda: [call(), call()],
        lambda: call(),
    ),
    (
        "destination",
        {"kind": "destination", "max_calls": 2, "window_s": 600},
        lambda: [call(LIBERIA_PREMIUM), call(UK_PREMIUM)] + [call(BERLIN) for _ in range(5)],
        lambda: call(DE_SHARED),
    ),
    (
        "new-country",
        {"kind": "new_country"},
        lambda: [call(BERLIN), call("+4989123456"), call(BERLIN)],
        lambda: call("+33142685300"),
    ),
    (
        "same-range",
        {"kind": "same_destination", "range_digits": 3, "max_calls": 3, "window_s": 600},
        lambda: [*_range(3), call("+4930999100")],
        lambda: call("+4930123499"),
    ),
    (
        "distinct",
        {"kind": "distinct_destinations", "max_destinations": 3, "window_s": 300},
        lambda: [call(n) for n in ("+4930111111", "+4930222222", "+4930333333") * 2],
        lambda: call("+4930444444"),
    ),
]


@pytest.mark.parametrize(("name", "thresholds", "under", "over"), CASES, ids=[c[0] for c in CASES])
async def test_each_kind_fires_at_its_threshold_and_not_below(
    redis: aioredis.Redis,
    clock: Clock,
    name: str,
    thresholds: dict[str, Any],
    under: Calls,
    over: Callable[[], CallFacts],
) -> None:
    fraud = await make_fraud(redis, clock, [{"name": name, "action": "refuse", **thresholds}])
    below = await run(fraud, under())
    assert [v.decision for v in below] == [Decision.ALLOW] * len(below)
    assert all(not v.fired for v in below)
    crossing = await fraud.check(over())
    assert crossing.decision is Decision.REFUSE
    assert crossing.rule is not None and crossing.rule.name == name
    assert crossing.message == "call not allowed"
    assert [f.rule.name for f in crossing.fired] == [name]


async def test_a_window_slides(redis: aioredis.Redis, clock: Clock) -> None:
    rule = {"name": "v", "kind": "velocity", "max_calls": 3, "window_s": 60, "action": "refuse"}
    fraud = await make_fraud(redis, clock, [rule])
    for _ in range(3):
        assert (await fraud.check(call())).allowed
        clock.advance(20)  # calls at 0, 20, 40 s
    assert not (await fraud.check(call())).allowed  # at 60 s: 0..60 holds four
    clock.advance(1)  # at 61 s the call at 0 s has left the window; the refused one counts
    assert not (await fraud.check(call())).allowed  # 20, 40, 60, 61
    clock.advance(60)
    assert (await fraud.check(call())).allowed


async def test_a_retransmitted_authorize_counts_once(redis: aioredis.Redis, clock: Clock) -> None:
    rule = {"name": "v", "kind": "velocity", "max_calls": 2, "window_s": 60, "action": "refuse"}
    fraud = await make_fraud(redis, clock, [rule])
    same = call(sid="retransmitted")
    for _ in range(5):
        assert (await fraud.check(same)).allowed
    assert (await fraud.check(call())).allowed  # two distinct calls
    assert not (await fraud.check(call())).allowed


async def test_alert_rules_fire_without_refusing_and_raise_one_incident(
    redis: aioredis.Redis, clock: Clock
) -> None:
    rule = {"name": "v", "kind": "velocity", "max_calls": 2, "window_s": 60}  # alert
    fraud = await make_fraud(redis, clock, [rule])
    verdicts = await run(fraud, [call() for _ in range(6)])
    assert all(v.allowed for v in verdicts)
    assert [len(v.fired) for v in verdicts] == [0, 0, 1, 1, 1, 1]
    await fraud.settle()
    assert fraud.alerts is not None
    (incident,) = await fraud.alerts.incidents()
    assert (incident.key, incident.kind, incident.count) == ("fraud.v:acc1", "fraud.velocity", 4)
    assert incident.severity == "warning"
    assert incident.details["count"] == 3 and incident.details["limit"] == 2
    assert incident.summary == "v: 3 calls in 60 s (limit 2): alert"


async def test_the_worst_action_decides(redis: aioredis.Redis, clock: Clock) -> None:
    rules = [
        {"name": "soft", "kind": "velocity", "max_calls": 1, "window_s": 60},
        {"name": "hard", "kind": "velocity", "max_calls": 2, "window_s": 60, "action": "refuse",
         "message": "too fast"},
    ]  # fmt: skip
    fraud = await make_fraud(redis, clock, rules)
    v1, v2, v3 = await run(fraud, [call(), call(), call()])
    assert v1.allowed and not v1.fired
    assert v2.allowed and [f.rule.name for f in v2.fired] == ["soft"]
    assert v3.decision is Decision.REFUSE and v3.message == "too fast"
    assert sorted(f.rule.name for f in v3.fired) == ["hard", "soft"]


async def test_a_refusing_rule_that_fired_beside_the_deciding_one_does_not_say_alert(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """A call over a refusing rule's threshold that another rule blocked (or refused):
    the refusing rule's alert said "alert", as if it only alerted; it says which rule
    refused the call. An alerting rule still says alert."""
    rules = [
        {"name": "premium", "kind": "destination", "max_calls": 1, "window_s": 600,
         "action": "block"},
        {"name": "fast", "kind": "velocity", "max_calls": 1, "window_s": 60, "action": "refuse"},
        {"name": "live", "kind": "concurrent", "max_calls": 1, "action": "refuse"},
        {"name": "watch", "kind": "velocity", "max_calls": 1, "window_s": 60},
    ]  # fmt: skip
    fraud = await make_fraud(redis, clock, rules)
    await add_account(fraud.ledger)
    verdicts = await run(fraud, [call(LIBERIA_PREMIUM, sid="a"), call(LIBERIA_PREMIUM)])
    assert [v.decision for v in verdicts] == [Decision.ALLOW, Decision.BLOCK]
    await fraud.settle()
    assert fraud.alerts is not None
    outcome = {i.key: i.details["outcome"] for i in await fraud.alerts.incidents()}
    assert outcome == {
        "fraud.premium:acc1": "account blocked",
        "fraud.fast:acc1": "account blocked (by premium)",
        "fraud.live:acc1": "account blocked (by premium)",
        "fraud.watch:acc1": "alert",
    }
    # refused by another refusing rule
    fraud2 = await make_fraud(redis, clock, rules[1:])
    await run(fraud2, [call(BERLIN, "acc2", sid="b"), call(BERLIN, "acc2")])
    await fraud2.settle()
    assert fraud2.alerts is not None
    outcome = {i.key: i.details["outcome"] for i in await fraud2.alerts.incidents()}
    assert outcome["fraud.fast:acc2"] == "refused"
    assert outcome["fraud.live:acc2"] == "refused (by fast)"


async def test_concurrent_calls_end_with_their_cdr_and_a_refused_call_is_forgotten(
    redis: aioredis.Redis, clock: Clock
) -> None:
    from fraud_harness import cdr

    fraud = await make_fraud(
        redis, clock, [{"name": "c", "kind": "concurrent", "max_calls": 2, "action": "refuse"}]
    )
    a, b = call(sid="a"), call(sid="b")
    assert (await fraud.check(a)).allowed and (await fraud.check(b)).allowed
    assert not (await fraud.check(call())).allowed
    await fraud.cdr(cdr(call_id="a"), "1-0")  # call a ended
    c = call(sid="c")
    assert (await fraud.check(c)).allowed
    await fraud.forget("acc1", "c")  # ... but the ledger refused it
    assert (await fraud.check(call(sid="d"))).allowed
    assert not (await fraud.check(call())).allowed


async def test_live_entries_lapse_when_no_cdr_comes(redis: aioredis.Redis, clock: Clock) -> None:
    fraud = await make_fraud(
        redis, clock, [{"name": "c", "kind": "concurrent", "max_calls": 1, "action": "refuse"}]
    )
    assert (await fraud.check(call())).allowed
    assert not (await fraud.check(call())).allowed
    clock.advance(3601)  # live_ttl_s: the longest a session lives
    assert (await fraud.check(call())).allowed


async def test_new_country_exemptions_and_learning(redis: aioredis.Redis, clock: Clock) -> None:
    rule = {"name": "nc", "kind": "new_country", "exempt_countries": ["AT"], "action": "refuse"}
    fraud = await make_fraud(redis, clock, [rule])
    assert (await fraud.check(call(BERLIN))).allowed  # the first call: learns DE
    assert (await fraud.check(call("+43123456789"))).allowed  # AT is exempt
    refused = await fraud.check(call("+33142685300"))
    assert refused.decision is Decision.REFUSE
    assert (await fraud.check(call("+33142685300"))).decision is Decision.REFUSE  # not learned
    clock.advance(91 * 86400)  # memory_days 90: DE forgotten too, but the account has history
    assert not (await fraud.check(call(BERLIN))).allowed


async def test_shadow_records_and_changes_nothing(redis: aioredis.Redis, clock: Clock) -> None:
    rule = {"name": "v", "kind": "velocity", "max_calls": 1, "window_s": 60, "action": "block"}
    fraud = await make_fraud(redis, clock, [rule], shadow=True)
    from fraud_harness import add_account

    await add_account(fraud.ledger)
    verdicts = await run(fraud, [call() for _ in range(4)])
    assert all(v.allowed for v in verdicts)
    assert [bool(v.fired) for v in verdicts] == [False, True, True, True]
    assert (await fraud.ledger.get_account("acc1")).status == "active"
    await fraud.settle()
    assert fraud.alerts is not None
    (incident,) = await fraud.alerts.incidents()
    assert incident.details["shadow"] is True
    assert incident.summary.endswith("shadow: would block")


async def test_overrides_per_tariff_and_account(redis: aioredis.Redis, clock: Clock) -> None:
    rule = {"name": "v", "kind": "velocity", "max_calls": 1, "window_s": 60, "action": "refuse"}
    fraud = await make_fraud(
        redis,
        clock,
        [rule],
        tariff_overrides={"wholesale": {"v": {"max_calls": 3}}},
        account_overrides={"vip": {"v": {"enabled": False}}, "acc2": {"v": {"max_calls": 2}}},
    )

    async def allowed(account: str, tariff: str, n: int) -> list[bool]:
        return [
            (await fraud.check(call(account_id=account, tariff=tariff))).allowed for _ in range(n)
        ]

    assert await allowed("acc1", "", 2) == [True, False]
    assert await allowed("trunk", "wholesale", 4) == [True, True, True, False]
    assert await allowed("acc2", "wholesale", 3) == [True, True, False]  # account wins
    assert await allowed("vip", "", 5) == [True] * 5


async def test_a_tariff_or_account_override_refuses_the_first_risky_call(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """docs/fraud.md "Tuning": `destination` with max_calls = 0 refuses the first risky
    call, "right for retail accounts that never call premium ranges", and thresholds are
    tuned per tariff and account. Such an override stopped startup ("max_calls must be
    between 1 and 1000000, not 0"): the override was checked as if of a velocity rule,
    so retail tariffs could only keep the shipped 10 risky calls an hour."""
    rule = {"name": "risky", "kind": "destination", "max_calls": 3, "window_s": 3600,
            "action": "refuse"}  # fmt: skip
    fraud = await make_fraud(
        redis,
        clock,
        [rule],
        tariff_overrides={"retail": {"risky": {"max_calls": 0}}},
        account_overrides={"careful": {"risky": {"max_calls": 0}}},
    )

    async def allowed(account: str, tariff: str, n: int) -> list[bool]:
        facts = [call(LIBERIA_PREMIUM, account_id=account, tariff=tariff) for _ in range(n)]
        return [v.allowed for v in await run(fraud, facts)]

    assert await allowed("shop", "retail", 2) == [False, False]
    assert await allowed("careful", "", 2) == [False, False]
    assert await allowed("trunk", "wholesale", 4) == [True, True, True, False]
    # max_calls = 0 stays an error for the kinds that would then refuse every call
    with pytest.raises(ConfigError, match="rule 'v': max_calls must be between 1"):
        fraud_config(
            [{"name": "v", "kind": "velocity", "max_calls": 5, "window_s": 60}],
            tariff_overrides={"retail": {"v": {"max_calls": 0}}},
        )


async def test_overrides_of_the_kinds_own_thresholds(redis: aioredis.Redis, clock: Clock) -> None:
    """docs/fraud.md: an override may set the thresholds its rule's kind has. A tariff's
    exempt_countries (its customers' home market) and memory_days, an account's
    range_digits: they were refused at startup ("unknown key") though documented."""
    rules = [
        {"name": "nc", "kind": "new_country", "exempt_countries": ["DE"], "action": "refuse"},
        {"name": "sd", "kind": "same_destination", "range_digits": 2, "max_calls": 2,
         "window_s": 60, "action": "refuse"},
    ]  # fmt: skip
    fraud = await make_fraud(
        redis,
        clock,
        rules,
        tariff_overrides={"uk": {"nc": {"exempt_countries": ["DE", "GB"], "memory_days": 7}}},
        account_overrides={"wide": {"sd": {"range_digits": 4}}},
    )

    async def allowed(account: str, tariff: str, numbers: list[str]) -> list[bool]:
        facts = [call(n, account_id=account, tariff=tariff) for n in numbers]
        return [v.allowed for v in await run(fraud, facts)]

    home_then_away = [BERLIN, "+442079460001", "+442079460002", "+33123456789"]
    assert await allowed("retail", "", home_then_away) == [True, False, False, False]
    assert await allowed("trunk", "uk", home_then_away) == [True, True, True, False]
    (nc,) = [r for r in fraud.book.rules_for("trunk", "uk") if r.name == "nc"]
    assert nc.window_ms == 7 * 86400 * 1000
    # range_digits 4: +331234 5xxxx is one range for "wide", three for the others.
    spread = ["+33123451111", "+33123452222", "+33123453333"]
    assert await allowed("wide", "", spread) == [True, True, False]
    assert await allowed("narrow", "", spread) == [True, True, True]


async def test_the_default_plans_override_applies_to_accounts_naming_no_tariff(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """An account created without a tariff is rated by [rating] default_plan, whose id
    is "default" (its CDRs say tariff "default", and the CDR-event rules took
    tariff_overrides.default for it); the authorize rules looked the override up by
    the account's own tariff "" and never applied it."""
    rule = {"name": "v", "kind": "velocity", "max_calls": 1, "window_s": 60, "action": "refuse"}
    fraud = await make_fraud(
        redis, clock, [rule], tariff_overrides={"default": {"v": {"max_calls": 3}}}
    )

    async def allowed(account: str, tariff: str, n: int) -> list[bool]:
        return [
            (await fraud.check(call(account_id=account, tariff=tariff))).allowed for _ in range(n)
        ]

    assert await allowed("plain", "", 4) == [True, True, True, False]
    assert await allowed("named", "default", 4) == [True, True, True, False]
    assert await allowed("gold", "gold", 2) == [True, False]


async def test_rules_of_other_kinds_do_not_touch_redis_when_none_applies(
    redis: aioredis.Redis, clock: Clock
) -> None:
    fraud = await make_fraud(redis, clock, [{"name": "s", "kind": "spend", "max_amount": "5",
                                             "window_s": 60}])  # fmt: skip
    assert fraud.prepare(call()) is None  # an alerting event rule: nothing to read
    refusing = replace(fraud.book.base[0], action=fraud.book.base[0].action.REFUSE)
    fraud.book.base = (refusing,)
    assert fraud.prepare(call()) is not None  # its deny flag must be read


async def test_windows_are_buckets_that_never_count_fewer_calls(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """A window is 10 buckets (here 6 s each, from the clock's start): a bucket whose
    calls all left the window no longer counts; the bucket the window's start cuts
    through counts whole, so a rule fires at most one bucket early."""
    rule = {"name": "v", "kind": "velocity", "max_calls": 3, "window_s": 60, "action": "refuse"}
    fraud = await make_fraud(redis, clock, [rule])
    for step in (0, 5, 25):  # calls at 0 s, 5 s (one bucket), 30 s
        clock.advance(step)
        assert (await fraud.check(call())).allowed
    clock.advance(30.5)  # 60.5 s: the call at 0 s left the window, the one at 5 s did not
    early = await fraud.check(call())
    assert early.decision is Decision.REFUSE  # its bucket counts whole: 0, 5, 30, 60.5
    assert [f.count for f in early.fired] == [4]
    clock.advance(6)  # 66.5 s: that bucket has left: 30, 60.5, 66.5
    assert (await fraud.check(call())).allowed
    clock.advance(61)  # nothing of the old calls counts
    verdicts = [await fraud.check(call()) for _ in range(4)]  # calls that come fast: exact
    assert [v.allowed for v in verdicts] == [True, True, True, False]


async def test_a_busy_account_keeps_a_small_value(redis: aioredis.Redis, clock: Clock) -> None:
    """The default rule set, an account making 200 calls (to 200 numbers of 200 ranges,
    none ending): its lists stay capped at the limit + 1 and the value small."""
    from fraud_harness import fraud_value

    from chargingd.core.config import FraudConfig

    fraud = await make_fraud(redis, clock, [])
    fraud.book.base = Fraud(
        FraudConfig(enabled=True), redis=redis, ledger=fraud.ledger, alerts=None,
        clock_ms=clock, live_ttl_s=3600, single_redis=True,
    ).book.base  # fmt: skip
    for i in range(200):
        await fraud.check(call(f"+44207946{i:04d}", sid=f"{i:08d}-aaaa-bbbb-cccc-dddddddddddd"))
        clock.advance(0.5)
    value = await fraud_value(redis)
    assert len(value["l"]) == 31  # concurrent: 30 + 1
    assert len(value["n"]["8"]) == 31  # many-destinations: 30 + 1
    raw = await redis.get("{a:acc1}:fr:v")
    # live calls (31) and the last counted (4) by their whole session ids (never a
    # hash: a caller chooses its id), the rest ~900 bytes
    assert raw is not None and len(raw) < 900 + 35 * (36 + 2), len(raw)


async def test_the_step_path_learns_a_country_only_when_not_known_lately(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """check.lua says whether admit.lua has a country to write: a call to a country
    the account called today sends no admit script."""
    fraud = await make_fraud(redis, clock, [{"name": "nc", "kind": "new_country"}])
    names = {fraud._check.sha: "check", fraud._admit.sha: "admit"}
    # The scripts Redis ran, from its slow log (every command: the engine may be compiled,
    # and a compiled class's methods cannot be replaced)
    await redis.config_set("slowlog-log-slower-than", 0)
    await redis.slowlog_reset()

    async def sent() -> list[str]:
        entries = await redis.slowlog_get(128)
        await redis.slowlog_reset()
        commands = [e["command"] for e in reversed(entries)]
        words = [(c if isinstance(c, bytes) else c.encode()).split(maxsplit=2) for c in commands]
        ran = [w[1].decode() for w in words if w[0].upper() in (b"EVALSHA", b"EVAL")]
        return [names.get(sha, sha) for sha in ran]

    assert (await fraud.check(call(BERLIN))).allowed
    assert await sent() == ["check", "admit"]  # DE learnt
    clock.advance(3600)
    assert (await fraud.check(call("+4989123456"))).allowed
    assert await sent() == ["check"]  # DE known since an hour: nothing to write
    clock.advance(86400)
    assert (await fraud.check(call(BERLIN))).allowed
    assert await sent() == ["check", "admit"]  # a day on: its last call rewritten
    assert (await fraud.value("acc1"))["c"]["DE"] == clock()
