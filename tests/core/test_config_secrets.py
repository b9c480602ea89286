"""Config errors name the file and the key, never echo a secret, and catch bad URLs."""

from __future__ import annotations

from pathlib import Path

import pytest

from chargingd.core.config import ConfigError, apply_env, config_from_dict, load_config


def test_mistyped_radius_secret_is_not_echoed(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[[radius.clients]]\nname = "gw"\naddress = "192.0.2.1"\nsecret = 987654321\n')
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    message = str(err.value)
    assert str(path) in message and "radius.clients[0].secret must be str, not int" in message
    assert "987654321" not in message


def test_other_mistyped_values_are_still_shown() -> None:
    with pytest.raises(ConfigError, match=r"server.workers must be int, not str \('two'\)"):
        config_from_dict({"server": {"workers": "two"}}, "x.toml")


@pytest.mark.parametrize("url", ["redis://:pw-4711@localhost:99999/0", "redis://h:port/0"])
def test_redis_url_with_a_bad_port_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({"redis": {"url": url}}, "r.toml")
    assert "r.toml: [redis] url has an invalid port" in str(err.value)
    assert "pw-4711" not in str(err.value)
    with pytest.raises(
        ConfigError, match="CHARGINGD_REDIS_URL: \\[redis\\] url has an invalid port"
    ):
        apply_env(config_from_dict({}), {"CHARGINGD_REDIS_URL": url})
