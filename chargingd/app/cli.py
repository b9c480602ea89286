"""The `chargingd` command: one subcommand per role.

Each entry of COMMANDS names the function that adds the command's arguments (in the
package that owns the command) and the one that runs it (commands that need parts
built from the config run through chargingd.app.commands); this file only dispatches,
and imports only the command it runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from importlib import import_module
from typing import Any

from chargingd import __version__
from chargingd.core.exits import EXIT_BROKEN_PIPE

Configure = Callable[[str, argparse.ArgumentParser], None]
Run = Callable[[str, argparse.Namespace], int]

# name -> (module:function that adds its arguments, module:function that runs it, help).
# Only the command asked for is imported: `chargingd ctl` does not load the daemon, the
# database drivers or the report builders (a third of a second per call otherwise).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "serve": (
        "chargingd.app.serve:configure_parser",
        "chargingd.app.serve:run",
        "run the daemon (RADIUS, ledger, admin socket)",
    ),
    "ctl": (
        "chargingd.admin.ctl:configure_parser",
        "chargingd.admin.ctl:run",
        "talk to a running daemon over its admin socket",
    ),
    "rate": (
        "chargingd.rating.cli:configure_parser",
        "chargingd.rating.cli:run",
        "price one call with a tariff plan",
    ),
    "max-usage": (
        "chargingd.rating.cli:configure_parser",
        "chargingd.rating.cli:run",
        "the longest usage an amount pays for",
    ),
    "export": (
        "chargingd.billing.exportcli:configure_parser",
        "chargingd.app.commands:run_export",
        "drain the CDR stream to the billing database",
    ),
    "mediate": (
        "chargingd.mediation:configure_parser",
        "chargingd.app.commands:run_mediate",
        "read, normalise, rate and store switch CDR files",
    ),
    "rerate": (
        "chargingd.billing.rerate:configure_parser",
        "chargingd.app.commands:run_rerate",
        "re-price stored CDRs with the current tariff",
    ),
    "invoice": (
        "chargingd.invoicing.cli:configure_invoice",
        "chargingd.app.invoicing:run_command",
        "invoices, statements and credit notes: run, list, show, pdf, calls, credit-note",
    ),
    "report": (
        "chargingd.invoicing.cli:configure_report",
        "chargingd.app.invoicing:run_command",
        "usage, revenue and savings reports from the CDRs",
    ),
    "cdr": (
        "chargingd.invoicing.cli:configure_cdr",
        "chargingd.app.invoicing:run_command",
        "browse the stored CDRs",
    ),
    "db": (
        "chargingd.app.invoicing:configure_db",
        "chargingd.app.invoicing:run_db",
        "the billing database: shell, url",
    ),
    "assure": (
        "chargingd.assurance:configure_parser",
        "chargingd.app.assurance:run",
        "revenue assurance: reconcile switch CDRs, sessions, ledger and invoices",
    ),
}


def resolve(target: str) -> Any:
    """``"package.module:function"`` -> the function (its module imported now)."""
    module, _, attr = target.partition(":")
    return getattr(import_module(module), attr)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (``only``: a command's name) one whose other commands are
    listed with their help but not configured, so their modules are not imported."""
    parser = argparse.ArgumentParser(prog="chargingd", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (configure, _, help_text) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or name == only:
            configure_fn: Configure = resolve(configure)
            configure_fn(name, sp)
            _config_after_actions(sp)
    return parser


def _config_after_actions(parser: argparse.ArgumentParser) -> None:
    """A command's ``--config`` (and ``ctl --json``) also after its action: ``chargingd
    invoice run --period 2026-11 --config my.toml``, ``chargingd ctl session list
    --json``, as operators type them; argparse stopped with "unrecognized arguments".
    SUPPRESS keeps the value given before the action when none is given after it."""
    given = {o for a in parser._actions for o in a.option_strings} & {"--config", "--json"}
    todo = [parser] if given else []
    while todo:
        current = todo.pop()
        for action in current._actions:
            if not isinstance(action, argparse._SubParsersAction):
                continue
            for child in action.choices.values():
                has = {o for a in child._actions for o in a.option_strings}
                if "--config" in given - has:
                    child.add_argument(
                        "--config", metavar="PATH", default=argparse.SUPPRESS,
                        help="TOML config file (also accepted before the action)",
                    )  # fmt: skip
                if "--json" in given - has:
                    child.add_argument(
                        "--json", action="store_true", default=argparse.SUPPRESS,
                        help="print the raw JSON result",
                    )  # fmt: skip
                todo.append(child)


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    # The command is the first word (the top level has only --help and --version).
    asked = words[0] if words and words[0] in COMMANDS else ""
    parser = build_parser(asked)
    args = parser.parse_args(words)
    if not args.command:
        parser.print_help()
        return 2
    try:
        run: Run = resolve(COMMANDS[args.command][1])
        code = run(args.command, args)
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
