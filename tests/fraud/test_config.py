"""[fraud] configuration: an unknown kind, a missing or foreign threshold, a nonsensical
value or a bad override stops startup with the key named; the defaults are valid."""

from __future__ import annotations

from typing import Any

import phonenumbers
import pytest

from chargingd.core.config import ConfigError, config_from_dict
from chargingd.core.config.fraud import (
    DEFAULT_HIGH_RISK_COUNTRIES,
    DEFAULT_HIGH_RISK_PREFIXES,
    DEFAULT_RULES,
    KINDS,
)
from chargingd.fraud import RuleBook


def load(fraud: dict[str, Any]) -> Any:
    return config_from_dict({"fraud": fraud}, "c.toml").fraud


def test_the_default_rules_cover_every_kind_and_compile() -> None:
    cfg = load({"enabled": True})
    assert cfg.rules == DEFAULT_RULES
    assert {r.kind for r in cfg.rules} == set(KINDS)
    book = RuleBook(cfg)
    assert [r.slot for r in book.base] == list(range(1, len(DEFAULT_RULES) + 1))
    by_name = {r.name: r for r in book.base}
    # the default spend caps are per currency, each in its own unit (not 50 of any)
    assert dict(by_name["spend-hour"].caps) == {
        "CHF": 50_000_000, "EUR": 50_000_000, "GBP": 50_000_000, "JPY": 8000_000_000,
        "USD": 50_000_000,
    }  # fmt: skip
    in_eur = {r.name: r.limit for r in book.in_currency("acc", "default", "EUR")}
    assert (in_eur["spend-hour"], in_eur["spend-day"]) == (50_000_000, 200_000_000)
    in_jpy = {r.name: r.limit for r in book.in_currency("acc", "default", "JPY")}
    assert (in_jpy["spend-hour"], in_jpy["spend-day"]) == (8000_000_000, 30000_000_000)
    in_kwd = {r.name for r in book.in_currency("acc", "default", "KWD")}
    assert in_kwd == set(by_name) - {"spend-hour", "spend-day"}  # no cap in KWD
    assert by_name["risky-destinations"].action == "block"
    assert by_name["risky-destinations"].severity == "critical"
    assert by_name["new-country"].window_ms == 90 * 86400 * 1000


def test_the_default_high_risk_lists_name_real_ranges() -> None:
    regions = phonenumbers.SUPPORTED_REGIONS
    assert set(DEFAULT_HIGH_RISK_COUNTRIES) <= regions
    for prefix in DEFAULT_HIGH_RISK_PREFIXES:  # non-geographic country codes
        code = int(prefix[1:])
        assert phonenumbers.region_code_for_country_code(code) == "001", prefix


RULE = {"name": "r", "kind": "velocity", "max_calls": 5, "window_s": 60}


def test_tariff_overrides_must_name_a_loaded_plan() -> None:
    """An override keyed by a plan id no account can have (a typo) was accepted and
    never applied: the wholesale trunks kept the retail velocity limit."""
    rating = {"plans": {"wholesale": "w.toml"}, "default_plan": "d.toml"}
    override = {"velocity-account": {"max_calls": 3000}}
    typo = {"rating": rating, "fraud": {"tariff_overrides": {"wholsale": override}}}
    with pytest.raises(ConfigError) as err:
        config_from_dict(typo, "c.toml")
    assert "[fraud] tariff_overrides names no [rating] plan: wholsale" in str(err.value)
    assert "(plans: default, wholesale)" in str(err.value)
    for key in ("wholesale", "default"):
        good = {"rating": rating, "fraud": {"tariff_overrides": {key: override}}}
        assert key in config_from_dict(good, "c.toml").fraud.tariff_overrides


