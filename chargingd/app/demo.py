"""Demo accounts for `make run` ([demo] accounts = true): created only when absent."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from chargingd.core.money import parse_amount
from chargingd.ledger import AccountExists, Ledger, Mode, Status, UnknownAccount

log = logging.getLogger("chargingd.demo")

WHO = "demo"


@dataclass(frozen=True)
class DemoAccount:
    id: str
    mode: Mode
    balance: str
    credit_limit: str = "0"
    identities: tuple[str, ...] = ()
    status: Status = Status.ACTIVE
    currency: str = "EUR"
    max_calls: int = 0


DEMO_ACCOUNTS: tuple[DemoAccount, ...] = (
    DemoAccount("alice", Mode.PREPAID, "10.00", identities=("user:alice", "ani:+4930111111")),
    DemoAccount(
        "acme",
        Mode.POSTPAID,
        "0",
        credit_limit="500.00",
        identities=("user:acme", "ani:+4930222222"),
        max_calls=10,
    ),
    DemoAccount(
        "bob",
        Mode.PREPAID,
        "5.00",
        identities=("user:bob", "ani:+4930333333"),
        status=Status.SUSPENDED,
    ),
)


async def create_demo_accounts(
    ledger: Ledger, accounts: tuple[DemoAccount, ...] = DEMO_ACCOUNTS
) -> list[str]:
    """Create the demo accounts that do not exist yet; returns the ids created."""
    created = []
    for demo in accounts:
        try:
            await ledger.get_account(demo.id)
            continue
        except UnknownAccount:
            pass
        try:
            await ledger.create_account(
                demo.id,
                mode=demo.mode,
                currency=demo.currency,
                balance_micros=parse_amount(demo.balance),
                credit_limit_micros=parse_amount(demo.credit_limit),
                max_calls=demo.max_calls,
                identities=demo.identities,
                who=WHO,
                why="demo account",
            )
        except AccountExists:  # another daemon created it meanwhile
            continue
        if demo.status is not Status.ACTIVE:
            await ledger.set_status(demo.id, demo.status, who=WHO, why="demo account")
        created.append(demo.id)
    if created:
        log.info("created demo accounts: %s", ", ".join(created))
    return created
