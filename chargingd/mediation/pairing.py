"""Calls whose records a rotated file split: their halves are kept until paired.

An operator rotates a switch's CDR file hourly; a call that crosses the rotation has
its answered INVITE in one Kamailio acc file and its BYE in the next (a Cisco
gateway: its Start, then its Stop). A parser yields such a record as a ``Half``. The
Mediator hands the halves of a batch to ``resolve``, which, per key:

* the call is stored already (either file imported again, or the call came whole
  from a later file: a Cisco Stop alone is the call): a duplicate, and any half of it
  still kept is forgotten;
* else the half is kept in the store (the billing database: table
  mediation_pending), and when the store then holds halves of two kinds for the key
  (INVITE and BYE, in either order of the files), they are read again, in their
  order, by the format's own parser, as one file: the call it yields is rated,
  charged and stored like any other, and its halves are forgotten once it is stored.
  Two halves that still make no call (a BYE whose dialog tags do not match) reject
  the newer one, saying why; the older stays kept;
* else it stays kept: the summary counts the source's kept halves (``pending N``).

``rejoin``: a Kamailio call read whole from one file (a session timer's re-INVITE,
then the BYE) whose call id has an INVITE kept from an earlier file began there.

``expire`` rejects the halves kept longer than ``[mediation] pending_max_age_s``,
each with its reason: nothing is dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Generic, TypeVar

from chargingd.billing.cdr import CdrStatus
from chargingd.core.config.mediation import SourceConfig
from chargingd.mediation.formats import parser_for
from chargingd.mediation.pendingdb import PendingHalf
from chargingd.mediation.records import Half, RawCall, Reject
from chargingd.mediation.store import CdrStore

# The formats whose parsers yield halves: their stored calls end any kept half.
PAIRED_FORMATS = frozenset({"kamailio", "kamailio_db", "cisco_radius"})
# The formats whose call read whole from one file may have begun in an earlier one.
REJOINED_FORMATS = frozenset({"kamailio", "kamailio_db"})

T = TypeVar("T")


@dataclass(slots=True)
class Met(Generic[T]):
    """A half met in a file being mediated; ``owner``: the file's run."""

    half: Half
    line_no: int
    file: str
    owner: T


# The halves that belong to an answered call only (kamailio: an answered INVITE, a BYE).
_ANSWERED_HALVES = ("INVITE", "BYE")


@dataclass
class Resolved(Generic[T]):
    """What became of a batch's halves."""

    calls: list[tuple[Met[T], RawCall]] = field(default_factory=list)  # paired
    rejects: list[tuple[Met[T], Reject]] = field(default_factory=list)
    duplicates: int = 0
    done: list[str] = field(default_factory=list)  # keys to forget once stored


async def resolve(
    store: CdrStore, name: str, source: SourceConfig, met: list[Met[T]]
) -> Resolved[T]:
    """Pair, keep or count as duplicates the halves ``met`` (see the module doc)."""
    out: Resolved[T] = Resolved()
    keys = sorted({m.half.key for m in met})
    found = await store.charges(name, keys)
    # A Kamailio INVITE or BYE half is part of an answered call: an unanswered call
    # stored under its Call-ID (a failed serial-forking branch, logged as "call missed"
    # in an earlier file) does not end it; the pipeline stores the call as <id>#answered.
    # Before 2026-12-07 the half was a duplicate and the answered call never billed.
    stored = {
        key
        for key, charge in found.items()
        if charge.status != CdrStatus.UNANSWERED
        or any(m.half.kind not in _ANSWERED_HALVES for m in met if m.half.key == key)
    }
    if stored:
        out.done.extend(sorted(stored))
    fresh: dict[tuple[str, str], Met[T]] = {}
    for m in met:
        at = (m.half.key, m.half.kind)
        if m.half.key in stored or at in fresh:
            out.duplicates += 1  # the call is stored, or the same half twice in the run
        else:
            fresh[at] = m
    kept = await store.pend(name, [_pending(m) for m in fresh.values()])
    for key, halves in kept.items():
        if len({h.kind for h in halves}) < 2:
            continue  # waits for its other half
        mine = [m for (k, _), m in fresh.items() if k == key]
        call, why = _paired(source, halves)
        if call is not None:
            call.extra["paired"] = " ".join(f"{h.file}:{h.line}" for h in halves)
            out.calls.append((mine[-1], call))
            out.done.append(key)
            continue
        older = [h for h in halves if (h.key, h.kind) not in fresh]
        for m in mine:
            if older:  # this half is the newer one: rejected, the older stays kept
                other = older[0]
                reason = (
                    f"cannot be paired with the {other.kind} of {other.file}:{other.line}: {why}"
                )
                out.rejects.append((m, Reject(reason, m.half.raw)))
                await store.unpend(name, [(m.half.key, m.half.kind)])
        if not older:  # both met in this run: both rejected
            out.rejects.extend((m, Reject(why, m.half.raw)) for m in mine)
            out.done.append(key)
    return out


