"""Dropped requests: counted per client, warned about once per interval with a count."""

from __future__ import annotations

import logging

import pytest

from chargingd.radius.droplog import BAD_AUTHENTICATOR, MISSING_MESSAGE_AUTHENTICATOR, DropLog


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_first_drop_is_said_at_once_then_once_per_interval_with_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeMonotonic()
    drops = DropLog(interval_s=60.0, monotonic=clock)
    with caplog.at_level(logging.WARNING, logger="chargingd.aaa"):
        drops.dropped("kamailio", MISSING_MESSAGE_AUTHENTICATOR, "10.0.0.5")
        for _ in range(9):
            clock.now += 5.0
            drops.dropped("kamailio", MISSING_MESSAGE_AUTHENTICATOR, "10.0.0.5")
        assert len(warnings(caplog)) == 1  # 45 s later: still the one line
        clock.now += 20.0
        drops.dropped("kamailio", MISSING_MESSAGE_AUTHENTICATOR, "10.0.0.6")
    lines = warnings(caplog)
    assert len(lines) == 2
    assert "client 'kamailio' (10.0.0.5): 1 since the last report" in lines[0]
    assert "require_message_authenticator = false" in lines[0]
    assert "client 'kamailio' (10.0.0.6): 10 since the last report" in lines[1]
    assert drops.as_dict() == {"kamailio": {MISSING_MESSAGE_AUTHENTICATOR: 11}}


def test_each_client_and_reason_has_its_own_interval(caplog: pytest.LogCaptureFixture) -> None:
    drops = DropLog(interval_s=60.0, monotonic=FakeMonotonic())
    with caplog.at_level(logging.WARNING, logger="chargingd.aaa"):
        drops.dropped("a", MISSING_MESSAGE_AUTHENTICATOR, "10.0.0.1")
        drops.dropped("b", MISSING_MESSAGE_AUTHENTICATOR, "10.0.0.2")
        drops.dropped("a", BAD_AUTHENTICATOR, "10.0.0.1")
        drops.dropped("a", BAD_AUTHENTICATOR, "10.0.0.1")
    lines = warnings(caplog)
    assert len(lines) == 3
    assert "shared secret differs" in lines[2]
    assert drops.as_dict() == {
        "a": {MISSING_MESSAGE_AUTHENTICATOR: 1, BAD_AUTHENTICATOR: 2},
        "b": {MISSING_MESSAGE_AUTHENTICATOR: 1},
    }
