"""FreeSWITCH cdr_csv with legs = "ab": a bridged call whose two lines a rotation split.

mod_cdr_csv writes each leg of a bridged call when that leg hangs up; the A-leg names
the B-leg in ``${bleg_uuid}``. The parser pairs the two lines within one file
(formats/freeswitch.py); when the operator rotated the file between the two hang-ups
(``fsctl cdr_csv rotate``, logrotate), one line is in each file, in either order. The
parser then says so in ``RawCall.leg``: DANGLING (an A-leg whose B-leg is not in its
file), LONE (a line no line of its file names, naming none), TAIL (a LONE line that
ended within TAIL_S of its file's last line). ``settle`` decides such lines of a batch
with what the store holds, so that the call is billed once, from its A-leg:

* a LONE or TAIL line a stored CDR names (its extra ``bleg_uuid``, index
  cdrs_bleg_uuid) or a DANGLING A-leg of the batch names is a B-leg: skipped. So is it
  when the files are imported again, in any order, however long after;
* a DANGLING A-leg whose B-leg is stored as a call (billed before the A-leg came: an
  A-leg that lived on after the bridge and was written a file later, a kept line
  billed at its bound) is a duplicate: its call is billed already, once;
* a B-leg line kept from an earlier file (a TAIL, below) that a DANGLING A-leg names
  is forgotten once that A-leg is stored;
* an answered TAIL line nothing names yet is kept in the store (mediation_pending,
  kind LEG_KIND) instead of being billed: an A-leg in the next file may name it.
  ``due`` says when it is billed after all: once the source read a call that ended
  more than TAIL_S after it (the next file came and did not name it), or it was kept
  longer than ``[mediation] pending_max_age_s``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from chargingd.mediation.formats.freeswitch import TAIL_S
from chargingd.mediation.pendingdb import PendingHalf
from chargingd.mediation.store import CdrStore

# A kept line's kind in mediation_pending, and what `mediate --pending` says of it.
LEG_KIND = "leg"
LEG_REASON = (
    "answered at the end of its file and named by no line of it: the B-leg of an A-leg"
    " in the next file, or a call of its own"
)


@dataclass
class Settled:
    """What ``settle`` decided of a batch's lines, by uuid."""

    b_legs: set[str] = field(default_factory=set)  # LONE/TAIL lines that are B-legs
    billed: set[str] = field(default_factory=set)  # bleg_uuids of DANGLING A-legs stored
    stored_tails: set[str] = field(default_factory=set)  # TAIL lines stored already
    kept: list[PendingHalf] = field(default_factory=list)  # TAIL lines kept now
    forget: list[str] = field(default_factory=list)  # kept lines an A-leg names


async def settle(
    store: CdrStore,
    name: str,
    dangling: Sequence[str],
    lone: Sequence[str],
    tails: Sequence[PendingHalf],
) -> Settled:
    """Decide the batch's lines: the bleg_uuids its DANGLING A-legs name, the uuids of
    its LONE lines (billed unless a B-leg) and its answered TAIL lines (kept unless a
    B-leg or stored). Keeps the TAIL lines it must (see the module doc)."""
    out = Settled()
    named = set(dangling)
    if named:
        out.billed = set(await store.charges(name, sorted(named)))
        named -= out.billed
    if named:
        out.forget = sorted({h.key for h in await store.kept(name, sorted(named))
                             if h.kind == LEG_KIND})  # fmt: skip
    candidates = {*lone, *(t.key for t in tails)}
    if candidates:
        named |= await store.named(name, sorted(candidates))
    out.b_legs = candidates & named
    waiting = [t for t in tails if t.key not in out.b_legs]
    if waiting:
        out.stored_tails = set(await store.charges(name, sorted(t.key for t in waiting)))
        out.kept = [t for t in waiting if t.key not in out.stored_tails]
        await store.pend(name, out.kept)
    return out


def due(end_ms: int, since_ms: int, latest_end_ms: int, old_ms: int) -> bool:
    """A kept line that ended at ``end_ms``, kept since ``since_ms``, is billed now: the
    source read a call that ended TAIL_S after it (``latest_end_ms``: its next file came
    without an A-leg naming it), or it was kept since before ``old_ms``."""
    return end_ms + TAIL_S * 1000 < latest_end_ms or since_ms < old_ms
