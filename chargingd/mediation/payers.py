"""Who pays for a mediated call: the source's account rule, through the ledger.

``ani``: the ledger account holding identity "ani:+E164" of the caller;
``accountcode``: the row's account code (through the source's account_map);
``fixed``: the source's configured account. Lookups are cached per run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from chargingd.core.config.mediation import SourceConfig
from chargingd.ledger import InvalidRequest, UnknownAccount
from chargingd.ledger.keys import check_account_id
from chargingd.mediation.normalise import Call
from chargingd.mediation.records import RowError


@dataclass(frozen=True, slots=True)
class Payer:
    account_id: str
    tariff: str  # the account's tariff id ("" when it has none)
    currency: str
    from_ledger: bool = False  # currency and tariff are the account's own


class AccountLookup(Protocol):
    """The part of chargingd.ledger.Ledger mediation uses."""

    async def find_account(self, identity: str) -> str | None: ...

    async def get_account(self, account_id: str) -> _AccountLike: ...


class _AccountLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def tariff(self) -> str: ...
    @property
    def currency(self) -> str: ...


class Payers:
    """Resolves the payer of each call of one source; ledger None means no ledger."""

    def __init__(self, source: SourceConfig, ledger: AccountLookup | None) -> None:
        self.source = source
        self.ledger = ledger
        self._cache: dict[str, Payer | str] = {}  # key -> payer, or the reject reason

    def key(self, call: Call) -> str:
        """The lookup key of a call under the source's rule (RowError when it has none)."""
        rule = self.source.account_rule
        if rule == "ani":
            if not call.caller:
                raise RowError("no caller number for the ani account rule")
            return f"ani:{call.caller}"
        if rule == "accountcode":
            if not call.account:
                raise RowError("no account code for the accountcode account rule")
            return call.account
        return self.source.account

    async def payer(self, call: Call) -> Payer:
        """The payer of ``call``; RowError with the reason when there is none."""
        key = self.key(call)
        found = self._cache.get(key)
        if found is None:
            found = await self._lookup(key)
            self._cache[key] = found
        if isinstance(found, str):
            raise RowError(found)
        return found

    async def _lookup(self, key: str) -> Payer | str:
        rule = self.source.account_rule
        if rule == "accountcode":
            account_id = self.source.account_map.get(key, key)
        elif rule == "fixed":
            account_id = key
        else:
            account_id = ""
        if rule != "ani":
            # An account code is the switch's free text (Asterisk and FreeSWITCH take
            # any): one that is no account id (a space, a slash, "Sales Dept") is this
            # row's reject. It was the ledger's InvalidRequest, which ended the whole
            # run (exit 70) at the first such row, the rows after it never read.
            try:
                check_account_id(account_id)
            except InvalidRequest:
                via = f" (account code {key!r})" if account_id != key else ""
                return (
                    f"account {account_id!r}{via} is no account id"
                    " (1-64 of A-Z a-z 0-9 . _ : @ + -): map it with account_map"
                )
        if self.ledger is None:
            if rule == "ani":
                return "the ani account rule needs the ledger (Redis)"
            return Payer(account_id, "", self.source.currency)
        if rule == "ani":
            account_id = await self.ledger.find_account(key) or ""
            if not account_id:
                return f"no account with identity {key}"
        return await _account(self.ledger, account_id)


async def _account(ledger: AccountLookup, account_id: str) -> Payer | str:
    try:
        account = await ledger.get_account(account_id)
    except UnknownAccount:
        return f"unknown account {account_id!r}"
    return Payer(account.id, account.tariff, account.currency, from_ledger=True)
