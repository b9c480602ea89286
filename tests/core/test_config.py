import re
import tomllib
from pathlib import Path

import pytest
from paths import REPO

from chargingd.core.config import (
    Config,
    ConfigError,
    RadiusClientConfig,
    config_from_dict,
    load_config,
)


def test_defaults_without_file() -> None:
    cfg = load_config(None)
    assert cfg == Config()
    assert cfg.redis.url == ""
    assert str(cfg.admin_socket).endswith("chargingd.sock")


def test_example_file_equals_defaults() -> None:
    """config/chargingd.toml documents every option with its default."""
    example = REPO / "config" / "chargingd.toml"
    cfg = load_config(example)
    assert cfg.server == Config().server
    assert cfg.redis == Config().redis
    assert cfg.ledger == Config().ledger
    assert cfg.sessions == Config().sessions
    assert cfg.rating == Config().rating
    assert cfg.billing == Config().billing
    assert cfg.export == Config().export
    assert cfg.mediation == Config().mediation
    assert cfg.radius == Config().radius
    assert cfg.invoicing == Config().invoicing
    assert cfg.alerts == Config().alerts
    assert cfg.fraud == Config().fraud


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"server": {"wrkers": 2}}, "unknown key server.wrkers"),
        ({"server": {"workers": "2"}}, "server.workers must be int"),
        ({"server": {"workers": 0}}, "workers must be between"),
        ({"server": {"log_level": "verbose"}}, "[server] log_level must be one of debug"),
        (
            {"radius": {"spread": "random"}},
            'spread must be "auto", "source", "request", "user" or "ani"',
        ),
        ({"radius": {"bind": "radius.example"}}, "[radius] bind 'radius.example' is not an IP"),
        ({"radius": {"bind": "localhost.example"}}, "[radius] bind 'localhost.example' is not"),
        (
            {"radius": {"auth_port": 1812, "acct_port": 1812}},
            "[radius] auth_port and acct_port must differ (both 1812)",
        ),
        ({"nosuch": {}}, "unknown section [nosuch]"),
        ({"redis": {"url": "http://x"}}, "url must start with"),
        ({"redis": {"batch_early": -1}}, "batch_early must be 0..512"),
        (
            {"redis": {"cluster_nodes": ["10.0.0.1:7000", "10.0.0.2:70000"]}},
            "[redis] cluster node '10.0.0.2:70000': port must be 1..65535",
        ),
        ({"redis": {"cluster_nodes": ["10.0.0.1:0"]}}, "port must be 1..65535"),
        ({"redis": {"batch_early": 513}}, "batch_early must be 0..512"),
        ({"ledger": {"partial_grants": 1}}, "ledger.partial_grants must be bool"),
        (  # an amount written as a number: it said "has the wrong type (int)" only
            {"fraud": {"rules": [{"name": "s", "kind": "spend", "max_amount": 50}]}},
            'max_amount must be str, not int: write it as a string, in quotes ("50")',
        ),
        (
            {"invoicing": {"vat_rates": {"DE": "0.19"}}},
            "'0.19' would be 0.19 %: rates are in percent (\"19\" for 19 %)",
        ),
    ],
)
def test_bad_values_name_file_and_key(raw: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw, "my.toml")  # type: ignore[arg-type]
    assert "my.toml" in str(err.value)
    assert message in str(err.value)


def test_radius_interim_interval_that_is_not_sent_is_a_startup_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """[radius] interim_interval_s = 300 loaded, yet every Access-Accept carried
    [sessions] interim_interval_s (60): the option did nothing, silently. Refusing it
    stopped a rolling upgrade at the first node whose old config set it: it loads,
    ignored, and `serve` logs a WARNING naming both keys and the value sent."""
    from chargingd.app.serve import log_config_warnings

    cfg = config_from_dict({"radius": {"interim_interval_s": 300}}, "my.toml")
    assert cfg.sessions.interim_interval_s == 60 and cfg == config_from_dict({}, "my.toml")
    warning = (
        "my.toml: [radius] interim_interval_s = 300 is ignored: gateways are sent"
        " [sessions] interim_interval_s (60) as Acct-Interim-Interval, and it also sizes"
        " grants and the stale window; set the value there and remove"
        " [radius] interim_interval_s (a later release refuses it)"
    )
    assert cfg.warnings == (warning,)
    with caplog.at_level("WARNING", logger="chargingd.server"):
        log_config_warnings(cfg)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", f"config: {warning}")
    ]
    # The example file's old line (60) next to a changed [sessions] interval.
    cfg = config_from_dict(
        {"sessions": {"interim_interval_s": 30}, "radius": {"interim_interval_s": 60}}
    )
    assert cfg.sessions.interim_interval_s == 30
    assert len(cfg.warnings) == 1 and "interim_interval_s = 60 is ignored" in cfg.warnings[0]
    assert "[sessions] interim_interval_s (30)" in cfg.warnings[0]


