"""`chargingd ctl fraud rules|alerts|state|unblock` against a real admin server."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from fraud_harness import LIBERIA_PREMIUM, add_account, call, cdr, make_fraud

from chargingd.admin.methods import AdminMethods
from chargingd.admin.server import AdminServer
from chargingd.app.cli import main
from chargingd.core.clock import wall_ms
from chargingd.core.status import StatusRegistry
from chargingd.fraud import Fraud
from chargingd.ledger import Ledger, Mode, Status

RULES = [
    {"name": "premium", "kind": "destination", "max_calls": 1, "window_s": 600,
     "action": "block", "message": "no premium"},
    {"name": "spend", "kind": "spend", "max_amount": "20", "window_s": 3600, "cooldown_s": 60},
]  # fmt: skip


WHOLESALE = {"premium": {"max_calls": 50, "action": "alert"}}


@pytest.fixture
async def served(redis: aioredis.Redis, tmp_path: Path) -> AsyncIterator[tuple[Fraud, Path]]:
    async with serve_fraud(redis, tmp_path, {"wholesale": WHOLESALE}) as both:
        yield both


@contextlib.asynccontextmanager
async def serve_fraud(
    redis: aioredis.Redis,
    tmp_path: Path,
    tariff_overrides: dict[str, Any],
    tariffs: frozenset[str] | None = None,
    *,
    rules: list[dict[str, Any]] = RULES,
    account_overrides: dict[str, Any] | None = None,
) -> AsyncIterator[tuple[Fraud, Path]]:
    ledger = Ledger(redis, clock_ms=wall_ms)
    await ledger.load_scripts()
    fraud = await make_fraud(
        redis,
        wall_ms,  # type: ignore[arg-type]
        rules,
        ledger=ledger,
        tariff_overrides=tariff_overrides,
        account_overrides=account_overrides or {},
    )

    async def status() -> dict[str, Any]:
        return {}

    path = tmp_path / "admin.sock"
    methods = AdminMethods(ledger, status, tariffs=tariffs, alerts=fraud.alerts, fraud=fraud)
    server = AdminServer(
        methods, path, mode=0o660, stats=StatusRegistry().component("admin"), grace_s=2.0
    )
    await server.start()
    try:
        yield fraud, path
    finally:
        await server.stop()


async def ctl(path: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = await asyncio.to_thread(main, ["ctl", "--socket", str(path), *args])
    out, err = capsys.readouterr()
    return code, out, err


async def test_rules_with_overrides(
    served: tuple[Fraud, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, path = served
    code, out, err = await ctl(path, capsys, "--json", "fraud", "rules")
    assert code == 0, err
    rules = json.loads(out)["rules"]
    assert [(r["name"], r["at"], r["action"]) for r in rules] == [
        ("premium", "authorize", "block"),
        ("spend", "events", "alert"),
    ]
    assert rules[0]["thresholds"]["max_calls"] == 1
    # no account: the cap is in each account's own currency (no single one: no code, and
    # no currency's decimals guessed; it said "20.00")
    assert rules[1]["thresholds"] == {
        "window_s": 3600, "max_amount": "20", "currency": "", "cooldown_s": 60,
    }  # fmt: skip
    code, out, _ = await ctl(path, capsys, "--json", "fraud", "rules", "--tariff", "wholesale")
    premium = json.loads(out)["rules"][0]
    assert (premium["thresholds"]["max_calls"], premium["action"]) == (50, "alert")
    code, out, _ = await ctl(path, capsys, "fraud", "rules")
    assert code == 0 and "premium" in out and "high-risk countries: " in out


async def test_rules_of_an_account_show_its_spend_cap_in_its_currency(
    served: tuple[Fraud, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """`ctl fraud rules --account`: the spend cap in the account's currency, its minor
    unit and code (a yen account's said 20.00); without an account, the output says the
    cap is in each account's currency."""
    fraud, path = served
    for account, currency in (("yen", "JPY"), ("euro", "EUR"), ("dinar", "BHD")):
        await fraud.ledger.create_account(
            account, mode=Mode.PREPAID, currency=currency, balance_micros=10**8, who="test"
        )
    shown = {}
    for account in ("yen", "euro", "dinar"):
        code, out, err = await ctl(path, capsys, "--json", "fraud", "rules", "--account", account)
        assert code == 0, err
        spend = json.loads(out)["rules"][1]["thresholds"]
        shown[account] = (spend["max_amount"], spend["currency"])
        code, out, err = await ctl(path, capsys, "fraud", "rules", "--account", account)
        assert code == 0, err
        shown[account] += (" ".join(out.split()).count(f"max_amount={spend['max_amount']} "),)
    assert shown == {
        "yen": ("20", "JPY", 1), "euro": ("20.00", "EUR", 1), "dinar": ("20.000", "BHD", 1),
    }  # fmt: skip
    code, out, _ = await ctl(path, capsys, "fraud", "rules", "--account", "yen")
    assert "max_amount=20 JPY," in " ".join(out.split())
    code, out, _ = await ctl(path, capsys, "fraud", "rules")
    assert "max_amount=20 (each account's currency)," in " ".join(out.split())


async def test_rules_show_spend_caps_per_currency(
    redis: aioredis.Redis, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """max_amounts: the caps per currency as configured; of an account, its currency's,
    or that it has none (its spend is not counted by the rule)."""
    rules = [{"name": "spend", "kind": "spend", "window_s": 3600,
              "max_amounts": {"EUR": "50", "KWD": "15.5"}}]  # fmt: skip
    async with serve_fraud(redis, tmp_path, {}, rules=rules) as (fraud, path):
        for account, currency in (("yen", "JPY"), ("dinar", "KWD")):
            await fraud.ledger.create_account(
                account, mode=Mode.PREPAID, currency=currency, balance_micros=10**8, who="t"
            )
        code, out, err = await ctl(path, capsys, "--json", "fraud", "rules")
        assert code == 0, err
        assert json.loads(out)["rules"][0]["thresholds"] == {
            "window_s": 3600, "currency": "", "cooldown_s": 3600,
            "max_amounts": {"EUR": "50.00", "KWD": "15.500"},
        }  # fmt: skip
        code, out, _ = await ctl(path, capsys, "fraud", "rules")
        assert "max_amounts=50.00 EUR 15.500 KWD," in " ".join(out.split())
        for account, text in (("dinar", "max_amount=15.500 KWD,"),
                              ("yen", "max_amount=none in JPY (not counted),")):  # fmt: skip
            code, out, _ = await ctl(path, capsys, "fraud", "rules", "--account", account)
            assert code == 0 and text in " ".join(out.split()), out


async def test_rules_name_the_rules_off_here_and_the_overrides(
    redis: aioredis.Redis, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rules off in [fraud] and on per account: `ctl fraud rules` showed an empty table
    (the [fraud] rules alone) while authorize applied them to those accounts; it names
    the rules off here and who has overrides (--json: all of them)."""
    rules = [{**RULES[0], "enabled": False}, RULES[1]]
    accounts = {f"acc{i:02}": {"premium": {"enabled": True}} for i in range(12)}
    async with serve_fraud(
        redis, tmp_path, {"wholesale": WHOLESALE}, rules=rules, account_overrides=accounts
    ) as (fraud, path):
        await add_account(fraud.ledger, "acc00")
        code, out, err = await ctl(path, capsys, "--json", "fraud", "rules")
        assert code == 0, err
        found = json.loads(out)
        assert [r["name"] for r in found["rules"]] == ["spend"]
        assert found["disabled"] == ["premium"]
        assert found["account_overrides"] == {a: ["premium"] for a in accounts}
        assert found["tariff_overrides"] == {"wholesale": ["premium"]}
        code, out, _ = await ctl(path, capsys, "fraud", "rules")
        text = " ".join(out.split())
        assert "off here (enabled = false): premium" in text
        assert "overridden for 12 account(s) (see --account): acc00 (premium)," in text
        assert "acc09 (premium) and 2 more" in text
        assert "overridden for 1 tariff(s) (see --tariff): wholesale (premium)" in text
        code, out, _ = await ctl(path, capsys, "--json", "fraud", "rules", "--account", "acc00")
        found = json.loads(out)  # the account's own set: the rule in force, nothing hidden
        assert [r["name"] for r in found["rules"]] == ["premium", "spend"]
        assert "disabled" not in found


async def test_rules_of_an_account_take_its_tariff_or_default(
    redis: aioredis.Redis, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """authorize applies tariff_overrides.default to an account that names no tariff
    (7377443); `ctl fraud rules --account` showed it the [fraud] rules (max_calls 1)."""
    overrides = {"wholesale": WHOLESALE, "default": {"premium": {"max_calls": 7}}}
    async with serve_fraud(redis, tmp_path, overrides) as (fraud, path):
        await add_account(fraud.ledger, "plain")
        await add_account(fraud.ledger, "trade", tariff="wholesale")

        async def premium(*args: str) -> tuple[int, str, str]:
            code, out, err = await ctl(path, capsys, "--json", "fraud", "rules", *args)
            assert code == 0, err
            found = json.loads(out)
            (rule,) = [r for r in found["rules"] if r["name"] == "premium"]
            return rule["thresholds"]["max_calls"], rule["action"], found["tariff"]

        assert await premium("--account", "plain") == (7, "block", "default")
        assert await premium("--account", "trade") == (50, "alert", "wholesale")
        assert await premium("--account", "plain", "--tariff", "wholesale") == (
            50,
            "alert",
            "wholesale",
        )
        assert await premium() == (1, "block", "")
        # What authorize applies to the account without a tariff: the same 7.
        (rule,) = [r for r in fraud.book.rules_for("plain", "default") if r.name == "premium"]
        assert rule.limit == 7
        code, _, err = await ctl(path, capsys, "fraud", "rules", "--account", "nobody")
        assert code == 1 and "no account" in err


async def test_rules_of_a_tariff_the_daemon_does_not_load_is_an_error(
    redis: aioredis.Redis, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ctl fraud rules --tariff wholsale` (a typo) showed the [fraud] rules, exit 0, as
    if they were that tariff's: the operator previewing an override saw none applied."""
    plans = frozenset({"default", "wholesale"})
    async with serve_fraud(redis, tmp_path, {"wholesale": WHOLESALE}, plans) as (_, path):
        code, out, err = await ctl(path, capsys, "fraud", "rules", "--tariff", "wholsale")
        assert (code, out) == (2, "")  # invalid params (-32602): a usage error
        assert "unknown tariff 'wholsale' (loaded plans: default, wholesale)" in err
        code, out, err = await ctl(
            path, capsys, "--json", "fraud", "rules", "--tariff", "wholesale"
        )
        assert code == 0, err
        premium = json.loads(out)["rules"][0]
        assert (premium["thresholds"]["max_calls"], premium["action"]) == (50, "alert")


async def test_block_alerts_state_unblock(
    served: tuple[Fraud, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    fraud, path = served
    await add_account(fraud.ledger)
    for _ in range(3):
        await fraud.check(call(LIBERIA_PREMIUM))
    await fraud.settle()

    code, out, err = await ctl(path, capsys, "--json", "fraud", "alerts", "--since", "1h")
    assert code == 0, err
    (incident,) = json.loads(out)["incidents"]
    assert (incident["incident"], incident["count"]) == ("fraud.premium:acc1", 2)
    assert incident["summary"] == "premium: 2 calls in 600 s (limit 1): account blocked"

    code, out, _ = await ctl(path, capsys, "--json", "fraud", "state", "acc1")
    assert json.loads(out)["state"]["blocked_by"] == "premium"
    # docs/fraud.md writes `--json` after the command: argparse refused it (exit 2).
    for args in (("alerts", "--since", "1h"), ("state", "acc1"), ("rules",)):
        code, out, err = await ctl(path, capsys, "fraud", *args, "--json")
        assert code == 0, err
        assert isinstance(json.loads(out), dict)
    # The table gives the block's time as a UTC time too, not epoch ms alone.
    code, out, _ = await ctl(path, capsys, "fraud", "state", "acc1")
    blocked_ms = int(out.split("blocked_ms")[1].split()[1])
    stamp = datetime.fromtimestamp(blocked_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
    assert f"({stamp} UTC)" in out
    code, out, _ = await ctl(path, capsys, "fraud", "alerts", "--json")
    assert json.loads(out)["incidents"][0]["incident"] == "fraud.premium:acc1"

    code, _, err = await ctl(path, capsys, "fraud", "unblock", "acc1", "--reason", " ")
    assert code == 2 and "needs a reason" in err  # invalid params: a usage error
    code, out, err = await ctl(
        path, capsys, "--operator", "ops", "fraud", "unblock", "acc1", "--reason", "confirmed"
    )
    assert code == 0, err
    assert "account acc1 unblocked: status active" in out
    code, _, err = await ctl(path, capsys, "fraud", "unblock", "acc1", "--reason", "again")
    assert code == 1 and "not blocked by a fraud rule" in err
    code, _, err = await ctl(path, capsys, "fraud", "state", "nobody")
    assert code == 1 and "no account" in err
    history = await fraud.ledger.audit("acc1", count=5)
    assert [(e.who, e.after["status"]) for e in history if e.what == "status"] == [
        ("admin:ops", "active"),
        ("fraud", "blocked"),
    ]


async def test_account_resume_of_a_blocked_account_starts_its_counts_over(
    served: tuple[Fraud, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """`ctl account resume` of an account a rule blocked (the rules running) resumes it
    as `ctl fraud unblock` does: it kept the counts that blocked it, so its next premium
    call blocked it again at once, into the still open incident (no new alert, no
    webhook), and `fraud state` still said blocked_by."""
    fraud, path = served
    await add_account(fraud.ledger)
    for _ in range(2):
        await fraud.check(call(LIBERIA_PREMIUM))
    await fraud.settle()
    assert (await fraud.ledger.get_account("acc1")).status == Status.BLOCKED

    code, out, err = await ctl(
        path, capsys, "--operator", "ops", "--json", "account", "resume", "acc1"
    )
    assert code == 0, err
    assert json.loads(out)["status"] == "active"
    assert "blocked_by" not in await fraud.state("acc1")
    assert (await fraud.check(call(LIBERIA_PREMIUM))).allowed  # counted from now on
    assert fraud.alerts is not None
    (incident,) = await fraud.alerts.incidents()
    assert incident.state == "resolved"
    # the next block is a new incident (a new alert, a new webhook)
    assert not (await fraud.check(call(LIBERIA_PREMIUM))).allowed
    await fraud.settle()
    assert [i.state for i in await fraud.alerts.incidents()] == ["open", "resolved"]
    history = await fraud.ledger.audit("acc1", count=10)
    assert [(e.who, e.after["status"]) for e in history if e.what == "status"] == [
        ("fraud", "blocked"),
        ("admin:ops", "active"),
        ("fraud", "blocked"),
    ]


async def test_lift_of_an_identity_says_what_still_refuses_the_account(
    redis: aioredis.Redis, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`ctl fraud lift --identity`: the identity's refusal ends; a refusal of the whole
    account (spend's deny flag) stays, and the output says so and until when (the
    operator would otherwise expect the calls to go through)."""
    rules = [
        {"name": "spend", "kind": "spend", "max_amount": "1", "window_s": 3600,
         "cooldown_s": 600, "action": "refuse"},
        {"name": "fa", "kind": "failed_attempts", "max_calls": 1, "window_s": 600,
         "action": "refuse"},
    ]  # fmt: skip
    async with serve_fraud(redis, tmp_path, {}, rules=rules) as (fraud, path):
        await fraud.ledger.create_account(
            "acc1", mode=Mode.PREPAID, currency="EUR", balance_micros=10**8,
            identities=("user:alice", "user:bob"), who="test",
        )  # fmt: skip
        for sid in ("rej-1", "rej-2"):
            await fraud.refused("acc1", "user:alice", sid)
        await fraud.cdr(cdr(charged_micros=2_000_000), "1-0")  # spend: 2.00 > 1.00
        until = int((await fraud.state("acc1"))["deny:spend"])
        code, out, err = await ctl(
            path, capsys, "fraud", "lift", "--identity", "user:alice", "--reason", "her phone"
        )
        assert code == 0, err
        stamp = datetime.fromtimestamp(until / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")
        assert out.splitlines() == [
            "identity user:alice of account acc1: refusal lifted (fa), its counts start over",
            "still refused: every call of account acc1 (any identity) by spend until"
            f" {stamp} UTC: `ctl fraud lift acc1` ends these",
        ], out
        state = await fraud.state("acc1")
        assert "deny:spend" in state and "deny:fa|user:alice" not in state
        code, out, err = await ctl(path, capsys, "fraud", "lift", "acc1", "--reason", "paid")
        assert code == 0, err
        assert out.strip() == "account acc1: refusals lifted (spend), its counts start over"


async def test_a_daemon_without_fraud_says_so(
    redis: aioredis.Redis, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger = Ledger(redis)

    async def status() -> dict[str, Any]:
        return {}

    path = tmp_path / "admin.sock"
    server = AdminServer(
        AdminMethods(ledger, status), path, mode=0o660,
        stats=StatusRegistry().component("admin"), grace_s=2.0,
    )  # fmt: skip
    await server.start()
    try:
        code, _, err = await ctl(path, capsys, "fraud", "rules")
        assert code == 1 and "[fraud] enabled = false" in err
        code, _, err = await ctl(path, capsys, "fraud", "alerts")
        assert code == 1 and "no alert stream" in err
    finally:
        await server.stop()


async def test_lift_of_a_caller_ip_ends_its_refusal(
    redis: aioredis.Redis, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A velocity rule per caller IP that refuses holds while the address's callers keep
    retrying (refused attempts count): an SBC's or a hosted PBX's public address refused
    every account behind it, and no command ended it (`lift ACCOUNT` leaves the
    address's value as it is): the operator had to change the config and restart.
    `ctl fraud lift --caller-ip` starts the address's counts over and resolves its
    incident; the accounts' own counts stay."""
    rules = [
        {"name": "ip", "kind": "velocity", "scope": "caller_ip", "max_calls": 2,
         "window_s": 600, "action": "refuse"},
        {"name": "acct", "kind": "velocity", "max_calls": 50, "window_s": 600},
    ]  # fmt: skip
    async with serve_fraud(redis, tmp_path, {}, rules=rules) as (fraud, path):
        sbc = "198.51.100.20"
        verdicts = [await fraud.check(call(account_id=f"pbx{i}", caller_ip=sbc)) for i in range(4)]
        assert [v.allowed for v in verdicts] == [True, True, False, False]
        code, out, err = await ctl(
            path, capsys, "fraud", "lift", "--caller-ip", sbc, "--reason", "our SBC"
        )
        assert code == 0, err
        assert out.strip() == f"caller IP {sbc}: its counts cleared, its incidents resolved"
        assert (await fraud.check(call(account_id="pbx9", caller_ip=sbc))).allowed
        await fraud.settle()
        assert fraud.alerts is not None
        (incident,) = await fraud.alerts.incidents()
        assert (incident.key, incident.state) == (f"fraud.ip:{sbc}", "resolved")
        assert (await fraud.value("pbx0")).get("w")  # the account's own counts stay
        code, out, err = await ctl(
            path, capsys, "fraud", "lift", "--caller-ip", "sbc1", "--reason", "x"
        )
        assert code != 0 and "not an IP address" in err, (out, err)
        code, out, err = await ctl(
            path, capsys, "fraud", "lift", "pbx0", "--caller-ip", sbc, "--reason", "x"
        )
        assert code != 0 and "one of them" in err, (out, err)
