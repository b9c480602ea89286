"""The rated CDR: one per call, whatever produced it (live session or mediated file).

Live sessions append it msgpack-encoded to the Redis stream ``cdr:stream`` (field
``cdr``); the exporter writes it to PostgreSQL, idempotent on (source, call_id).

``cost_micros`` is what the call costs under its tariff; ``charged_micros`` is what
the ledger actually moved for it (DESIGN invariant 7), and ``charge`` says how:

- ``live``: debited by the credit-control session (commit/release in the ledger);
- ``mediated_debit``: a mediated call posted to the ledger as one idempotent debit;
- ``recorded_only``: a mediated call chargingd already charged live (its live CDR
  carries the money), or a source that only records: the ledger never moves;
- ``none``: nothing was charged (unrated, or a source that does not charge).

``charge_reason`` says why ``charged_micros`` differs from ``cost_micros`` when it
does (``capped``, ``debt``, ``rerate``, ``unmatched``, ...); empty otherwise. Live
calls also say ``cut_tolerance`` (usage reported just past a cut or its
Session-Timeout, charged what was allowed), ``overrun`` (past it: the debt was
committed) and ``provisional`` (closed without the gateway's final word).

``revision`` orders the CDRs of one call: a call closed provisionally (reaped as
stale) and corrected by its late Stop has a revision 1 that replaces revision 0 in
the billing database, so it ends with one row carrying the final usage and charge.
"""

from __future__ import annotations

import dataclasses
import enum
import operator
from dataclasses import dataclass
from typing import Any

import msgpack

CDR_STREAM = "cdr:stream"

# msgpack.packb(o, use_bin_type=True) is interpreted Python that builds a Packer (and
# its buffer) per call; one Packer (autoreset: each pack returns its own bytes, and a
# failed pack leaves it empty) packs the same bytes, as sessions/record.py's does.
_packb: Any = msgpack.Packer(use_bin_type=True).pack

CHARGE_LIVE = "live"
CHARGE_MEDIATED = "mediated_debit"
CHARGE_RECORDED = "recorded_only"
CHARGE_NONE = "none"
CHARGES = (CHARGE_LIVE, CHARGE_MEDIATED, CHARGE_RECORDED, CHARGE_NONE)
# Charges whose charged_micros is money the ledger moved (rerating settles them).
LEDGER_CHARGES = (CHARGE_LIVE, CHARGE_MEDIATED)
# Sources whose CDRs come from live credit control (CDRs older than charged_micros).
LIVE_SOURCES = ("radius", "diameter")


class CdrStatus(enum.StrEnum):
    """How a call ended, as its CDR records it (stored as the plain string)."""

    NORMAL = "normal"  # answered and stopped by the gateway
    UNANSWERED = "unanswered"  # no talk time: nothing charged
    # The money ran out: the cutter ended it (cut confirmed), or it ran to (or within the
    # cut tolerance past) the Session-Timeout or grant its money set.
    CREDIT_CUT = "credit_cut"
    KILLED = "killed"  # an operator (or a fraud rule) ended it (cut confirmed)
    STALE = "stale"  # reaped: its gateway went silent (charged provisionally)
    GATEWAY_RESTART = "gateway_restart"  # closed because its gateway restarted
    OVERRUN = "overrun"  # the gateway ran past what was paid: the debt is committed


@dataclass(frozen=True)
class CDR:
    source: str  # "radius", "diameter", or a mediation source name
    call_id: str  # the source's own id (Acct-Session-Id, uniqueid, ...)
    account_id: str
    caller: str  # E.164 where known
    callee: str
    destination: str  # matched destination id / prefix name
    start_ms: int  # UTC epoch ms (call setup / authorize)
    answer_ms: int  # 0 when unanswered
    end_ms: int
    duration_s: int  # talk time reported by the switch
    billed_s: int  # after minimum duration and increments
    cost_micros: int
    currency: str
    tariff: str
    gateway: str  # NAS-IP-Address / switch name
    disconnect_cause: int  # Q.850 cause, 0 unknown
    status: str  # a CdrStatus value
    extra: dict[str, str] = dataclasses.field(default_factory=dict)
    charged_micros: int = 0  # what the ledger moved for this call (never negative)
    charge: str = CHARGE_NONE  # one of CHARGES
    charge_reason: str = ""  # why charged differs from cost ("" when it does not)
    # 0 for the first CDR of a call; a correction (a Stop after a provisional close,
    # sessions/late.py) writes the next revision, which replaces the stored row.
    revision: int = 0

    def pack(self) -> bytes:
        """msgpack of the fields by name (dataclasses.asdict's map without its deep copy:
        the same bytes, one per live call's close). The instance's ``__dict__`` is that
        map: __init__ (and ``of``) set every field, in field order, and a frozen
        instance gets no other attribute."""
        fields = self.__dict__
        if len(fields) != _COUNT:  # (never: a foreign attribute set behind frozen's back)
            fields = dict(zip(_ORDER, _VALUES(self), strict=True))
        return _packb(fields)  # type: ignore[no-any-return]

    @classmethod
    def of(cls, fields: dict[str, Any]) -> CDR:
        """The CDR of ``fields``: every field by name, in field order (``_ORDER``), as
        ``CDR(**fields)`` but without the frozen __init__'s interpreted
        ``object.__setattr__`` per field (23 of them, once per live call's close and per
        CDR decoded by the daemon's KPI feeder). ``fields`` becomes the instance's
        attributes: the caller gives it up. Anything else raises ValueError."""
        if tuple(fields) != _ORDER:
            raise ValueError("CDR fields must be every field, in field order")
        return _adopt(cls, fields)

    @classmethod
    def unpack(cls, raw: bytes) -> CDR:
        """Decode a packed CDR. Forward compatible: a field this version does not know
        (written by a newer exporter during a rolling upgrade) is dropped, not fatal; a
        missing required field still raises (TypeError). One written before
        ``charged_micros`` existed gets the value it had: a live CDR's cost was what its
        session debited, any other moved nothing."""
        data: dict[str, Any] = msgpack.unpackb(raw, raw=False)
        if not isinstance(data, dict):
            raise ValueError("CDR is not a map")
        # (the KPI feeder decodes every CDR in the daemon: no copy when all are known)
        if len(data) == _COUNT and tuple(data) == _ORDER:
            return _adopt(cls, data)  # what pack wrote: every field, in order, nothing else
        known = (
            data if _FIELDS.issuperset(data) else {k: v for k, v in data.items() if k in _FIELDS}
        )
        if "charged_micros" not in known and "charge" not in known:
            live = known.get("source") in LIVE_SOURCES
            known["charge"] = CHARGE_LIVE if live else CHARGE_NONE
            known["charged_micros"] = known.get("cost_micros", 0) if live else 0
        return cls(**known)


_ORDER = tuple(f.name for f in dataclasses.fields(CDR))
_FIELDS = frozenset(_ORDER)
_COUNT = len(_ORDER)
_VALUES = operator.attrgetter(*_ORDER)  # the fields' values in order, one C call
_NEW = object.__new__
_SETATTR = object.__setattr__


def _adopt(cls: type[CDR], fields: dict[str, Any]) -> CDR:
    """An instance whose attributes are ``fields`` (every field, in field order)."""
    cdr = _NEW(cls)
    _SETATTR(cdr, "__dict__", fields)
    return cdr