@pytest.mark.parametrize("sessions_s", [60, 30])
def test_radius_interim_interval_of_an_old_config_equal_to_the_sent_one(sessions_s: int) -> None:
    """Old configs (the example file had [radius] interim_interval_s = 60) still load
    when the value is the one gateways are sent anyway; without it, [sessions] alone."""
    raw = {"sessions": {"interim_interval_s": sessions_s}}
    cfg = config_from_dict(raw | {"radius": {"interim_interval_s": sessions_s}})
    assert cfg == config_from_dict(raw) and cfg.warnings == ()
    assert not hasattr(cfg.radius, "interim_interval_s")


@pytest.mark.parametrize("bind", ["", "localhost", "127.0.0.1", "::1"])
def test_radius_bind_takes_what_socket_bind_takes(bind: str) -> None:
    """ "" (any address) and "localhost" bound before the IP check and still load."""
    from chargingd.radius.ports import bind_udp

    cfg = config_from_dict({"radius": {"bind": bind}})
    assert cfg.radius.bind == bind
    bind_udp(cfg.radius.bind, 0, reuse_port=False).close()  # as serve binds it


def test_radius_ports_zero_both_allowed() -> None:
    """Port 0 (any free port, as tests bind) twice is two distinct ports."""
    cfg = config_from_dict({"radius": {"auth_port": 0, "acct_port": 0}}, "my.toml")
    assert (cfg.radius.auth_port, cfg.radius.acct_port) == (0, 0)


def test_bad_toml_names_file(tmp_path: Path) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text("[server\n")
    with pytest.raises(ConfigError, match=r"c\.toml: not valid TOML"):
        load_config(bad)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "absent.toml")


def test_radius_clients_are_a_list_of_tables() -> None:
    """[[radius.clients]]: tuple[RadiusClientConfig, ...] built table by table."""
    cfg = config_from_dict(
        {
            "radius": {
                "clients": [
                    {"name": "gw1", "address": "192.0.2.1", "secret": "k9-sekr1t"},
                    {"name": "net", "address": "10.0.0.0/24", "secret": "s2", "lookup": ["ani"],
                     "flavour": "generic", "coa_port": 0, "require_message_authenticator": False},
                ],
                "h323_return_codes": {"insufficient_credit": 12},
            }
        }
    )  # fmt: skip
    gw1, net = cfg.radius.clients
    assert (gw1.name, gw1.lookup, gw1.flavour, gw1.coa_port) == (
        "gw1",
        ("user", "ani", "default"),
        "cisco",
        3799,
    )
    assert gw1.require_message_authenticator is None
    assert (net.lookup, net.flavour, net.coa_port, net.require_message_authenticator) == (
        ("ani",),
        "generic",
        0,
        False,
    )
    assert cfg.radius.return_code("insufficient_credit") == 12
    assert cfg.radius.return_code("suspended") == 7
    assert "k9-sekr1t" not in repr(cfg)


_OK = {"name": "a", "address": "10.0.0.1", "secret": "s"}


def test_commented_client_example_shows_the_defaults() -> None:
    """The [[radius.clients]] example of config/chargingd.toml, uncommented, gives the
    defaults for every option it does not have to set (name, address, secret)."""
    text = (REPO / "config" / "chargingd.toml").read_text()
    block = text[text.index("# [[radius.clients]]") : text.index("[diameter]")]
    lines = [line[2:] for line in block.splitlines() if line.startswith("# ") and "=" in line]
    lines = [line for line in lines if not line.startswith("#")]
    client = tomllib.loads("\n".join(lines))
    built = config_from_dict({"radius": {"clients": [client]}}).radius.clients[0]
    plain = RadiusClientConfig(name=built.name, address=built.address, secret=built.secret)
    assert built == plain
    assert {"credit_mode", "cut_backend", "jsonrpc_url", "echo_class"} <= set(client)


def test_kamailio_client_with_its_cut_backend() -> None:
    kam = {"credit_mode": "own_timer", "cut_backend": "kamailio_jsonrpc"}
    kam["jsonrpc_url"] = "http://192.0.2.10:5071/RPC"
    cfg = config_from_dict({"radius": {"clients": [_OK | kam]}})
    client = cfg.radius.clients[0]
    assert (client.credit_mode, client.cut_backend, client.jsonrpc_url) == tuple(kam.values())


