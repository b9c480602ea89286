"""An account's tariff must name a plan the daemon loaded, else every call is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from radius_e2e_harness import Daemon, write_setup

from chargingd.admin.params import INVALID_PARAMS, RpcError


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
    finally:
        daemon.kill()
