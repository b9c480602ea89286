"""The `chargingd` command: one subcommand per role.

Each entry of COMMANDS names the function that adds the command's arguments (in the
package that owns the command) and the one that runs it (commands that need parts
built from the config run through chargingd.app.commands); this file only dispatches.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from chargingd import __version__, assurance, mediation
from chargingd.admin import ctl
from chargingd.app import assurance as assurance_app
from chargingd.app import commands, serve
from chargingd.app import invoicing as invoicing_app
from chargingd.billing import exportcli, rerate
from chargingd.invoicing import cli as invoicecli
from chargingd.rating import cli as ratecli

EXIT_BROKEN_PIPE = 128 + 13  # SIGPIPE

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
    "invoice": (
        invoicecli.configure_invoice,
        invoicing_app.run_command,
        "invoices, statements and credit notes: run, list, show, pdf, credit-note",
    ),
    "report": (
        invoicecli.configure_report,
        invoicing_app.run_command,
        "usage, revenue and savings reports from the CDRs",
    ),
    "cdr": (invoicecli.configure_cdr, invoicing_app.run_command, "browse the stored CDRs"),
    "db": (invoicing_app.configure_db, invoicing_app.run_db, "the billing database: shell, url"),
    "assure": (
        assurance.configure_parser,
        assurance_app.run,
        "revenue assurance: reconcile switch CDRs, sessions, ledger and invoices",
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
    try:
        code = COMMANDS[args.command][1](args.command, args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at exit
    except BrokenPipeError:
        return _reader_gone()
    return code


def _reader_gone() -> int:
    """The reader of stdout went away (``chargingd ctl ... | head``): end quietly.

    Python's own exit would flush stdout again and print a BrokenPipeError traceback;
    pointing stdout at /dev/null first avoids that. 141 is 128 + SIGPIPE, what a Unix
    tool killed by the closed pipe reports (only ``set -o pipefail`` sees it).
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE


def _version() -> str:
    return f"chargingd {__version__}"


if __name__ == "__main__":
    sys.exit(main())