@pytest.mark.parametrize(
    ("client", "message"),
    [
        ({"name": "a", "address": "300.1.1.1", "secret": "s"}, "address must be an IP or CIDR"),
        ({"name": "a", "address": "10.0.0.1", "secret": ""}, "secret must not be empty"),
        ({"name": "a", "address": "10.0.0.1", "secret": "s", "lookup": ["x"]}, "lookup items"),
        ({"name": "a", "address": "10.0.0.1", "secret": "s", "flavour": "nokia"}, "flavour"),
        (
            {"name": "a", "address": "10.0.0.1", "secret": "s", "sekret": "s"},
            "unknown key radius.clients[0].sekret",
        ),
        ({"address": "10.0.0.1", "secret": "s"}, "needs a name"),
        ({**_OK, "credit_mode": "postpaid"}, "credit_mode must be one of"),
        ({**_OK, "cut_backend": "sip"}, "cut_backend must be one of"),
        ({**_OK, "cut_backend": "kamailio_jsonrpc"}, "jsonrpc_url must be http://IP:PORT/PATH"),
        (
            {**_OK, "cut_backend": "kamailio_jsonrpc", "jsonrpc_url": "http://kam:5071/RPC"},
            "an IP literal",
        ),
        (
            {**_OK, "cut_backend": "kamailio_jsonrpc", "jsonrpc_url": "https://10.0.0.2:1/RPC"},
            "jsonrpc_url must be",
        ),
        ({**_OK, "jsonrpc_url": "http://10.0.0.2:5071/RPC"}, "needs cut_backend"),
    ],
)
def test_bad_radius_client(client: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict({"radius": {"clients": [client]}}, "my.toml")


@pytest.mark.parametrize(
    ("first", "second", "network"),
    [
        ("10.0.0.1", "10.0.0.1", "10.0.0.1/32"),
        ("10.0.0.1", "10.0.0.1/32", "10.0.0.1/32"),
        ("10.0.0.0/24", "10.0.0.7/24", "10.0.0.0/24"),
        ("2001:db8::1", "2001:db8:0::1", "2001:db8::1/128"),
    ],
)
def test_two_radius_clients_with_one_address(first: str, second: str, network: str) -> None:
    """A packet is matched to its client by source address: two clients with one
    address would leave one of them (and its secret) never used, silently."""
    clients = [
        {"name": "sbc-a", "address": first, "secret": "s1"},
        {"name": "sbc-b", "address": second, "secret": "s2"},
    ]
    message = f"[radius] clients 'sbc-a' and 'sbc-b' have the same address {network}"
    with pytest.raises(ConfigError, match=re.escape(message)):
        config_from_dict({"radius": {"clients": clients}}, "my.toml")


def test_radius_clients_nested_networks_allowed() -> None:
    """A host inside a client's CIDR block is another client (longest prefix wins)."""
    clients = [
        {"name": "pool", "address": "10.0.0.0/24", "secret": "s1"},
        {"name": "sbc", "address": "10.0.0.7", "secret": "s2"},
    ]
    cfg = config_from_dict({"radius": {"clients": clients}}, "my.toml")
    assert [c.name for c in cfg.radius.clients] == ["pool", "sbc"]


def test_bad_radius_return_code_reason() -> None:
    with pytest.raises(ConfigError, match="unknown reasons"):
        config_from_dict({"radius": {"h323_return_codes": {"broke": 1}}})


@pytest.mark.parametrize("shards", [0, -1, 4097])
def test_lastseen_shards_out_of_range_stops_startup(shards: int) -> None:
    with pytest.raises(ConfigError, match="lastseen_shards must be between 1 and 4096"):
        config_from_dict({"sessions": {"lastseen_shards": shards}}, "my.toml")


def test_lastseen_shards_not_an_integer_stops_startup() -> None:
    with pytest.raises(ConfigError, match="lastseen_shards"):
        config_from_dict({"sessions": {"lastseen_shards": "many"}}, "my.toml")


def test_spread_auto_keeps_each_callers_fraud_value_in_one_process() -> None:
    """[radius] spread = "auto" (the default): "user" with the fraud rules on and several
    RADIUS processes (each caller's kept value in one process: docs/fraud-cost.md,
    twenty-first round), else "source" (no program on the ports); a value written stays."""
    assert Config().radius.spread == "source"
    two = {"server": {"workers": 2}}
    assert config_from_dict(two).radius.spread == "source"  # no rules: the kernel's hash
    assert config_from_dict({**two, "fraud": {"enabled": True}}).radius.spread == "user"
    assert config_from_dict({"fraud": {"enabled": True}}).radius.spread == "source"
    chosen = {**two, "fraud": {"enabled": True}, "radius": {"spread": "request"}}
    assert config_from_dict(chosen).radius.spread == "request"
    assert config_from_dict({"radius": {"spread": "auto"}}).radius.spread == "source"
