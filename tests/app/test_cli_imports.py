"""`chargingd COMMAND` imports the command it runs, not every other one: `chargingd
ctl` (called by operators' scripts in loops, and by the tests hundreds of times) must
not load the daemon, the database drivers or the HTTP client."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from chargingd.app.cli import COMMANDS, build_parser

PROBE = """
import sys
from chargingd.app import cli
try:
    cli.main(sys.argv[1:])
except SystemExit:
    pass
heavy = ("chargingd.admin.server", "chargingd.app.serve", "chargingd.ledger",
         "chargingd.sessions", "psycopg", "aiohttp", "redis")
print(" ".join(sorted(m for m in sys.modules if m.split(".")[0] in heavy or m in heavy)),
      file=sys.stderr)
"""


def _loaded(*argv: str) -> tuple[str, set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=60
    )
    lines = done.stderr.strip().splitlines()
    return done.stdout, set(lines[-1].split()) if lines else set()


@pytest.mark.parametrize("argv", [("ctl", "--help"), ("--help",), ("rate", "--help")])
def test_a_command_does_not_import_the_daemon(argv: tuple[str, ...]) -> None:
    out, loaded = _loaded(*argv)
    assert "usage: chargingd" in out
    heavy = {"chargingd.admin.server", "chargingd.app.serve", "chargingd.ledger"}
    assert not loaded & heavy, sorted(loaded)
    assert not {m for m in loaded if m.split(".")[0] in ("psycopg", "aiohttp")}, sorted(loaded)


def test_the_top_level_help_lists_every_command_and_each_parses() -> None:
    out, _ = _loaded("--help")
    for name in COMMANDS:
        assert name in out
    # Each command's own parser is built (its module imported) when asked for.
    parser = build_parser()
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exc:
            parser.parse_args([name, "--help"])
        assert exc.value.code == 0


def test_the_invoice_summary_names_every_invoice_action() -> None:
    # `chargingd --help` summed up `invoice` as "run, list, show, pdf, credit-note":
    # `invoice calls` (the CSV call detail docs/invoicing.md shows) was not named.
    out, _ = _loaded("--help")
    summary = " ".join(out.split())
    actions, _ = _loaded("invoice", "--help")
    listed = re.findall(r"^    ([a-z-]+) ", actions, re.M)
    assert "calls" in listed
    for action in listed:
        assert (
            action
            in summary.split("invoices, statements and credit notes:")[1].split(" report ")[0]
        ), action
