from pathlib import Path

import pytest

from chargingd.config import Config, ConfigError, config_from_dict, load_config


def test_defaults_without_file() -> None:
    cfg = load_config(None)
    assert cfg == Config()
    assert cfg.redis.url == ""
    assert str(cfg.admin_socket).endswith("chargingd.sock")


def test_example_file_equals_defaults() -> None:
    """config/chargingd.toml documents every option with its default."""
    example = Path(__file__).parent.parent / "config" / "chargingd.toml"
    cfg = load_config(example)
    assert cfg.server == Config().server
    assert cfg.redis == Config().redis
    assert cfg.ledger == Config().ledger


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"server": {"wrkers": 2}}, "unknown key server.wrkers"),
        ({"server": {"workers": "2"}}, "server.workers must be int"),
        ({"server": {"workers": 0}}, "workers must be between"),
        ({"nosuch": {}}, "unknown section [nosuch]"),
        ({"redis": {"url": "http://x"}}, "url must start with"),
        ({"ledger": {"partial_grants": 1}}, "ledger.partial_grants must be bool"),
    ],
)
def test_bad_values_name_file_and_key(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw, "my.toml")  # type: ignore[arg-type]
    assert "my.toml" in str(err.value)
    assert message in str(err.value)


def test_bad_toml_names_file(tmp_path: Path) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text("[server\n")
    with pytest.raises(ConfigError, match=r"c\.toml: not valid TOML"):
        load_config(bad)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "absent.toml")
