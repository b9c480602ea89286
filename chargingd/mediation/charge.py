"""What each mediated call charged: the source's ``charge`` mode, applied to a batch.

``ledger``: a switch chargingd does not control in real time. Each new call's rated
cost is posted to the ledger as one debit keyed by (source, call id)
(Ledger.charge_usage): a call the store holds already is never debited again, and two
imports of one file racing each other meet in the ledger's key, so a call is charged
once whatever happens. The CDR records what the ledger moved (charged_micros, reason
``debt`` or ``capped`` when the account could not pay: ``insufficient``).

``record_only``: calls chargingd charged live. Each is matched to its live CDR
(``match_source``, by ``match_on``); nothing moves, charged_micros is 0 and the reason
says ``unmatched`` when no live CDR has that id (revenue assurance looks at those).

An unrated source (rate = false) charges nothing (``none``). ``--dry-run`` touches no
ledger: the CDRs say what would have been debited in ``would_debit`` (per currency).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from chargingd.billing.cdr import CDR, CHARGE_MEDIATED, CHARGE_NONE, CHARGE_RECORDED
from chargingd.core.config.mediation import SourceConfig
from chargingd.ledger import LedgerError, UsageCharge, UsageRequest
from chargingd.mediation.store import CdrStore

UNMATCHED, OTHER_ACCOUNT = "unmatched", "other_account"
_CONF_ID = re.compile(r"[0-9A-Fa-f]{32}")


def live_ids(call_id: str) -> list[str]:
    """The ids a live CDR of this call may have. cisco_radius reads a call's
    h323-conf-id without its spaces (3A7F2C1011E9A1B28000C0A80A0A0001); a live CDR of
    a ``cisco`` RADIUS client keeps it as the gateway sent it, in Cisco's four groups
    (3A7F2C10 11E9A1B2 8000C0A8 0A0A0001): both are asked for, else no call of such a
    gateway ever matched (every one "unmatched", as if it bypassed chargingd)."""
    if not call_id:
        return []
    if not _CONF_ID.fullmatch(call_id):
        return [call_id]
    spaced = " ".join(call_id[i : i + 8] for i in range(0, 32, 8))
    return list(dict.fromkeys((call_id, spaced, spaced.upper(), spaced.lower())))


class UsageLedger(Protocol):
    """The part of chargingd.ledger.Ledger that charges mediated calls."""

    async def charge_usage(self, req: UsageRequest, cost_micros: int) -> UsageCharge: ...


@dataclass
class Settled:
    """A batch after charging: CDRs to store, calls the ledger refused (reason)."""

    cdrs: list[CDR] = field(default_factory=list)
    refused: list[tuple[CDR, str]] = field(default_factory=list)
    would_debit: dict[str, int] = field(default_factory=dict)  # --dry-run: the new calls'
    # costs, per currency


class Charger:
    """Settles the money of one source's batches (see the module docstring)."""

    def __init__(
        self,
        name: str,
        source: SourceConfig,
        store: CdrStore,
        ledger: UsageLedger | None,
        *,
        dry_run: bool = False,
    ) -> None:
        if source.rate and source.charge not in ("ledger", "record_only"):
            raise ValueError(f"source {name!r} must say charge = ledger or record_only")
        if source.charge == "ledger" and source.rate and ledger is None and not dry_run:
            raise ValueError(f"source {name!r} charges the ledger: it needs one")
        self.name = name
        self.source = source
        self.store = store
        self.ledger = ledger
        self.dry_run = dry_run

    async def settle(self, cdrs: Sequence[CDR]) -> Settled:
        if not self.source.rate:
            return Settled([dataclasses.replace(c, charge=CHARGE_NONE) for c in cdrs])
        if self.source.charge == "record_only":
            return Settled(await self._matched(cdrs))
        return await self._debited(cdrs)

    # -- ledger ---------------------------------------------------------------------
    async def _debited(self, cdrs: Sequence[CDR]) -> Settled:
        known = await self.store.charges(self.name, [c.call_id for c in cdrs])
        due: dict[str, CDR] = {}
        for c in cdrs:
            if c.call_id not in known and c.call_id not in due and c.cost_micros > 0:
                due[c.call_id] = c  # new, and the first record of it in this batch
        if self.dry_run or self.ledger is None:
            out = [dataclasses.replace(c, charge=CHARGE_MEDIATED) for c in cdrs]
            costs: dict[str, int] = {}
            for c in due.values():
                costs[c.currency] = costs.get(c.currency, 0) + c.cost_micros
            return Settled(out, would_debit=costs)
        ledger = self.ledger
        results = await asyncio.gather(
            *(ledger.charge_usage(self._request(c), c.cost_micros) for c in due.values()),
            return_exceptions=True,
        )
        done: dict[str, UsageCharge | str] = {}
        for call_id, result in zip(due, results, strict=True):
            if isinstance(result, LedgerError):
                done[call_id] = f"not charged ({result.code}): {result}"
            elif isinstance(result, BaseException):
                raise result  # Redis down, a bug: stop; a re-run charges nothing twice
            else:
                done[call_id] = result
        return self._settled(cdrs, done)

    def _request(self, c: CDR) -> UsageRequest:
        return UsageRequest(
            account_id=c.account_id,
            source=self.name,
            call_id=c.call_id,
            currency=c.currency,
            insufficient=self.source.insufficient,
            who=f"mediation:{self.name}",
            why="mediated call",
        )

    @staticmethod
    def _settled(cdrs: Sequence[CDR], done: dict[str, UsageCharge | str]) -> Settled:
        out = Settled()
        for c in cdrs:
            result = done.get(c.call_id)
            if isinstance(result, str):
                out.refused.append((c, result))
                continue
            charged = result.charged_micros if result is not None else 0
            reason = result.reason if result is not None else ""
            out.cdrs.append(
                dataclasses.replace(
                    c, charge=CHARGE_MEDIATED, charged_micros=charged, charge_reason=reason
                )
            )
        return out

    # -- record_only ----------------------------------------------------------------
    def _live_id(self, c: CDR) -> str:
        on = self.source.match_on
        if on == "call_id":
            # An answered call stored under <id>#answered (pipeline): its live CDR has
            # the switch's id.
            return c.extra.get("switch_call_id") or c.call_id
        return c.extra.get(on, "")

    async def _matched(self, cdrs: Sequence[CDR]) -> list[CDR]:
        ids = sorted({i for c in cdrs for i in live_ids(self._live_id(c))})
        live = await self.store.charges(self.source.match_source, ids)
        out = []
        for c in cdrs:
            found = next((live[i] for i in live_ids(self._live_id(c)) if i in live), None)
            extra = dict(c.extra)
            reason = UNMATCHED
            if found is not None:
                extra["live_call_id"] = found.call_id
                reason = ""
                if found.account_id != c.account_id:
                    extra["live_account_id"] = found.account_id
                    reason = OTHER_ACCOUNT
            out.append(
                dataclasses.replace(c, charge=CHARGE_RECORDED, charge_reason=reason, extra=extra)
            )
        return out
