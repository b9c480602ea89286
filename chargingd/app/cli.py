"""The `chargingd` command: one subcommand per role, each defined in its own module.

A module listed in COMMANDS provides ``configure_parser(name, parser)`` and
``run(name, args) -> int``; this file only dispatches.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("chargingd.app.serve", "run the daemon (RADIUS, ledger, admin socket)"),
    "ctl": ("chargingd.admin.ctl", "talk to a running daemon over its admin socket"),
    "rate": ("chargingd.rating.cli", "price one call with a tariff plan"),
    "max-usage": ("chargingd.rating.cli", "the longest usage an amount pays for"),
    "export": ("chargingd.billing.exportcli", "drain the CDR stream to the billing database"),
    "mediate": ("chargingd.mediation", "read, normalise, rate and store switch CDR files"),
    "rerate": ("chargingd.billing.rerate", "re-price stored CDRs with the current tariff"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chargingd", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue  # a role not built yet
        sp = sub.add_parser(name, help=help_text, description=help_text)
        module.configure_parser(name, sp)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    result: int = module.run(args.command, args)
    return result


def _version() -> str:
    from chargingd import __version__

    return f"chargingd {__version__}"


if __name__ == "__main__":
    sys.exit(main())
