"""What every invoicing operation works with: the config, the billing database, the
ledger (None for read-only commands), the clock and the name written as the author."""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from chargingd.billing.db import BillingDB
from chargingd.core.config.invoicing import InvoicingConfig
from chargingd.ledger import Ledger


def wall_clock() -> datetime:
    return datetime.now(UTC)


@dataclass
class Books:
    """Dependencies of invoicing, passed in (never module-level singletons)."""

    cfg: InvoicingConfig
    db: BillingDB
    ledger: Ledger | None = None
    clock: Callable[[], datetime] = field(default=wall_clock)
    who: str = "invoicing"

    def now(self) -> datetime:
        """Now, in the invoicing time zone."""
        return self.clock().astimezone(zoneinfo.ZoneInfo(self.cfg.time_zone))

    def issuer(self) -> dict[str, Any]:
        i = self.cfg.issuer
        return {
            "name": i.name,
            "address": list(i.address),
            "vat_id": i.vat_id,
            "email": i.email,
            "phone": i.phone,
            "bank": i.bank,
            "footer": i.footer,
        }

    def need_ledger(self) -> Ledger:
        if self.ledger is None:
            raise RuntimeError("this invoicing operation needs the ledger (Redis)")
        return self.ledger
