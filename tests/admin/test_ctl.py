"""`chargingd ctl` through chargingd.app.cli.main against an in-process admin server."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from admin_harness import Harness, running_admin
from radius_e2e_harness import BIN
from rich.console import Console

from chargingd.admin.render import render_status
from chargingd.app.cli import main
from chargingd.core.exits import EXIT_LEAKAGE, EXIT_REJECTS, EXIT_UNAVAILABLE, EXIT_USAGE
from chargingd.ledger import Mode


@pytest.fixture
async def admin(redis: aioredis.Redis, tmp_path: Path) -> AsyncIterator[Harness]:
    async with running_admin(redis, tmp_path) as harness:
        yield harness


class Ctl:
    """Runs `chargingd ctl --socket S ...` in a thread (the server runs on this loop)."""

    def __init__(self, path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.path = path
        self.capsys = capsys

    async def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        code = await asyncio.to_thread(main, ["ctl", "--socket", str(self.path), *args])
        out, err = self.capsys.readouterr()
        return code, out, err

    async def json(self, *args: str) -> Any:
        code, out, err = await self("--json", *args)
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def ctl(admin: Harness, capsys: pytest.CaptureFixture[str]) -> Ctl:
    return Ctl(admin.path, capsys)


CREATE = (
    "account", "create", "carol", "--mode", "prepaid", "--currency", "EUR",
    "--balance", "3.50", "--identity", "user:carol", "--identity", "ani:+4930444444",
)  # fmt: skip


async def test_create_and_get_as_table_and_json(ctl: Ctl) -> None:
    code, out, err = await ctl(*CREATE)
    assert code == 0, err
    assert "account carol" in out
    assert "3.50 EUR" in out
    assert "user:carol, ani:+4930444444" in out
    acc = await ctl.json("account", "get", "carol")
    assert acc["balance"] == "3.50"
    assert acc["identities"] == ["user:carol", "ani:+4930444444"]
    code, out, _ = await ctl("account", "get", "carol")
    assert code == 0 and "available" in out and "prepaid" in out


async def test_topup_generates_a_txn_id_and_retry_applies_once(ctl: Ctl) -> None:
    await ctl(*CREATE)
    code, out, err = await ctl("account", "topup", "carol", "1.50", "--reason", "voucher")
    assert code == 0, err
    assert "5.00 EUR" in out
    txn_id = err.split()[1]
    assert txn_id.startswith("ctl-")
    for _ in range(2):
        acc = await ctl.json("account", "topup", "carol", "1.50", "--txn-id", txn_id)
        assert acc["balance"] == "5.00"


async def test_adjust_suspend_resume_history(ctl: Ctl) -> None:
    await ctl(*CREATE)
    acc = await ctl.json(
        "--operator", "jo", "account", "adjust", "carol", "-0.75", "--reason", "goodwill"
    )
    assert acc["balance"] == "2.75"
    assert (await ctl.json("account", "suspend", "carol", "--reason", "abuse"))[
        "status"
    ] == "suspended"
    assert (await ctl.json("account", "resume", "carol"))["status"] == "active"
    hist = await ctl.json("account", "history", "carol", "--count", "3")
    assert [e["why"] for e in hist["entries"]][2] == "goodwill"
    assert hist["entries"][2]["who"] == "admin:jo"
    assert hist["entries"][0]["who"] == f"admin:{os.getuid()}"
    code, out, _ = await ctl("account", "history", "carol")
    assert code == 0
    assert "goodwill" in out and "admin:jo" in out and "newest first" in out


async def test_update_and_list(ctl: Ctl) -> None:
    await ctl(*CREATE)
    code, _, err = await ctl(
        "account", "create", "acme", "--mode", "postpaid", "--currency", "EUR",
        "--credit-limit", "500",
    )  # fmt: skip
    assert code == 0, err
    acc = await ctl.json("account", "update", "carol", "--tariff", "gold", "--max-calls", "2")
    assert acc["tariff"] == "gold" and acc["max_calls"] == 2
    listed = await ctl.json("account", "list")
    assert sorted(a["id"] for a in listed["accounts"]) == ["acme", "carol"]
    code, out, _ = await ctl("account", "list")
    assert code == 0
    assert "acme" in out and "carol" in out and "500.00" in out and "postpaid" in out


async def test_status_table(ctl: Ctl) -> None:
    code, out, err = await ctl("status")
    assert code == 0, err
    assert "uptime_s" in out and "redis version" in out and "redis aof_enabled" in out
    status = await ctl.json("status")
    assert status["components"]["admin"]["requests"] >= 1


async def test_refusals_exit_1_with_message(ctl: Ctl) -> None:
    await ctl(*CREATE)
    code, out, err = await ctl("account", "get", "nobody")
    assert code == 1 and out == ""
    assert err.startswith("chargingd ctl: ") and "nobody" in err
    code, _, err = await ctl(*CREATE)
    assert code == 1 and "carol" in err
    code, _, err = await ctl("account", "topup", "carol", "1", "--currency", "USD")
    assert code == 1
    assert (await ctl.json("account", "get", "carol"))["balance"] == "3.50"


async def test_usage_errors_exit_2(ctl: Ctl) -> None:
    await ctl(*CREATE)
    code, _, err = await ctl("account", "topup", "carol", "1.1234567")
    assert code == 2 and "more than 6 decimals" in err
    code, _, err = await ctl("account", "topup", "carol", "-1")
    assert code == 2 and "negative" in err
    # A zero adjustment exited 1 after printing a txn_id to retry with and sending it.
    code, _, err = await ctl("account", "adjust", "carol", "-0.00", "--reason", "x")
    assert (code, err) == (2, "chargingd ctl: an adjustment amount must not be zero\n")
    code, _, err = await ctl("account", "update", "carol")
    assert code == 2 and "nothing to update" in err
    # Which amount was bad: the option is named (a create may give two amounts).
    code, _, err = await ctl("account", "update", "carol", "--credit-limit", "-1")
    assert code == 2 and "--credit-limit: amount must not be negative" in err
    code, _, err = await ctl(
        "account", "create", "dave", "--mode", "prepaid", "--currency", "EUR",
        "--balance", "1.1234567",
    )  # fmt: skip
    assert code == 2 and "--balance: amount '1.1234567' has more than 6 decimals" in err
    with pytest.raises(SystemExit) as exit_info:
        await ctl("account", "create", "dave", "--mode", "prepay", "--currency", "EUR")
    assert exit_info.value.code == 2
    assert (await ctl.json("account", "get", "carol"))["balance"] == "3.50"


async def test_unknown_currency_is_refused_and_creates_nothing(ctl: Ctl, admin: Harness) -> None:
    # Any three capitals were accepted: XYZ made an account no tariff could ever rate.
    code, out, err = await ctl(
        "account", "create", "dave", "--mode", "prepaid", "--currency", "XYZ",
    )  # fmt: skip
    assert (code, out) == (2, "")
    assert "'XYZ' is not an ISO 4217 currency code" in err
    code, _, err = await ctl("account", "get", "dave")
    assert code == 1 and "no account" in err
    await ctl(*CREATE)
    code, _, err = await ctl("account", "update", "carol", "--currency", "XYZ")
    assert code == 2 and "ISO 4217" in err
    assert (await ctl.json("account", "get", "carol"))["currency"] == "EUR"
    # An account stored earlier in an odd code stays readable and usable.
    await admin.ledger.create_account("old", mode=Mode.PREPAID, currency="XYZ", who="t", why="")
    assert (await ctl.json("account", "get", "old"))["currency"] == "XYZ"
    acc = await ctl.json("account", "topup", "old", "1", "--currency", "XYZ", "--txn-id", "t1")
    assert acc["balance"] == "1.00"


async def test_values_the_daemon_finds_out_of_range_exit_2(ctl: Ctl) -> None:
    # The daemon's invalid params (-32602) exited 1 like a refusal of a valid request.
    await ctl(*CREATE)
    code, out, err = await ctl("account", "history", "carol", "--count", "2000")
    assert (code, out) == (2, "")
    assert "count must be between 1 and" in err
    code, _, err = await ctl("account", "list", "--count", "0")
    assert code == 2 and "count must be between 1 and" in err
    # A refusal of a well-formed request stays 1.
    code, _, err = await ctl("account", "history", "nobody")
    assert code == 1 and "no account" in err


@pytest.mark.parametrize(
    "args",
    [
        ("subscription", "add", "acme", "9.90", "--description", "x", "--from", "2026-13-01"),
        ("subscription", "add", "acme", "9.90", "--description", "x", "--from", "2026-11-16",
         "--to", "16.11.2026"),
        ("subscription", "end", "1", "--on", "2026-02-30"),
        ("charge", "add", "acme", "49.00", "--description", "x", "--date", "20261103"),
        ("credit", "add", "acme", "1.00", "--description", "x", "--date", "yesterday"),
        ("billing", "set", "acme", "--billing-day", "29"),
    ],
)  # fmt: skip
def test_a_malformed_billing_date_or_day_is_a_usage_error_before_anything_is_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]
) -> None:
    """Bad options are checked before anything is sent (exit 2, docs/operations.md);
    dates went to the daemon, which refused them: exit 1, or 69 (then 3) with no daemon."""
    with pytest.raises(SystemExit) as exit_info:
        main(["ctl", "--socket", str(tmp_path / "none.sock"), *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "not a date" in err or "must be a day 1..28, not '29'" in err


def ctl_process(path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`chargingd ctl` as a cron job runs it: its own process, its exit status."""
    return subprocess.run(
        [str(BIN), "ctl", "--socket", str(path), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_no_daemon_exits_69_never_a_code_another_command_uses(tmp_path: Path) -> None:
    """No socket: exit 69 (EX_UNAVAILABLE) with what to check. It was 3, which `chargingd
    assure` exits with for "leakage found": a script could not tell the two apart."""
    path = tmp_path / "none.sock"
    done = ctl_process(path, "status")
    assert done.returncode == EXIT_UNAVAILABLE == 69 and done.stdout == ""
    assert done.returncode not in (EXIT_LEAKAGE, EXIT_REJECTS, EXIT_USAGE)
    assert done.stderr == (
        f"chargingd ctl: cannot reach chargingd at {path}: No such file or directory\n"
        f"is chargingd serve running? socket {path} (nothing was sent)\n"
    ), done.stderr


def test_a_socket_nobody_listens_on_exits_69(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The socket file a killed daemon left behind: connection refused, exit 69."""
    path = tmp_path / "stale.sock"
    left = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left.bind(str(path))
    left.close()  # the file stays; nobody listens
    assert path.exists()
    code = main(["ctl", "--socket", str(path), "account", "get", "alice"])
    err = capsys.readouterr().err
    assert code == 69
    assert f"cannot reach chargingd at {path}: Connection refused" in err
    assert "is chargingd serve running?" in err and "(nothing was sent)" in err


def test_a_daemon_that_never_answers_exits_69_and_says_it_may_have_applied_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A hung daemon: the connection is accepted (the listen backlog) but no answer
    comes within --timeout. Exit 69, and the request was sent: a top-up may have been
    applied, so the hint gives its --txn-id (applied at most once) for the retry."""
    path = tmp_path / "hung.sock"
    hung = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    hung.bind(str(path))
    hung.listen(4)  # never accepted, never read
    try:
        code = main(["ctl", "--socket", str(path), "--timeout", "0.3", "status"])
        err = capsys.readouterr().err
        assert code == 69
        assert f"cannot reach chargingd at {path}: no answer within 0.3 s" in err
        assert "the request was sent but not answered: the daemon may have applied it" in err
        assert "check before sending it again" in err
        topup = ["account", "topup", "alice", "5.00", "--txn-id", "tx-42"]
        code = main(["ctl", "--socket", str(path), "--timeout", "0.3", *topup])
        err = capsys.readouterr().err
        assert code == 69 and "send it again with --txn-id tx-42" in err, err
    finally:
        hung.close()


async def test_socket_from_config(
    admin: Harness, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[admin]\nsocket_path = "{admin.path}"\n')
    code = await asyncio.to_thread(main, ["ctl", "--config", str(cfg), "--json", "status"])
    out = capsys.readouterr().out
    assert code == 0 and json.loads(out)["pid"] == os.getpid()


def test_status_table_shows_the_http_port(capsys: pytest.CaptureFixture[str]) -> None:
    """docs/monitoring.md: `ctl status` shows the bound port under `http`."""
    status = {"version": "0", "http": {"bind": "127.0.0.1", "port": 9812, "dashboard": True}}
    render_status(Console(width=200), status)
    row = next(line for line in capsys.readouterr().out.splitlines() if " http " in line)
    assert "bind=127.0.0.1" in row and "port=9812" in row and "dashboard=True" in row


def test_status_table_shows_the_diameter_streams_lost_and_5001_answers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """docs/diameter.md: what was refused on the wire is counted in `ctl status`. A
    peer whose message lengths break the stream (connection closed) and one whose
    CCRs were answered 5001 showed malformed=0 and nothing else in the table."""
    front = {"received": 9, "malformed": 0, "framing_lost": 5, "unsupported_avp": 3}
    render_status(Console(width=300), {"version": "0", "diameter": {"frontend": front}})
    row = next(line for line in capsys.readouterr().out.splitlines() if " diameter " in line)
    assert "framing_lost=5" in row and "unsupported_avp=3" in row


async def test_resume_at_the_credit_limit_says_why_it_stays_suspended(ctl: Ctl) -> None:
    """`account resume` of a postpaid account at its credit limit answers the account
    still suspended (the credit rule): ctl said nothing and exited 0 as if resumed."""
    code, _, err = await ctl(
        "account", "create", "pp", "--mode", "postpaid", "--currency", "EUR",
        "--credit-limit", "1", "--balance", "-1",
    )  # fmt: skip
    assert code == 0, err
    code, out, err = await ctl("account", "resume", "pp")
    assert code == 0 and "suspended (credit)" in out
    assert err == (
        "chargingd ctl: account pp stays suspended (credit): its balance -1.00 EUR is at its "
        "credit limit of 1.00 EUR; a top-up, or a higher --credit-limit, makes it active again\n"
    )
    await ctl("account", "topup", "pp", "0.50")
    code, out, err = await ctl("account", "resume", "pp")
    assert code == 0 and err == "" and "active" in out


@pytest.mark.parametrize("bad", ["0", "-1", "abc", "nan", "inf"])
async def test_a_timeout_must_be_positive_seconds(ctl: Ctl, bad: str) -> None:
    """--timeout 0 said the running daemon was unreachable (a non-blocking socket),
    --timeout -1 printed a ValueError traceback: both are usage errors (exit 2)."""
    with pytest.raises(SystemExit) as done:
        await ctl("--timeout", bad, "status")
    assert done.value.code == 2
    assert f"argument --timeout: must be a number of seconds > 0, not {bad!r}" in (
        ctl.capsys.readouterr().err
    )
    code, _, err = await ctl("--timeout", "0.5", "status")
    assert code == 0, err


async def test_amounts_show_the_decimals_of_the_account_currency(ctl: Ctl) -> None:
    """A yen has no minor unit and a Bahraini dinar three decimals: `1000.00 JPY` and
    `1.50 BHD` were printed. Amounts with more digits keep them (9.8512 EUR)."""
    for account, currency, balance in (("yen", "JPY", "1000"), ("fils", "BHD", "1.5")):
        code, _, err = await ctl(
            "account", "create", account, "--mode", "prepaid", "--currency", currency,
            "--balance", balance,
        )  # fmt: skip
        assert code == 0, err
    code, out, _ = await ctl("account", "get", "yen")
    assert code == 0 and "1000 JPY" in out and "1000.00" not in out
    acc = await ctl.json("account", "topup", "yen", "0.5", "--reason", "odd")
    assert (acc["balance"], acc["reserved"], acc["topups"]) == ("1000.5", "0", "0.5")
    code, out, _ = await ctl("account", "get", "fils")
    assert code == 0 and "1.500 BHD" in out
    listed = {a["id"]: a for a in (await ctl.json("account", "list"))["accounts"]}
    assert (listed["fils"]["balance"], listed["yen"]["credit_limit"]) == ("1.500", "0")
    hist = await ctl.json("account", "history", "yen", "--count", "1")
    assert hist["entries"][0]["after"]["balance"] == "1000.5"
    assert hist["entries"][0]["details"]["amount"] == "0.5"
    await ctl("account", "create", "eu", "--mode", "prepaid", "--currency", "EUR", "--balance",
              "9.8512")  # fmt: skip
    assert (await ctl.json("account", "get", "eu"))["balance"] == "9.8512"
