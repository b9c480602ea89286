"""The event rules (CDRs and Access-Rejects) on a real Redis: each fires at its
threshold and not below; refusing denies the account's (or identity's) next calls
for the cooldown; a block goes through the ledger; a re-delivered CDR counts once."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from fakes import Clock
from fraud_harness import add_account, call, cdr, make_fraud

from chargingd.fraud import Decision, Fraud, Verdict
from chargingd.fraud import keys as FK
from chargingd.ledger import Mode, Status

EUR = 1_000_000
Feed = Callable[[Fraud], Awaitable[list[Verdict]]]


_entry = itertools.count(1)


def cdrs(*made: Any) -> Feed:
    """Each CDR as a new stream entry."""

    async def feed(fraud: Fraud) -> list[Verdict]:
        return [await fraud.cdr(c, f"{next(_entry)}-0") for c in made]

    return feed


def rejects(identity: str, n: int, account: str | None = "acc1") -> Feed:
    async def feed(fraud: Fraud) -> list[Verdict]:
        return [await fraud.refused(account, identity, f"rej-{next(_entry)}") for _ in range(n)]

    return feed


CASES: list[tuple[str, dict[str, Any], Feed, Feed]] = [
    (
        "spend",
        {"kind": "spend", "max_amount": "10.00", "window_s": 3600},
        cdrs(cdr(charged_micros=4 * EUR), cdr(charged_micros=6 * EUR), cdr(answered=False)),
        cdrs(cdr(charged_micros=1)),
    ),
    (
        "short",
        {"kind": "short_calls", "max_duration_s": 6, "max_calls": 3, "window_s": 600},
        cdrs(*[cdr(duration_s=d) for d in (1, 6, 3, 7, 60)], cdr(answered=False)),
        cdrs(cdr(duration_s=2)),
    ),
    (
        "failed-cdrs",
        {"kind": "failed_attempts", "max_calls": 3, "window_s": 300},
        cdrs(*[cdr(answered=False) for _ in range(3)], cdr(duration_s=1)),
        cdrs(cdr(answered=False)),
    ),
    (
        "failed-rejects",
        {"kind": "failed_attempts", "max_calls": 3, "window_s": 300},
        rejects("user:alice", 3),
        rejects("user:alice", 1),
    ),
    (
        "asr",
        {"kind": "asr", "min_asr_pct": 50, "min_calls": 4, "window_s": 3600},
        # 1 of 3 answered (33%) but under min_calls; then 2 of 4 (50%): not below 50
        cdrs(cdr(), cdr(answered=False), cdr(answered=False), cdr()),
        cdrs(cdr(answered=False)),  # 2 of 5: 40%
    ),
]


@pytest.mark.parametrize(("name", "thresholds", "under", "over"), CASES, ids=[c[0] for c in CASES])
async def test_each_event_kind_fires_at_its_threshold_and_not_below(
    redis: aioredis.Redis,
    clock: Clock,
    name: str,
    thresholds: dict[str, Any],
    under: Feed,
    over: Feed,
) -> None:
    fraud = await make_fraud(redis, clock, [{"name": name, "action": "refuse", **thresholds}])
    below = await under(fraud)
    assert all(v.allowed and not v.fired for v in below), below
    (crossing,) = await over(fraud)
    assert crossing.decision is Decision.REFUSE
    assert [f.rule.name for f in crossing.fired] == [name]
    # ... and the account's next call is refused for the cooldown (the window)
    assert (await fraud.check(call(identity="user:alice"))).decision is Decision.REFUSE


async def test_spend_and_asr_report_what_they_measured(redis: aioredis.Redis, clock: Clock) -> None:
    rules = [
        {"name": "spend", "kind": "spend", "max_amount": "10.00", "window_s": 3600},
        {"name": "asr", "kind": "asr", "min_asr_pct": 50, "min_calls": 2, "window_s": 3600},
    ]
    fraud = await make_fraud(redis, clock, rules)
    (v,) = await cdrs(cdr(charged_micros=12_500_000))(fraud)
    assert [(f.rule.name, f.count) for f in v.fired] == [("spend", 12_500_000)]
    (v,) = await cdrs(cdr(answered=False))(fraud)
    assert not v.fired  # nothing spent (spend not looked at); 1 of 2 answered: 50%
    (v,) = await cdrs(cdr(answered=False))(fraud)
    assert [(f.rule.name, f.count) for f in v.fired] == [("asr", 33)]
    await fraud.settle()
    assert fraud.alerts is not None
    summaries = sorted(i.summary for i in await fraud.alerts.incidents())
    assert summaries == [
        "asr: ASR 33% in 3600 s (lowest 50%, 2+ calls): alert",
        "spend: spent 12.50 EUR in 3600 s (cap 10.00 EUR): alert",
    ]


async def test_spend_texts_are_written_in_the_account_currency(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """A spend cap counts in each account's own currency, and its texts say it in that
    currency's minor unit with its code: a yen account's alert said "spent 1500.00 (cap
    1000.00)" and the why of its block (its audit trail) micro-units, "1500000000 (limit
    1000000000"; a euro account's keep their cents."""
    rules = [{"name": "spend", "kind": "spend", "max_amount": "1000", "window_s": 3600,
              "action": "block"}]  # fmt: skip
    fraud = await make_fraud(redis, clock, rules)
    for account, currency in (("yen", "JPY"), ("euro", "EUR")):
        await fraud.ledger.create_account(
            account, mode=Mode.PREPAID, currency=currency, balance_micros=10**10, who="test"
        )
    spent = dataclasses.replace(cdr("yen", charged_micros=1500 * EUR), currency="JPY")
    (v,) = await cdrs(spent)(fraud)
    assert v.decision is Decision.BLOCK
    (v,) = await cdrs(cdr("euro", charged_micros=1000 * EUR + 500_000))(fraud)
    assert v.decision is Decision.BLOCK
    await fraud.settle()
    assert fraud.alerts is not None
    summaries = {i.details["subject"]: i.summary for i in await fraud.alerts.incidents()}
    assert summaries == {
        "yen": "spend: spent 1500 JPY in 3600 s (cap 1000 JPY): account blocked",
        "euro": "spend: spent 1000.50 EUR in 3600 s (cap 1000.00 EUR): account blocked",
    }
    whys = {}
    for account in ("yen", "euro"):
        (entry,) = [e for e in await fraud.ledger.audit(account) if e.what == "status"]
        whys[account] = entry.why
    assert whys == {
        "yen": "fraud rule spend: 1500 JPY (limit 1000 JPY, window 3600 s)",
        "euro": "fraud rule spend: 1000.50 EUR (limit 1000.00 EUR, window 3600 s)",
    }


async def test_default_spend_caps_count_in_each_accounts_currency(
    redis: aioredis.Redis, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """The default caps (50 an hour, 200 a day) were counted in each account's own
    currency: a yen account was alerted at 60 JPY (~0.40 EUR), a dinar one only at 50
    KWD (~150 EUR). They are per currency now (about 50 euros in EUR, USD, GBP, CHF and
    JPY); a yen account is counted against its currency's cap (the default's 8000, or
    one its tariff gives, as an operator writes it), one of a currency without a cap not
    at all, and that is logged once."""
    jp = {"spend-hour": {"max_amounts": {"JPY": "5000"}}}
    fraud = await make_fraud(redis, clock, None, tariff_overrides={"jp-retail": jp})
    accounts = (("yen", "JPY", ""), ("card", "JPY", "jp-retail"), ("euro", "EUR", ""),
                ("dinar", "KWD", ""))  # fmt: skip
    for account, currency, tariff in accounts:
        await fraud.ledger.create_account(
            account, mode=Mode.PREPAID, currency=currency, balance_micros=10**10,
            tariff=tariff, who="test",
        )  # fmt: skip

    def spent(account: str, currency: str, micros: int, tariff: str = "") -> Any:
        made = cdr(account, charged_micros=micros)
        return dataclasses.replace(made, currency=currency, tariff=tariff)

    fired = [[f.rule.name for f in v.fired] for v in await cdrs(
        spent("yen", "JPY", 60 * EUR),  # 60 JPY: under the default's 8000
        spent("card", "JPY", 60 * EUR, "jp-retail"),  # 60 JPY: under its tariff's 5000
        spent("card", "JPY", 4950 * EUR, "jp-retail"),  # 5010 JPY: over it
        spent("euro", "EUR", 50 * EUR),  # 50.00 EUR: at the cap, not over it
        spent("euro", "EUR", 10_000),  # 50.01 EUR
        spent("dinar", "KWD", 60 * EUR),  # 60 KWD: no cap in KWD (spend-day neither)
    )(fraud)]  # fmt: skip
    assert fired == [[], [], ["spend-hour"], [], ["spend-hour"], []]
    await fraud.settle()
    assert fraud.alerts is not None
    summaries = sorted(i.summary for i in await fraud.alerts.incidents())
    assert summaries == [
        "spend-hour: spent 50.01 EUR in 3600 s (cap 50.00 EUR): alert",
        "spend-hour: spent 5010 JPY in 3600 s (cap 5000 JPY): alert",
    ]
    uncapped = [r.getMessage() for r in caplog.records if "no spend cap in KWD" in r.getMessage()]
    assert len(uncapped) == 2  # spend-hour and spend-day, once each
    assert uncapped[0].startswith(
        "fraud: rule spend-hour has no spend cap in KWD (caps: CHF, EUR, GBP, JPY, USD)"
    )


async def test_refusal_lasts_the_cooldown(redis: aioredis.Redis, clock: Clock) -> None:
    rule = {"name": "spend", "kind": "spend", "max_amount": "1", "window_s": 3600,
            "cooldown_s": 600, "action": "refuse", "message": "spending limit reached"}  # fmt: skip
    fraud = await make_fraud(redis, clock, [rule])
    await fraud.cdr(cdr(charged_micros=2 * EUR), "1-0")
    refused = await fraud.check(call())
    assert (refused.decision, refused.message) == (Decision.REFUSE, "spending limit reached")
    clock.advance(599)
    assert not (await fraud.check(call())).allowed
    clock.advance(2)
    assert (await fraud.check(call())).allowed


async def test_rejects_deny_only_that_identity(redis: aioredis.Redis, clock: Clock) -> None:
    rule = {"name": "fa", "kind": "failed_attempts", "max_calls": 2, "window_s": 300,
            "action": "refuse"}  # fmt: skip
    fraud = await make_fraud(redis, clock, [rule])
    await rejects("user:alice", 3)(fraud)
    assert not (await fraud.check(call(identity="user:alice"))).allowed
    assert (await fraud.check(call(identity="user:bob"))).allowed


async def test_the_rules_own_refusals_are_no_new_failed_attempts(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """A gateway that retries a refused identity: each retry is refused by the rule's
    own deny flag. Counted as a failed attempt, it renewed the refusal, which then never
    ended while the gateway retried (fraud_events.lua 'f'). Rejects of the identity
    while it is not refused count as before, and fire again."""
    rule = {"name": "fa", "kind": "failed_attempts", "max_calls": 2, "window_s": 300,
            "cooldown_s": 10, "action": "refuse"}  # fmt: skip
    fraud = await make_fraud(redis, clock, [rule])
    fired = [v.decision for v in await rejects("user:alice", 3)(fraud)]
    assert fired == [Decision.ALLOW, Decision.ALLOW, Decision.REFUSE]
    for _ in range(19):  # a retry every 0.5 s for 9.5 s, each refused by the rule
        clock.advance(0.5)
        assert not (await fraud.check(call(identity="user:alice"))).allowed
        assert (await rejects("user:alice", 1)(fraud))[0].decision is Decision.ALLOW
    clock.advance(1)  # 10.5 s after it fired: the cooldown is over
    assert (await fraud.check(call(identity="user:alice"))).allowed
    # failing again once the refusal ended: counted (3 in the window), refused again
    assert (await rejects("user:alice", 1)(fraud))[0].decision is Decision.REFUSE
    assert not (await fraud.check(call(identity="user:alice"))).allowed


async def test_rejects_of_an_unknown_identity_only_alert(
    redis: aioredis.Redis, clock: Clock
) -> None:
    rule = {"name": "fa", "kind": "failed_attempts", "max_calls": 2, "window_s": 300,
            "action": "block"}  # fmt: skip
    fraud = await make_fraud(redis, clock, [rule])
    verdicts = await rejects("user:mallory", 4, account=None)(fraud)
    assert [v.decision for v in verdicts] == [Decision.ALLOW] * 4
    assert [bool(v.fired) for v in verdicts] == [False, False, True, True]
    await fraud.settle()
    assert fraud.alerts is not None
    (incident,) = await fraud.alerts.incidents()
    assert incident.key == "fraud.fa:user:mallory"
    assert incident.count == 2


async def test_an_event_rule_blocks_through_the_ledger(redis: aioredis.Redis, clock: Clock) -> None:
    rule = {"name": "spend", "kind": "spend", "max_amount": "5", "window_s": 3600,
            "action": "block"}  # fmt: skip
    fraud = await make_fraud(redis, clock, [rule])
    await add_account(fraud.ledger)
    cut: list[str] = []

    async def cut_account(account_id: str) -> int:
        cut.append(account_id)
        return 2

    fraud.cut_account = cut_account
    verdict = await fraud.cdr(cdr(charged_micros=6 * EUR), "1-0")
    await fraud.settle()
    assert verdict.decision is Decision.BLOCK and verdict.blocked_now
    assert cut == ["acc1"]
    acc = await fraud.ledger.get_account("acc1")
    assert (acc.status, acc.status_reason) == (Status.BLOCKED, "fraud")


async def test_a_redelivered_cdr_counts_once(redis: aioredis.Redis, clock: Clock) -> None:
    rule = {"name": "spend", "kind": "spend", "max_amount": "10", "window_s": 3600}
    fraud = await make_fraud(redis, clock, [rule])
    same = cdr(charged_micros=6 * EUR)
    for _ in range(3):
        assert not (await fraud.cdr(same, "7-0")).fired
    assert (await fraud.cdr(cdr(charged_micros=5 * EUR), "8-0")).fired  # 6 + 5 > 10


async def test_spend_buckets_slide_with_the_window(redis: aioredis.Redis, clock: Clock) -> None:
    rule = {"name": "spend", "kind": "spend", "max_amount": "10", "window_s": 3600}
    fraud = await make_fraud(redis, clock, [rule])
    await fraud.cdr(cdr(charged_micros=8 * EUR), "1-0")
    clock.advance(1800)
    assert (await fraud.cdr(cdr(charged_micros=3 * EUR), "2-0")).fired  # 11 in the hour
    clock.advance(1861)  # the 8 left the window (buckets of 60 s)
    assert not (await fraud.cdr(cdr(charged_micros=3 * EUR), "3-0")).fired  # 6


async def test_spend_sums_the_window_buckets_exactly_and_drops_those_that_left(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """Spend over seven hours of CDRs 170 s apart (about three buckets of 60 s): each CDR
    reports the sum of the buckets of its window (b - 59 .. b, and b - 60, which the
    window's start cuts through, while its last CDR is within the window), as a model
    sums them, and the events' hash keeps no bucket that left the window (the read is
    of the fields there are: fraud_events.lua fr_ev_read; docs/fraud-cost.md "Nineteenth
    round")."""
    rule = {"name": "spend", "kind": "spend", "max_amount": "0.000001", "window_s": 3600}
    fraud = await make_fraud(redis, clock, [rule])
    width_ms, buckets, last = 60_000, {}, {}
    for i in range(150):
        clock.advance(170)
        now = clock()
        b = now // width_ms
        buckets[b] = buckets.get(b, 0) + (i + 1) * 1000
        last[b] = now
        verdict = await fraud.cdr(cdr(charged_micros=(i + 1) * 1000), f"{next(_entry)}-0")
        edge = last.get(b - 60, 0) >= now - 3_600_000
        expected = sum(n for k, n in buckets.items() if b - 59 <= k <= b or (edge and k == b - 60))
        assert [(f.rule.name, f.count) for f in verdict.fired] == [("spend", expected)], i
    fields = await redis.hkeys(FK.events_key("acc1"))
    kept = sorted(int(f.rsplit(b":", 1)[1]) for f in fields)
    assert kept and all(k > b - 60 or (edge and k == b - 60) for k in kept), (b, kept)


async def test_spend_counts_the_bucket_the_windows_start_cuts_through(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """A spend cap of 50 an hour: 49 spent, then 2 spent 59.5 minutes later are 51 in
    the hour. The window summed its last 60 buckets of 60 s (b - 59 .. b), leaving out
    the one its start cuts through: the 49 were counted nowhere and the 51 passed
    unseen (a day's cap: what was spent in the window's first 24 minutes). That bucket
    counts now while its last CDR is within the window, as the authorize counters'
    (never less than the window holds); once that CDR has left, it no longer counts."""
    rule = {"name": "spend", "kind": "spend", "max_amount": "50", "window_s": 3600}
    fraud = await make_fraud(redis, clock, [rule])
    clock.advance(30)  # 30 s into a bucket of 60 s
    assert not (await fraud.cdr(cdr(charged_micros=49 * EUR), "1-0")).fired
    clock.advance(3570)  # 59.5 min later: the 49 still in the hour, 60 buckets on
    verdict = await fraud.cdr(cdr(charged_micros=2 * EUR), "2-0")
    assert [(f.rule.name, f.count) for f in verdict.fired] == [("spend", 51 * EUR)]
    clock.advance(31)  # the 49 left the hour: its bucket no longer counts
    verdict = await fraud.cdr(cdr(charged_micros=2 * EUR), "3-0")
    assert not verdict.fired


async def test_spend_in_the_unblocks_bucket_counts(redis: aioredis.Redis, clock: Clock) -> None:
    """Counts start over at an unblock, and what is spent after it counts from the first
    CDR on: the buckets are dropped at the unblock, so its own bucket counts again. It
    used to be left out whole: with a daily cap (buckets of 24 min) what an account
    spent in the 24 min after an unblock was counted in nothing, the whole day."""
    rule = {"name": "spend", "kind": "spend", "max_amount": "5", "window_s": 86400,
            "action": "block"}  # fmt: skip
    fraud = await make_fraud(redis, clock, [rule])
    await add_account(fraud.ledger)
    fraud.cut_account = None
    clock.now_ms -= clock.now_ms % 1_440_000  # a bucket's start (buckets of 24 min)
    assert (await fraud.cdr(cdr(charged_micros=6 * EUR), "1-0")).blocked_now
    await fraud.settle()
    clock.advance(1)
    await fraud.unblock("acc1", who="ops", why="confirmed")
    clock.advance(600)
    assert not (await fraud.cdr(cdr(charged_micros=4 * EUR), "2-0")).fired  # 4 (the 6: gone)
    verdict = await fraud.cdr(cdr(charged_micros=2 * EUR), "3-0")
    assert [(f.rule.name, f.count) for f in verdict.fired] == [("spend", 6 * EUR)]
    assert verdict.blocked_now


async def test_a_lift_starts_the_answer_ratio_over_from_its_own_bucket(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """`ctl fraud lift ACCOUNT`: the ASR counts start over, the lift's own bucket
    included (the calls after it were left out until the next bucket: an ASR collapse
    right after a lift went unseen)."""
    rule = {"name": "asr", "kind": "asr", "min_asr_pct": 50, "min_calls": 4,
            "window_s": 3600}  # fmt: skip
    fraud = await make_fraud(redis, clock, [rule])
    await add_account(fraud.ledger)
    clock.now_ms -= clock.now_ms % 60_000
    for n in range(4):
        await fraud.cdr(cdr(answered=n == 0), f"{next(_entry)}-0")  # 25 %: fired
    await fraud.lift("acc1", who="ops", why="checked")
    clock.advance(1)
    answers = [True, True, False, False, False]
    fired = [bool((await fraud.cdr(cdr(answered=a), f"{next(_entry)}-0")).fired) for a in answers]
    assert fired == [False, False, False, False, True]  # 2 of 4: 50 %; 2 of 5: 40 %


async def test_a_since_set_by_the_release_before_leaves_its_bucket_out(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """An unblock by the release before (no note of it in the events' hash, which still
    holds the buckets before it): the unblock's bucket is left out whole, as that release
    left it, so nothing from before the unblock counts again."""
    rule = {"name": "spend", "kind": "spend", "max_amount": "5", "window_s": 3600,
            "action": "block"}  # fmt: skip
    fraud = await make_fraud(redis, clock, [rule])
    await add_account(fraud.ledger)
    fraud.cut_account = None
    clock.now_ms -= clock.now_ms % 60_000  # a bucket's start (buckets of 60 s)
    key = FK.events_key("acc1")
    assert (await fraud.cdr(cdr(charged_micros=6 * EUR), "1-0")).blocked_now
    await fraud.settle()
    before = await redis.hgetall(key)
    clock.advance(1)
    await fraud.unblock("acc1", who="ops", why="confirmed")
    await redis.delete(key)
    await redis.hset(key, mapping=before)  # as the release before left it
    clock.advance(1)
    assert not (await fraud.cdr(cdr(charged_micros=4 * EUR), "2-0")).fired
    clock.advance(60)
    assert not (await fraud.cdr(cdr(charged_micros=4 * EUR), "3-0")).fired  # 4: the first not
    verdict = await fraud.cdr(cdr(charged_micros=2 * EUR), "4-0")
    assert [(f.rule.name, f.count) for f in verdict.fired] == [("spend", 6 * EUR)]


async def test_the_event_scripts_leave_out_the_authorize_rules(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """An EVALSHA defines every function of its script on each run: the scripts off the
    authorize path (event, note, unblock) hold fraud.lua's value helpers, not its
    authorize rules (~40k instructions a CDR; docs/fraud-cost.md "Nineteenth round")."""
    fraud = await make_fraud(redis, clock, [])
    for script in (fraud._event, fraud._note, fraud._unblock):
        assert "local function fr_verdict(" in script.script
        assert "local function fraud_check(" not in script.script
    assert "local function fraud_check(" in fraud._check.script


async def test_buckets_written_by_the_release_before_are_summed_as_it_summed_them(
    redis: aioredis.Redis, clock: Clock
) -> None:
    """The events' hash as any release writes it (SLOT:FIELD:BUCKET): the window sums the
    buckets b - 59 .. b of its own rule and field only; what left the window is deleted,
    a bucket ahead (another daemon's clock) and other rules' fields are left."""
    rule = {"name": "spend", "kind": "spend", "max_amount": "0.000001", "window_s": 3600}
    fraud = await make_fraud(redis, clock, [rule])
    (spend,) = fraud.book.base
    s, b = spend.slot, clock() // 60_000
    key = FK.events_key("acc1")
    kept = {f"{s}:m:{b - 59}": 5, f"{s}:m:{b}": 3, f"{s}:m:{b + 1}": 13, f"{s}:a:{b}": 17,
            f"{s + 1}:m:{b}": 19}  # fmt: skip
    await redis.hset(key, mapping={**kept, f"{s}:m:{b - 60}": 7, f"{s}:m:{b - 200}": 11})
    verdict = await fraud.cdr(cdr(charged_micros=2), "1-0")
    assert [(f.rule.name, f.count) for f in verdict.fired] == [("spend", 5 + 3 + 2)]
    # this CDR's 2 in bucket b, and when its last event came (field t)
    kept |= {f"{s}:m:{b}": 3 + 2, f"{s}:t:{b}": clock()}
    assert await redis.hgetall(key) == {k.encode(): str(v).encode() for k, v in kept.items()}


async def test_a_refusal_lives_as_long_as_its_cooldown(redis: aioredis.Redis, clock: Clock) -> None:
    """An event rule's refusal (a deny flag in the account's value) is kept until its
    cooldown ends: the value was written with the ttl of the event's keys (an hour: the
    seen ids), so a cooldown of a day ended after an hour without calls (the value, and
    its flag, expired)."""
    day = 86_400
    rule = {"name": "fa", "kind": "failed_attempts", "max_calls": 1, "window_s": 60,
            "cooldown_s": day, "action": "refuse"}  # fmt: skip
    fraud = await make_fraud(redis, clock, [rule])
    await add_account(fraud.ledger)
    for i in range(2):
        await fraud.refused("acc1", "user:alice", f"rej-{i}")
    assert await redis.pttl(FK.value_key("acc1")) > (day - 60) * 1000
