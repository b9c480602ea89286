"""The `chargingd` command: one subcommand per role, each defined in its own module.

A module listed in COMMANDS provides ``configure_parser(name, parser)`` and
``run(name, args) -> int``; this file only dispatches.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from chargingd import __version__, mediation
from chargingd.admin import ctl
from chargingd.app import serve
from chargingd.billing import exportcli, rerate
from chargingd.rating import cli as ratecli

Command = tuple[ModuleType, str]

COMMANDS: dict[str, Command] = {
    "serve": (serve, "run the daemon (RADIUS, ledger, admin socket)"),
    "ctl": (ctl, "talk to a running daemon over its admin socket"),
    "rate": (ratecli, "price one call with a tariff plan"),
    "max-usage": (ratecli, "the longest usage an amount pays for"),
    "export": (exportcli, "drain the CDR stream to the billing database"),
    "mediate": (mediation, "read, normalise, rate and store switch CDR files"),
    "rerate": (rerate, "re-price stored CDRs with the current tariff"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chargingd", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        module.configure_parser(name, sp)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    module = COMMANDS[args.command][0]
    result: int = module.run(args.command, args)
    return result


def _version() -> str:
    return f"chargingd {__version__}"


if __name__ == "__main__":
    sys.exit(main())