def _pending(m: Met[T]) -> PendingHalf:
    h = m.half
    return PendingHalf(h.key, h.kind, h.order, h.reason, h.raw, h.head, m.file, m.line_no)


async def rejoin(
    store: CdrStore, name: str, source: SourceConfig, calls: dict[str, str]
) -> dict[str, RawCall]:
    """Calls read whole from one file (``calls``: call id -> its records) whose call id
    has an INVITE kept from an earlier file: that file held a re-INVITE of the dialog
    (a session timer's refresh, RFC 4028) and its BYE, so the call began at the kept
    INVITE. Each read again after it (the re-INVITE is then part of the call): the
    call from the kept INVITE to the BYE, by call id."""
    found: dict[str, list[PendingHalf]] = {}
    for half in await store.kept(name, sorted(calls)):
        found.setdefault(half.key, []).append(half)
    joined: dict[str, RawCall] = {}
    for key, halves in found.items():
        if any(h.order != 0 for h in halves):
            continue  # a kept BYE: no earlier start
        call, _ = _paired(source, halves, calls[key])
        if call is not None:
            call.extra["paired"] = " ".join(f"{h.file}:{h.line}" for h in halves)
            joined[key] = call
    return joined


def _paired(
    source: SourceConfig, halves: list[PendingHalf], tail: str = ""
) -> tuple[RawCall | None, str]:
    """The call the halves (then ``tail``) make, read again in order as one file; else
    why not."""
    ordered = sorted(halves, key=lambda h: h.order)
    text: list[str] = []
    head = ""
    for h in ordered:  # each half after its own export's header (its columns)
        if h.head and h.head != head:
            text.append(h.head)
            head = h.head
        text.append(h.raw)
    text += [tail] if tail else []
    lines = [line + "\n" for part in text for line in part.split("\n")]
    why = "the halves make no call"
    for _, item in parser_for(source)(lines):
        if isinstance(item, RawCall):
            item.extra.pop("bye_line", None)  # a line of the joined text, not of a file
            return item, ""
        if not isinstance(item, Half):
            why = item.reason
    return None, why


async def expire(
    store: CdrStore, name: str, max_age_s: int
) -> tuple[list[tuple[PendingHalf, Reject]], list[tuple[str, str]]]:
    """The halves kept longer than ``max_age_s`` whose call was never stored, each with
    its reject; and every such half (stored or not), to forget once they are written."""
    old = await store.expired(name, max_age_s)
    if not old:
        return [], []
    stored = await store.charges(name, sorted({h.key for h in old}))
    rejects: list[tuple[PendingHalf, Reject]] = []
    for h in old:
        if h.key in stored:
            continue  # its call came whole later (stored, the half not forgotten yet)
        since = datetime.fromtimestamp(h.since_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
        reason = (
            f"{h.reason}; kept since {since} UTC (from {h.file}:{h.line}), its other half"
            f" never came within pending_max_age_s = {max_age_s}"
        )
        rejects.append((h, Reject(reason, h.raw)))
    return rejects, [(h.key, h.kind) for h in old]
