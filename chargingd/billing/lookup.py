"""Reading back stored CDRs by key: which calls of a source are stored, and what each
charged. Mediation uses it to charge a call once (a stored call is never debited
again) and to match the switch's record of a call to the CDR chargingd wrote live."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from chargingd.billing.db import BillingDB, Conn


@dataclass(frozen=True)
class StoredCharge:
    """A stored CDR's money: who paid, what the ledger moved and how."""

    call_id: str
    account_id: str
    cost_micros: int
    charged_micros: int
    charge: str
    status: str = ""  # CdrStatus: an unanswered call's id may be taken by its answered one


async def charges(db: BillingDB, source: str, call_ids: Sequence[str]) -> dict[str, StoredCharge]:
    """The stored CDRs of ``source`` among ``call_ids``, by call id."""
    if not call_ids:
        return {}

    async def work(conn: Conn) -> dict[str, StoredCharge]:
        cur = await conn.execute(
            "SELECT call_id, account_id, cost_micros, charged_micros, charge, status FROM cdrs"
            " WHERE source = %s AND call_id = ANY(%s)",
            (source, list(call_ids)),
        )
        return {str(row[0]): StoredCharge(*row) for row in await cur.fetchall()}

    result: dict[str, StoredCharge] = await db.run(work)
    return result


async def naming(db: BillingDB, source: str, uuids: Sequence[str]) -> set[str]:
    """Which of ``uuids`` a stored CDR of ``source`` names as its B-leg (extra
    bleg_uuid: a FreeSWITCH A-leg; index cdrs_bleg_uuid, migration 012)."""
    if not uuids:
        return set()

    async def work(conn: Conn) -> set[str]:
        # A lookup per uuid (LATERAL ... LIMIT 1), not "= ANY": the planner cannot know
        # how few rows a thousand uuids match, and chose a scan of the whole table.
        cur = await conn.execute(
            "SELECT u FROM unnest(%s::text[]) AS u, LATERAL (SELECT 1 FROM cdrs"
            " WHERE extra ? 'bleg_uuid' AND extra ->> 'bleg_uuid' = u AND source = %s"
            " LIMIT 1) AS hit",
            (list(uuids), source),
        )
        return {str(row[0]) for row in await cur.fetchall()}

    result: set[str] = await db.run(work)
    return result


@dataclass(frozen=True)
class LegCall:
    """A stored call that had a CUCM call leg: as its called leg (``called``) or its
    calling leg; its parties as stored (E.164) and the extra that says how they were
    written (caller_raw, dialled, access_code)."""

    call_id: str
    called: bool
    caller: str
    callee: str
    extra: dict[str, str]


_LEG_EXTRA = ("caller_raw", "dialled", "access_code")


async def leg_call(db: BillingDB, source: str, leg: str, before_ms: int) -> LegCall | None:
    """The stored call of ``source`` that had ``leg`` (extra dest_leg first, else
    orig_leg; indexes cdrs_dest_leg, cdrs_orig_leg, migration 016), not a conference
    bridge leg's own CDR (its orig_leg is the participant's leg too), the latest to
    start by ``before_ms`` (a leg id the cluster gave again long after); None: none."""

    async def work(conn: Conn) -> LegCall | None:
        for called, key in ((True, "dest_leg"), (False, "orig_leg")):
            cur = await conn.execute(
                f"SELECT call_id, caller, callee, extra FROM cdrs WHERE extra ? '{key}'"
                f" AND extra ->> '{key}' = %s AND source = %s AND NOT extra ? 'conference'"
                " AND start_time <= to_timestamp(%s / 1000.0) ORDER BY start_time DESC LIMIT 1",
                (leg, source, before_ms),
            )
            row = await cur.fetchone()
            if row is not None:
                extra = {k: str(row[3][k]) for k in _LEG_EXTRA if row[3].get(k)}
                return LegCall(str(row[0]), called, str(row[1]), str(row[2]), extra)
        return None

    result: LegCall | None = await db.run(work)
    return result


_KNOWN_ACCOUNT = """
SELECT EXISTS (SELECT 1 FROM cdrs WHERE account_id = %(a)s)
    OR EXISTS (SELECT 1 FROM ledger_journal WHERE account_id = %(a)s)
    OR EXISTS (SELECT 1 FROM billing_profiles WHERE account_id = %(a)s)
"""


async def account_known(db: BillingDB, account_id: str) -> bool:
    """The billing database has a trace of the account: a CDR, a ledger journal entry
    (the exporter copies its "open"), or a billing profile. False does not prove the
    account missing: one created since the last journal copy, with no call yet, lives
    in the ledger (Redis) only, which the caller asks then."""

    async def work(conn: Conn) -> bool:
        cur = await conn.execute(_KNOWN_ACCOUNT, {"a": account_id})
        row = await cur.fetchone()
        return bool(row and row[0])

    found: bool = await db.run(work)
    return found
