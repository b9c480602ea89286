"""``chargingd mediate``: read switch CDR files, normalise, rate and store them.

    chargingd mediate FILE... --source NAME [--config PATH] [--rejects DIR] [--dry-run]
    chargingd mediate --pending --source NAME [--config PATH]

The source (``[mediation.sources.NAME]``) says the file format and how to read its
numbers, times and accounts. Re-running a file stores nothing twice: storage is
idempotent on (source, call_id).
chargingd.app wires the command (it builds the ledger and the store).
"""

from __future__ import annotations

import argparse


def configure_parser(name: str, parser: argparse.ArgumentParser) -> None:
    """Arguments of ``chargingd mediate``."""
    parser.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help="CDR files of the source (freeswitch_json/_xml: or their log-dir)",
    )
    parser.add_argument("--source", required=True, help="a [mediation.sources.NAME] of the config")
    parser.add_argument("--config", help="TOML config file (default: built-in defaults)")
    parser.add_argument("--rejects", metavar="DIR", help="write FILE.rejects.csv files here")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="read, normalise and rate, but store nothing (duplicates within the files count)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument(
        "--pending",
        action="store_true",
        help="list the halves of calls kept for their other half (no FILE: reads none)",
    )
