"""Exit codes a cron job acts on (docs/operations.md, "Exit codes"): Redis or the
billing database out of reach is 69 (EX_UNAVAILABLE) in every command, never a code
that a command uses for a finding (`assure` 3: leakage; `mediate` 1: rows rejected).
`mediate` died with a traceback and exit 1 ("rows rejected"); the others exited 1,
the code of a refusal. `ctl` without a daemon: tests/admin/test_ctl.py."""

from __future__ import annotations

import socket
from pathlib import Path

import ports
import pytest
from paths import FIXTURES

from chargingd.app import factory
from chargingd.app.cli import main
from chargingd.core import exits
from chargingd.core.logs import stop_logging


def closed_port() -> int:
    """A loopback port nobody listens on (bound once by the OS for us, then closed)."""
    return ports.free_port(socket.SOCK_STREAM)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A database and a Redis that are both down (connection refused)."""
    path = tmp_path / "chargingd.toml"
    path.write_text(
        f"""
[server]
data_dir = "{tmp_path / "var"}"

[billing]
db_url = "postgresql://chargingd:x@127.0.0.1:{closed_port()}/chargingd"

[redis]
url = "redis://127.0.0.1:{closed_port()}/0"

[mediation.sources.pbx1]
format = "asterisk"
time_zone = "Europe/Berlin"
default_country = "DE"
account_rule = "fixed"
account = "pbx-customer"
plan = "{FIXTURES / "cdr" / "tariff_tp"}"
charge = "record_only"
"""
    )
    return path


@pytest.mark.parametrize(
    ("command", "down"),
    [
        (["mediate", str(FIXTURES / "cdr" / "asterisk_Master.csv"), "--source", "pbx1",
          "--quiet"], "cannot connect to the billing database"),
        (["assure", "--from", "2026-01-01", "--to", "2026-01-02"],
         "cannot connect to the billing database"),
        (["invoice", "list"], "cannot connect to the billing database"),
        (["cdr", "list"], "cannot connect to the billing database"),
        (["rerate", "--from", "2026-01-01", "--to", "2026-01-02"],
         "cannot connect to the billing database"),
        (["export", "--once"], "cannot reach Redis"),
    ],
)  # fmt: skip
def test_a_service_out_of_reach_is_69_in_every_command(
    config: Path,
    command: list[str],
    down: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(factory, "REDIS_READY_TIMEOUT_S", 0.5)  # it waits 10 s for Redis
    code = main([*command, "--config", str(config)])
    stop_logging()  # `export` says it in the log: written out now
    err = capsys.readouterr().err
    assert code == exits.EXIT_UNAVAILABLE == 69, err
    assert down in err and "Traceback" not in err, err


def test_no_code_means_two_things() -> None:
    """69 is only "could not reach"; 3 only `assure`'s leakage; 70 only `mediate`'s
    failure part way (its 1 is "rows rejected", the 1 of a failure elsewhere)."""
    assert exits.EXIT_UNAVAILABLE not in (
        exits.EXIT_OK, exits.EXIT_FAILED, exits.EXIT_USAGE, exits.EXIT_LEAKAGE,
        exits.EXIT_MEDIATE_FAILED, exits.EXIT_BROKEN_PIPE,
    )  # fmt: skip
    assert exits.EXIT_MEDIATE_FAILED not in (exits.EXIT_REJECTS, exits.EXIT_LEAKAGE)
