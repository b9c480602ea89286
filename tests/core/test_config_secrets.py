"""Config errors name the file and the key, never echo a secret, and catch bad URLs."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

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


@pytest.mark.parametrize(
    "url", ["redis://:pw-4711@localhost:99999/0", "redis://h:port/0", "redis://:pw-4711@h:0/0"]
)
def test_redis_url_with_a_bad_port_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({"redis": {"url": url}}, "r.toml")
    assert "r.toml: [redis] url has an invalid port" in str(err.value)
    assert "pw-4711" not in str(err.value)
    with pytest.raises(
        ConfigError, match="CHARGINGD_REDIS_URL: \\[redis\\] url has an invalid port"
    ):
        apply_env(config_from_dict({}), {"CHARGINGD_REDIS_URL": url})


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://chargingd:pw-4711@db.example:99999/billing",
        "postgresql://chargingd:pw-4711@db.example:54x2/billing",
        "postgres://chargingd:pw-4711@db1.example:5432,db2.example:0/billing",
        "postgresql://chargingd:pw-4711@[::1]:65536/billing",
        "postgresql://chargingd:pw-4711@db.example/billing?port=70000",
        "postgresql://chargingd:pw-4711/x@db.example:5432/billing",  # "/" unencoded
    ],
)
def test_billing_db_url_with_a_bad_port_is_a_config_error(url: str) -> None:
    """libpq refused it only at connect: `serve` started, and the exporter logged
    'invalid port number' at every pass."""
    with pytest.raises(ConfigError) as err:
        config_from_dict({"billing": {"db_url": url}}, "b.toml")
    assert str(err.value) == "b.toml: [billing] db_url has an invalid port (must be 1..65535)"
    assert "pw-4711" not in str(err.value)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://chargingd:p%40ss@db.example:5432/billing",
        "postgresql://db1.example,db2.example:5433/billing",  # libpq multi-host
        "postgresql://[::1]:5432/billing",
        "postgresql://[::1]/billing",
        "postgresql:///billing?host=/run/postgresql&port=5433",
        "postgres://%2Frun%2Fpostgresql/billing",
        # libpq ends the user info at the last "@": "?" and "#" in a password are
        # neither the query nor the fragment (the port check refused these)
        "postgresql://u:p?x@db:5432/billing",
        "postgresql://u:p?x@db/billing",
        "postgresql://u:p#x@db:5432/billing",
        "postgresql://u:p?port=1@db1,db2:5433/billing",
    ],
)
def test_billing_db_urls_libpq_takes_still_load(url: str) -> None:
    assert config_from_dict({"billing": {"db_url": url}}).billing.db_url == url


async def test_billing_db_url_port_checked_as_libpq_checks_it(pg_url: str) -> None:
    """The session's PostgreSQL URL loads and connects; the same with port 99999 is
    what libpq refuses at connect, and now the config refuses it first."""
    import psycopg

    assert config_from_dict({"billing": {"db_url": pg_url}}).billing.db_url == pg_url
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        assert (await (await conn.execute("SELECT 1")).fetchone()) == (1,)
    parts = urlsplit(pg_url)  # a socket directory as ?host=, or host:port
    if parts.port is None:
        bad = urlunsplit(parts._replace(query="&".join(filter(None, [parts.query, "port=99999"]))))
    else:
        bad = urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.port}", ":99999")))
    with pytest.raises(psycopg.OperationalError, match="invalid port number"):
        await psycopg.AsyncConnection.connect(bad, connect_timeout=2)
    with pytest.raises(ConfigError, match="db_url has an invalid port"):
        config_from_dict({"billing": {"db_url": bad}})
