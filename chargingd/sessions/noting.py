"""An accounting packet noted on a record this process holds, in Python.

session_touch.lua notes a packet on a session record (usage never backwards, the
packet time, the answer time once, the gateway's own ids) and returns the record, so
that the renewal (Interim) or the close (Stop) that follows can be priced: two scripts
and two Redis round trips per packet, each unpacking and packing the record.

The store keeps the stored value of the records its scripts last returned or wrote
(SessionStore.cached). For a packet of such a call, ``note`` applies the same rules
to that value here; the renew or close script then writes the note with its money
step, in one script, provided the stored value is still the one noted on (compared
byte for byte: any other writer, such as another daemon's packet, the cutter or a
top-up, changes it). When it is not, the script changes nothing and answers 'stale':
the caller takes the two-script path, which reads the record as it is.
"""

from __future__ import annotations

from typing import Any, Final

from chargingd.sessions.record import Layout, SessionRecord, fields_map
from chargingd.sessions.store import USAGE_SLACK_S


class Noted:
    """A packet noted on a held record: the stored value it was noted on (``before``),
    the record with the packet noted (``rec``), what that changed (``fields``) and the
    gateway the packet came from (whose last-seen zset it moves). One per Interim and
    Stop: a plain class (a dataclass's __init__ is interpreted even compiled)."""

    __slots__ = ("before", "fields", "gateway", "rec")

    def __init__(
        self, before: bytes, rec: SessionRecord, fields: dict[str, str | int], gateway: str = ""
    ) -> None:
        self.before: Final = before
        self.rec: Final = rec
        self.fields: Final = fields
        self.gateway: Final = gateway

    def after(self, layout: Layout | None = None, **grant: int) -> tuple[SessionRecord, bytes]:
        """``rec`` with ``grant``'s fields too, and its stored value in ``layout``
        (None: LEGACY)."""
        rec = self.rec.replace(**grant) if grant else self.rec
        return rec, rec.pack(layout=layout)

    def after_grant(
        self,
        layout: Layout | None,
        debited_micros: int,
        held_micros: int,
        paid_usage_s: int,
        deadline_ms: int,
    ) -> tuple[SessionRecord, bytes]:
        """``after`` of a renewed grant (sessions/fused.py): debited, held and paid,
        not limited, and ``deadline_ms`` when not 0 (else the record's own), without
        the keyword dict (SessionRecord.granted)."""
        rec = self.rec
        rec = rec.granted(
            debited_micros, held_micros, paid_usage_s, 0, deadline_ms or rec.deadline_ms
        )
        return rec, rec.pack(layout=layout)

    def fields_map(self, layout: Layout | None = None) -> bytes:
        """The noted fields as session_renew.lua merges them into the stored value."""
        return fields_map(self.fields, layout)


def note(
    before: bytes,
    rec: SessionRecord,
    *,
    usage_s: int,
    now_ms: int,
    answer_ms: int,
    nas_session_id: str = "",
    call_origin: str = "",
    gateway: str = "",
    answer_move_ms: int = 0,
) -> Noted | None:
    """session_touch.lua's rules on ``rec`` (live, decoded from ``before``); None when
    the usage is longer than the call has existed here (the script path orphans it).
    ``answer_move_ms``: the answer an Interim says (0: none), see answer_moved."""
    if usage_s * 1000 > now_ms - rec.auth_ms + USAGE_SLACK_S * 1000:
        return None
    fields: dict[str, Any] = {"last_seen_ms": now_ms}
    # the noted record built positionally (SessionRecord.noted), not by replace(**fields)
    last_usage_s, nas, origin, answered = (
        rec.last_usage_s,
        rec.nas_session_id,
        rec.call_origin,
        rec.answer_ms,
    )
    moved = answer_moved(answered, answer_move_ms, last_usage_s, usage_s, now_ms)
    if usage_s > last_usage_s:
        fields["last_usage_s"] = last_usage_s = usage_s
    if nas_session_id:
        fields["nas_session_id"] = nas = nas_session_id
    if call_origin:
        fields["call_origin"] = origin = call_origin
    if answer_ms > 0 and not answered:
        fields["answer_ms"] = answered = answer_ms
    elif moved:
        fields["answer_ms"] = answered = moved
    noted = rec.noted(now_ms, last_usage_s, answered, nas, origin)
    return Noted(before, noted, fields, gateway)


def answer_moved(
    answered_ms: int, move_ms: int, last_usage_s: int, usage_s: int, now_ms: int
) -> int:
    """Where an Interim moves the answer of a call its Start answered (0: it does not).
    The h323 dialect's Start goes at the leg's setup; its Interim says when the leg
    connected (``move_ms``: the earliest it can have, sessions/accounting.py
    answer_move_ms_of). Later only, and never later than ``usage_s`` before now
    (chargingd's clock: a gateway clock ahead of it moves nothing past what it has
    seen), so the deadlines counted from it (own timer, a limited call's, the reaper's)
    cut early by a second at most, never past the money. One that reports no talk
    moves it only while no talk was reported: once talk is on the record, a later
    packet's connect time is no news. session_touch.lua applies the same rule."""
    if not answered_ms or move_ms <= answered_ms:
        return 0
    if usage_s == 0 and last_usage_s > 0:
        return 0
    move_ms = min(move_ms, now_ms - usage_s * 1000)
    return move_ms if move_ms > answered_ms else 0
