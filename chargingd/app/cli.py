"""The `chargingd` command: one subcommand per role.

Each entry of COMMANDS names the function that adds the command's arguments (in the
package that owns the command) and the one that runs it (commands that need parts
built from the config run through chargingd.app.commands); this file only dispatches.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from chargingd import __version__, mediation
from chargingd.admin import ctl
from chargingd.app import commands, serve
from chargingd.billing import exportcli, rerate
from chargingd.rating import cli as ratecli

Configure = Callable[[str, argparse.ArgumentParser], None]
Run = Callable[[str, argparse.Namespace], int]

COMMANDS: dict[str, tuple[Configure, Run, str]] = {
    "serve": (serve.configure_parser, serve.run, "run the daemon (RADIUS, ledger, admin socket)"),
    "ctl": (ctl.configure_parser, ctl.run, "talk to a running daemon over its admin socket"),
    "rate": (ratecli.configure_parser, ratecli.run, "price one call with a tariff plan"),
    "max-usage": (ratecli.configure_parser, ratecli.run, "the longest usage an amount pays for"),
    "export": (
        exportcli.configure_parser,
        commands.run_export,
        "drain the CDR stream to the billing database",
    ),
    "mediate": (
        mediation.configure_parser,
        commands.run_mediate,
        "read, normalise, rate and store switch CDR files",
    ),
    "rerate": (
        rerate.configure_parser,
        commands.run_rerate,
        "re-price stored CDRs with the current tariff",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chargingd", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (configure, _, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        configure(name, sp)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    return COMMANDS[args.command][1](args.command, args)


def _version() -> str:
    return f"chargingd {__version__}"


if __name__ == "__main__":
    sys.exit(main())
