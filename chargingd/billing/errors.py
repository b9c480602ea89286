"""The billing database's errors; each ``code`` is stable (the admin socket and the CLI
report it)."""

from __future__ import annotations

from chargingd.core.loops import ServiceUnreachable


class BillingDBError(Exception):
    """Base of billing database errors; ``code`` is stable."""

    code = "billing_db_error"


class MigrationError(BillingDBError):
    """A migration file is malformed, or an applied one was edited afterwards."""

    code = "migration_error"


class InvalidCDR(BillingDBError, ValueError):
    """A CDR that cannot be stored (wrong type, empty key, negative time)."""

    code = "invalid_cdr"


class DatabaseUnavailable(BillingDBError, ServiceUnreachable):
    """The database could not be reached or the connection broke; retry later (the
    background loops log it without a traceback, as Redis being unreachable)."""

    code = "database_unavailable"