@pytest.mark.parametrize(
    ("fraud", "message"),
    [
        ({"rules": [{**RULE, "kind": "velocty"}]}, "unknown kind 'velocty'"),
        ({"rules": [{**RULE, "name": "Bad Name"}]}, "rule name 'Bad Name'"),
        ({"rules": [{**RULE, "action": "kill"}]}, "action must be one of"),
        ({"rules": [{k: v for k, v in RULE.items() if k != "window_s"}]}, "needs window_s"),
        ({"rules": [{**RULE, "max_calls": 0}]}, "max_calls must be between 1"),
        ({"rules": [{**RULE, "window_s": 0}]}, "window_s must be between 1"),
        ({"rules": [{**RULE, "min_asr_pct": 5}]}, "min_asr_pct does not apply to a velocity"),
        ({"rules": [{**RULE, "scope": "planet"}]}, "scope must be one of"),
        ({"rules": [{**RULE, "severity": "loud"}]}, "severity must be"),
        ({"rules": [RULE, RULE]}, "rule names must be unique: r"),
        ({"rules": [{**RULE, "maxcalls": 5}]}, "unknown key fraud.rules[0].maxcalls"),
        (
            {
                "rules": [
                    {"name": "a", "kind": "asr", "min_asr_pct": 101, "min_calls": 5, "window_s": 60}
                ]
            },
            "min_asr_pct must be between 1 and 100",
        ),
        (
            {
                "rules": [
                    {
                        "name": "a",
                        "kind": "asr",
                        "min_asr_pct": 10,
                        "min_calls": 5,
                        "window_s": 60,
                        "action": "block",
                    }
                ]
            },
            "blocking on ASR needs min_calls >= 10",
        ),
        (
            {"rules": [{"name": "s", "kind": "spend", "max_amount": "0", "window_s": 60}]},
            "max_amount must be positive",
        ),
        (
            {"rules": [{"name": "s", "kind": "spend", "max_amount": "1e3", "window_s": 60}]},
            "max_amount: not a plain decimal",
        ),
        (
            {"rules": [{"name": "s", "kind": "spend", "window_s": 60}]},
            "rule 's': a spend rule needs max_amount (in each account's currency) or max_amounts",
        ),
        (
            {"rules": [{"name": "s", "kind": "spend", "max_amounts": {"YEN": "1"}, "window_s": 9}]},
            "rule 's': max_amounts: 'YEN' is not an ISO 4217 currency code",
        ),
        (
            {"rules": [{"name": "s", "kind": "spend", "max_amounts": {"JPY": "0"}, "window_s": 9}]},
            "rule 's': max_amounts.JPY must be positive",
        ),
        (
            {"rules": [{"name": "s", "kind": "spend", "max_amounts": {"JPY": 80}, "window_s": 9}]},
            "fraud.rules[0].max_amounts.JPY must be str, not int",
        ),
        (
            {"tariff_overrides": {"default": {"spend-day": {"max_amounts": {"jpy": "9"}}}}},
            "tariff_overrides.default.spend-day] override: max_amounts: 'jpy' is not an ISO 4217",
        ),
        (
            {
                "rules": [
                    {
                        "name": "d",
                        "kind": "destination",
                        "max_calls": 1,
                        "window_s": 60,
                        "match": ["premium"],
                    }
                ]
            },
            "match takes",
        ),
        ({"high_risk_countries": ["Cuba"]}, "'Cuba' is not an ISO 3166 code"),
        # Two capitals but no region: no call would ever match it (GB is the UK).
        ({"high_risk_countries": ["CU", "UK"]}, "high_risk_countries: 'UK' is not an ISO 3166"),
        (
            {"rules": [{"name": "n", "kind": "new_country", "exempt_countries": ["DE", "XX"]}]},
            "rule 'n': exempt country 'XX' is not an ISO 3166 code",
        ),
        # ISO codes, but no call is ever matched to them (and the error said "not ISO").
        (
            {"high_risk_countries": ["CU", "AQ"]},
            "high_risk_countries: 'AQ' has no telephone numbering plan (phonenumbers)",
        ),
        (
            {"rules": [{"name": "n", "kind": "new_country", "exempt_countries": ["UM"]}]},
            "rule 'n': exempt country 'UM' has no telephone numbering plan",
        ),
        ({"high_risk_prefixes": ["882"]}, "'882' is not +DIGITS"),
        ({"refuse_message": ""}, "refuse_message and block_message"),
        (
            {"rules": [{**RULE, "h323_return_code": 256}]},
            "rule 'r': h323_return_code must be an integer 0-255, got 256",
        ),
        (
            {"rules": [{**RULE, "h323_return_code": -1}]},
            "rule 'r': h323_return_code must be an integer 0-255, got -1",
        ),
        (
            {"rules": [{**RULE, "h323_return_code": "9"}]},
            "fraud.rules[0].h323_return_code must be int",
        ),
        (
            {"rules": [RULE], "account_overrides": {"a1": {"nope": {"max_calls": 3}}}},
            "account_overrides.a1.nope: no rule named 'nope'",
        ),
        (
            {"rules": [RULE], "tariff_overrides": {"t": {"r": {"min_calls": 3}}}},
            "tariff_overrides.t.r: min_calls does not apply to a velocity rule",
        ),
        (
            {"rules": [RULE], "tariff_overrides": {"t": {"r": {"max_calls": 0}}}},
            "max_calls must be between 1",
        ),
        (
            {"rules": [RULE], "tariff_overrides": {"t": {"r": {"action": "x"}}}},
            "action must be one of",
        ),
        # What a rule counts is its own: an override changes how much, not what.
        (
            {"rules": [RULE], "tariff_overrides": {"t": {"r": {"scope": "identity"}}}},
            "tariff_overrides.t.r: scope cannot be overridden",
        ),
        (
            {
                "rules": [{"name": "d", "kind": "destination", "max_calls": 1, "window_s": 60}],
                "account_overrides": {"a1": {"d": {"match": ["premium_rate"]}}},
            },
            "account_overrides.a1.d: match cannot be overridden",
        ),
        (
            {
                "rules": [{"name": "n", "kind": "new_country"}],
                "account_overrides": {"a1": {"n": {"exempt_countries": ["UK"]}}},
            },
            "account_overrides.a1.n: rule 'n': exempt country 'UK' is not an ISO 3166 code",
        ),
        (
            {"rules": [RULE], "account_overrides": {"a1": {"r": {"range_digits": 2}}}},
            "account_overrides.a1.r: range_digits does not apply to a velocity rule",
        ),
    ],
)
def test_bad_rules_stop_startup_naming_the_problem(fraud: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(fraud)
    assert "c.toml" in str(err.value)
    assert message in str(err.value)


def test_an_overrides_max_amount_is_the_cap_of_its_accounts_whatever_the_rules_list() -> None:
    """An override's max_amount caps its account (its tariff's accounts) in their own
    currency, also one the rule's max_amounts lists (the shipped spend rules list EUR,
    USD, GBP, CHF and JPY): it changed nothing for those, so raising one EUR customer's
    cap with max_amount was silently ignored. A currency the override's own max_amounts
    lists keeps that cap; a tariff's max_amount gives way to an account's."""
    rule = {"name": "s", "kind": "spend", "window_s": 60,
            "max_amounts": {"EUR": "50.00", "JPY": "8000"}}  # fmt: skip
    book = RuleBook(
        load(
            {
                "rules": [rule],
                "account_overrides": {
                    "big": {"s": {"max_amount": "5000.00"}},
                    "mixed": {"s": {"max_amount": "70.00", "max_amounts": {"JPY": "9000"}}},
                    "jp": {"s": {"max_amounts": {"JPY": "20000"}}},
                },
                "tariff_overrides": {"wholesale": {"s": {"max_amount": "900.00"}}},
            }
        )
    )

    def cap(account: str, currency: str, tariff: str = "") -> int:
        return book.in_currency(account, tariff, currency)[0].limit

    assert (cap("other", "EUR"), cap("other", "JPY")) == (50_000_000, 8_000_000_000)
    assert (cap("big", "EUR"), cap("big", "JPY")) == (5_000_000_000, 5_000_000_000)
    assert (cap("mixed", "EUR"), cap("mixed", "JPY")) == (70_000_000, 9_000_000_000)
    assert (cap("other", "EUR", "wholesale"), cap("big", "EUR", "wholesale")) == (
        900_000_000,
        5_000_000_000,
    )
    # jp's tariff's max_amount gives way to jp's own JPY cap, and max_amounts alone
    # still adds to the rule's (EUR kept)
    assert (cap("jp", "JPY", "wholesale"), cap("jp", "EUR")) == (20_000_000_000, 50_000_000)


def test_destination_may_refuse_the_first_risky_call() -> None:
    cfg = load({"rules": [{"name": "d", "kind": "destination", "max_calls": 0, "window_s": 60}]})
    assert cfg.rules[0].max_calls == 0


def test_spend_caps_per_currency_and_in_each_accounts_own() -> None:
    """max_amounts caps the accounts of the currencies it lists (in theirs), max_amount
    the others (in each one's own); an override's max_amounts adds to the rule's."""
    rule = {"name": "s", "kind": "spend", "window_s": 60, "max_amount": "50",
            "max_amounts": {"JPY": "8000", "KWD": "15.5"}}  # fmt: skip
    over = {"acme": {"s": {"max_amounts": {"JPY": "20000"}}}}
    book = RuleBook(load({"rules": [rule], "account_overrides": over}))
    caps = {c: book.in_currency("acc", "", c)[0].limit for c in ("JPY", "KWD", "EUR", "")}
    assert caps == {"JPY": 8_000_000_000, "KWD": 15_500_000, "EUR": 50_000_000, "": 50_000_000}
    acme = {c: book.in_currency("acme", "", c)[0].limit for c in ("JPY", "KWD")}
    assert acme == {"JPY": 20_000_000_000, "KWD": 15_500_000}
    assert book.in_currency("acme", "", "JPY") is book.in_currency("acme", "", "JPY")  # once


def test_an_overrides_shadow_false_under_the_shadow_switch_is_warned_at_startup() -> None:
    """[fraud] shadow = true puts every rule in shadow mode, overrides included. An
    operator taking one account or tariff live with an override's shadow = false (the
    documented way to tune per account) kept it alerting only, with no word at startup:
    its fraud was let through while the config said otherwise. The switch still wins
    (it stops every refusal at once); the startup log now says the override does
    nothing, and how to run some rules live."""
    fraud = {
        "enabled": True,
        "shadow": True,
        "rules": [RULE],
        "account_overrides": {"acme": {"r": {"shadow": False, "max_calls": 9}}},
        "tariff_overrides": {"retail": {"r": {"shadow": True}}},
    }
    cfg = config_from_dict({"fraud": fraud, "rating": {"plans": {"retail": "r.toml"}}}, "c.toml")
    (warning,) = cfg.warnings
    assert warning.startswith("c.toml: [fraud.account_overrides.acme.r] shadow = false has no")
    assert "[fraud] shadow = false" in warning
    (rule,) = RuleBook(cfg.fraud).rules_for("acme", "default")
    assert rule.shadow and rule.limit == 9
    off = config_from_dict(
        {"fraud": fraud | {"shadow": False}, "rating": {"plans": {"retail": "r.toml"}}}
    )
    assert off.warnings == ()
    assert not RuleBook(off.fraud).rules_for("acme", "default")[0].shadow
