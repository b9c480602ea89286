"""Revenue assurance: does the rest of chargingd tell one story about money?

``chargingd assure`` reconciles, for a period, (a) what the switches recorded in their
own CDR files (mediated), (b) what the live sessions charged, (c) what the ledger
moved (its journal) and (d) what was invoiced, and reports each finding with the
money at stake (docs/assurance.md). The joins run in PostgreSQL (calls.py,
charges.py, ledger_checks.py, invoices.py); what only Redis knows (stuck CDRs, live
sessions and holds, balances) is read first (live.py). Runs are stored (runs.py).
chargingd.app wires the command.
"""

from chargingd.assurance.cli import configure_parser
from chargingd.assurance.model import AssuranceError, Finding, Kind, RunParams, Sources, Summary
from chargingd.assurance.reconcile import Context, Outcome, reconcile
from chargingd.core.exits import EXIT_LEAKAGE

__all__ = [
    "EXIT_LEAKAGE",
    "AssuranceError",
    "Context",
    "Finding",
    "Kind",
    "Outcome",
    "RunParams",
    "Sources",
    "Summary",
    "configure_parser",
    "reconcile",
]
