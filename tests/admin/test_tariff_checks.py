"""An account's tariff must name a plan the daemon loaded, else every call is refused."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from radius_e2e_harness import Daemon, write_setup

from chargingd.admin.params import INVALID_PARAMS, RpcError

BIN = Path(sys.executable).parent / "chargingd"


def test_tariff_must_name_a_loaded_plan(tmp_path: Path) -> None:
    setup = write_setup(tmp_path)  # [rating] default_plan only: plan id "default"
    daemon = Daemon(setup, tmp_path / "d.log")
    daemon.start()
    try:
        daemon.wait_ready()
        with pytest.raises(RpcError) as err:
            daemon.create_account("tara", "1.00", tariff="wholesale")
        assert err.value.code == INVALID_PARAMS
        assert "unknown tariff 'wholesale' (loaded plans: default)" in err.value.message
        with pytest.raises(RpcError, match="no account 'tara'"):
            daemon.call("account.get", {"id": "tara"})  # nothing was created

        daemon.create_account("tara", "1.00")
        assert daemon.call("account.update", {"id": "tara", "tariff": "default"})["tariff"] == (
            "default"
        )
        with pytest.raises(RpcError, match="unknown tariff 'gold'"):
            daemon.call("account.update", {"id": "tara", "tariff": "gold"})
        assert daemon.call("account.get", {"id": "tara"})["tariff"] == "default"  # unchanged

        # An account in another currency than its plan's: every live call is refused
        # ("tariff currency mismatch", said only in the daemon log). The answer says so
        # (not refused: a mediation source's own plan may rate such an account).
        usd = daemon.create_account("usd", "1.00", currency="USD")
        assert usd["currency"] == "USD"
        assert usd["warnings"] == [
            "currency USD is not that of the default plan ([rating] default_plan), which "
            "prices in EUR: its live calls will be refused (tariff currency mismatch)"
        ]
        daemon.create_account("zero", "0")  # a currency changes only at zero balance
        updated = daemon.call("account.update", {"id": "zero", "currency": "USD"})
        assert "currency USD is not that of the default plan" in updated["warnings"][0]
        updated = daemon.call("account.update", {"id": "usd", "tariff": "default"})
        assert "currency USD is not that of the tariff 'default'" in updated["warnings"][0]
        back = daemon.call("account.update", {"id": "zero", "currency": "EUR"})
        assert "warnings" not in back
        assert "warnings" not in daemon.call("account.get", {"id": "usd"})
        # ctl prints the warning on stderr; the account was created (exit 0).
        done = subprocess.run(
            [str(BIN), "ctl", "--config", str(setup.config), "account", "create", "chf",
             "--mode", "prepaid", "--currency", "CHF"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stderr.startswith("chargingd ctl: warning: currency CHF is not that of")
    finally:
        daemon.kill()
