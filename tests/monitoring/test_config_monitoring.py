"""[monitoring] and [http]: defaults, and the values refused with the key named."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from chargingd.admin.render import render_stats
from chargingd.core.config import ConfigError, config_from_dict


def test_defaults_are_local_and_off_the_radius_ports() -> None:
    cfg = config_from_dict({})
    assert cfg.http.enabled is False and cfg.http.bind == "127.0.0.1" and cfg.http.port == 9812
    assert cfg.monitoring.enabled and cfg.monitoring.min_samples == 10


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"http": {"enabled": True, "bind": "0.0.0.0"}}, "set token"),
        ({"http": {"bind": "10.0.0.1", "enabled": True, "token": "short"}}, "16 characters"),
        ({"http": {"bind": "localhost"}}, "not an IP address"),
        ({"http": {"port": 70000}}, "port must be"),
        ({"monitoring": {"min_samples": 0}}, "min_samples"),
        ({"monitoring": {"max_groups": 0}}, "max_groups"),
        ({"monitoring": {"windows": 1}}, "unknown key monitoring.windows"),
    ],
)
def test_bad_values_are_refused(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_a_token_is_never_echoed() -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({"http": {"token": 1234567890123456789}})
    assert "1234567890123456789" not in str(err.value)
    cfg = config_from_dict({"http": {"bind": "0.0.0.0", "enabled": True, "token": "x" * 20}})
    assert "x" * 20 not in repr(cfg)


def test_ctl_stats_names_the_section_that_turns_kpis_off() -> None:
    """With [monitoring] enabled = false, `ctl stats` said "KPIs are off ( enabled =
    false)": rich took "[monitoring]" for markup and dropped it."""
    out = io.StringIO()
    render_stats(Console(file=out, width=120), {"active_calls": 0, "min_samples": 10,
                                                "kpis": False, "windows": {}})  # fmt: skip
    assert "KPIs are off ([monitoring] enabled = false)" in out.getvalue()
