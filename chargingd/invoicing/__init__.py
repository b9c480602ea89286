"""Invoicing: invoices, statements, credit notes, payments, dunning and reports.

What other packages may use is named here; the modules are one step each
(periods, tax, build, usage, issue, run, statements, payments, dunning, pdf, ...).
"""

from chargingd.invoicing.context import Books
from chargingd.invoicing.model import (
    Conflict,
    Draft,
    Invoice,
    InvoicingError,
    Kind,
    NotFound,
    Refused,
    RunResult,
)
from chargingd.invoicing.periods import PeriodError
from chargingd.invoicing.run import invoice_run

__all__ = [
    "Books",
    "Conflict",
    "Draft",
    "Invoice",
    "InvoicingError",
    "Kind",
    "NotFound",
    "PeriodError",
    "Refused",
    "RunResult",
    "invoice_run",
]
