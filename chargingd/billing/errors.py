"""The billing database's errors; each ``code`` is stable (the admin socket and the CLI
report it)."""

from __future__ import annotations


class BillingDBError(Exception):
    """Base of billing database errors; ``code`` is stable."""

    code = "billing_db_error"


class MigrationError(BillingDBError):
    """A migration file is malformed, or an applied one was edited afterwards."""

    code = "migration_error"


class InvalidCDR(BillingDBError, ValueError):
    """A CDR that cannot be stored (wrong type, empty key, negative time)."""

    code = "invalid_cdr"


class DatabaseUnavailable(BillingDBError):
    """The database could not be reached or the connection broke; retry later."""

    code = "database_unavailable"
