"""The live session record and its stored form: one compact msgpack value per call.

A record is one Redis string ``{a:ACC}:r:SID`` (one expiry) holding a msgpack map of
the fields that differ from their defaults, keyed by short codes (``CODES``); the
session and account ids are not stored (they are in the key). Short codes and no
defaults keep a new call's record near 120 bytes of value, where a hash of the full
field names took ~470 bytes of Redis memory (docs/performance.md).

Two layouts (``Layout``): LEGACY, keyed by those codes with the state always stored
(what versions before the layouts read), and COMPACT ([sessions] compact_records),
keyed by small integers (``INT_CODES``), the state left out while live, answer_ms and
last_seen_ms as ms since auth_ms: 43-55 bytes less for a started call
(docs/performance.md, round 13c). Every reader here takes both; a daemon writes its
own, whole (docs/credit-control.md "Upgrading to compact records").

The session scripts (sessions/lua/*.lua) read and write the same map with Redis's
built-in ``cmsgpack``; they name a field ``$field_name``, replaced by its code in the
daemon's layout when the script is loaded (``record_lua``), so the codes are written in
one place, and decode a record with ``rec_unpack`` (either layout, into the daemon's).
Integers stay integers both ways (cmsgpack packs an integral Lua number as an int).
"""

from __future__ import annotations

import re
from typing import Any, Final, cast

import msgpack

from chargingd.core.chain import chained

# the field table, re-exported (its users import it from here)
from chargingd.sessions.recordspec import CLOSED as CLOSED
from chargingd.sessions.recordspec import CODES as CODES
from chargingd.sessions.recordspec import FIELDS as FIELDS
from chargingd.sessions.recordspec import INT_CODES as INT_CODES
from chargingd.sessions.recordspec import INT_SAME_CONF_ID as INT_SAME_CONF_ID
from chargingd.sessions.recordspec import LIVE as LIVE
from chargingd.sessions.recordspec import REQUIRED as REQUIRED
from chargingd.sessions.recordspec import SAME_CONF_ID as SAME_CONF_ID

# msgpack.packb(o, use_bin_type=True) is interpreted Python that builds a Packer per
# call; one Packer (autoreset: each pack returns its own bytes, and a failed pack
# leaves it empty) packs the same bytes (tests/sessions/test_record_bytes.py).
_packb: Any = msgpack.Packer(use_bin_type=True).pack


class SessionRecord:
    """One call as sessions/service.py knows it; integers carry their unit in the name.

    Built and packed on every request: a plain class with its own __init__ (compiled, a
    native class: a dataclass's __init__ is interpreted, one object.__setattr__ per
    field), frozen (Final: read-only compiled), with a dataclass's equality, hash and
    repr; ``replace`` and ``as_dict`` stand for dataclasses.replace and asdict, FIELDS
    for dataclasses.fields (docs/performance.md, round 8a)."""

    __slots__ = (
        "_head",
        "_head_keys",
        "account_id",
        "adopted",
        "answer_ms",
        "auth_ms",
        "call_origin",
        "callee",
        "caller",
        "cdr_revision",
        "charged_micros",
        "client",
        "conf_id",
        "cost_micros",
        "credit_micros",
        "currency",
        "cut_attempts",
        "cut_ms",
        "cut_ok",
        "cut_reason",
        "deadline_ms",
        "debited_micros",
        "destination",
        "gateway",
        "held_micros",
        "last_seen_ms",
        "last_usage_s",
        "limited",
        "nas_session_id",
        "paid_usage_s",
        "plan",
        "provisional",
        "reported_usage_s",
        "session_id",
        "state",
        "status",
        "user_name",
    )

    def __init__(
        self,
        session_id: str,
        account_id: str,
        user_name: str,
        caller: str,  # E.164 where it could be normalised
        callee: str,
        destination: str,  # matched destination id
        plan: str,  # tariff plan id
        currency: str,
        gateway: str,
        client: str,
        auth_ms: int,
        answer_ms: int = 0,
        last_seen_ms: int = 0,
        last_usage_s: int = 0,
        debited_micros: int = 0,  # cumulative cost committed so far
        held_micros: int = 0,  # current hold (the grant beyond the debited cost)
        paid_usage_s: int = 0,  # usage that debited + held money pays for
        limited: int = 0,  # 1 when the last grant was partial (the session has a deadline)
        deadline_ms: int = 0,
        cut_reason: str = "",  # "credit_cut" | "killed" | "" (why the cutter cut it)
        cut_attempts: int = 0,
        cut_ms: int = 0,  # when the latest cut attempt went out
        cut_ok: int = 0,  # 1 once the gateway confirmed it
        adopted: int = 0,  # 1 when accounting arrived without our authorize
        # What the gateway's POD handler matches a Disconnect-Request on (Cisco): its own
        # Acct-Session-Id when the session is keyed by the h323-conf-id, the conf-id, and
        # the charged leg's h323-call-origin. Learnt from the Access-Request and accounting.
        nas_session_id: str = "",
        conf_id: str = "",
        call_origin: str = "",
        # The money the Session-Timeout last told to the gateway stands for (authorize,
        # CoA after a top-up): part of what the call is allowed (sessions/settle.py).
        credit_micros: int = 0,
        state: str = LIVE,
        # Once closed, what its CDR said (late accounting reads them, sessions/late.py).
        status: str = "",
        cost_micros: int = 0,
        charged_micros: int = 0,
        provisional: int = 0,  # 1: closed without the gateway's word (reaper, restart)
        reported_usage_s: int = 0,  # the most usage the gateway had reported when it closed
        cdr_revision: int = 0,  # the CDR's revision (a correction writes the next one)
    ) -> None:
        self.session_id: Final = session_id
        self.account_id: Final = account_id
        self.user_name: Final = user_name
        self.caller: Final = caller
        self.callee: Final = callee
        self.destination: Final = destination
        self.plan: Final = plan
        self.currency: Final = currency
        self.gateway: Final = gateway
        self.client: Final = client
        self.auth_ms: Final = auth_ms
        self.answer_ms: Final = answer_ms
        self.last_seen_ms: Final = last_seen_ms
        self.last_usage_s: Final = last_usage_s
        self.debited_micros: Final = debited_micros
        self.held_micros: Final = held_micros
        self.paid_usage_s: Final = paid_usage_s
        self.limited: Final = limited
        self.deadline_ms: Final = deadline_ms
        self.cut_reason: Final = cut_reason
        self.cut_attempts: Final = cut_attempts
        self.cut_ms: Final = cut_ms
        self.cut_ok: Final = cut_ok
        self.adopted: Final = adopted
        self.nas_session_id: Final = nas_session_id
        self.conf_id: Final = conf_id
        self.call_origin: Final = call_origin
        self.credit_micros: Final = credit_micros
        self.state: Final = state
        self.status: Final = status
        self.cost_micros: Final = cost_micros
        self.charged_micros: Final = charged_micros
        self.provisional: Final = provisional
        self.reported_usage_s: Final = reported_usage_s
        self.cdr_revision: Final = cdr_revision
        # _write's first HEAD_PAIRS pairs (user .. auth_ms: fixed for a call's life) as
        # written for ``_head_keys``'s layout; carried by noted, granted and closed
        # (never by replace): not a field (no part of equality, hash or repr)
        self._head: bytes = b""
        self._head_keys: Layout | None = None

    def as_dict(self) -> dict[str, Any]:
        """Field -> value in field order (dataclasses.asdict of the dataclass it was)."""
        return {
            "session_id": self.session_id,
            "account_id": self.account_id,
            "user_name": self.user_name,
            "caller": self.caller,
            "callee": self.callee,
            "destination": self.destination,
            "plan": self.plan,
            "currency": self.currency,
            "gateway": self.gateway,
            "client": self.client,
            "auth_ms": self.auth_ms,
            "answer_ms": self.answer_ms,
            "last_seen_ms": self.last_seen_ms,
            "last_usage_s": self.last_usage_s,
            "debited_micros": self.debited_micros,
            "held_micros": self.held_micros,
            "paid_usage_s": self.paid_usage_s,
            "limited": self.limited,
            "deadline_ms": self.deadline_ms,
            "cut_reason": self.cut_reason,
            "cut_attempts": self.cut_attempts,
            "cut_ms": self.cut_ms,
            "cut_ok": self.cut_ok,
            "adopted": self.adopted,
            "nas_session_id": self.nas_session_id,
            "conf_id": self.conf_id,
            "call_origin": self.call_origin,
            "credit_micros": self.credit_micros,
            "state": self.state,
            "status": self.status,
            "cost_micros": self.cost_micros,
            "charged_micros": self.charged_micros,
            "provisional": self.provisional,
            "reported_usage_s": self.reported_usage_s,
            "cdr_revision": self.cdr_revision,
        }

    def replace(self, **changes: Any) -> SessionRecord:
        """A copy with ``changes`` (dataclasses.replace; an unknown field: TypeError)."""
        if not _NAMES.issuperset(changes):
            raise TypeError(f"SessionRecord has no field {sorted(set(changes) - _NAMES)}")
        return SessionRecord(
            changes.get("session_id", self.session_id),
            changes.get("account_id", self.account_id),
            changes.get("user_name", self.user_name),
            changes.get("caller", self.caller),
            changes.get("callee", self.callee),
            changes.get("destination", self.destination),
            changes.get("plan", self.plan),
            changes.get("currency", self.currency),
            changes.get("gateway", self.gateway),
            changes.get("client", self.client),
            changes.get("auth_ms", self.auth_ms),
            changes.get("answer_ms", self.answer_ms),
            changes.get("last_seen_ms", self.last_seen_ms),
            changes.get("last_usage_s", self.last_usage_s),
            changes.get("debited_micros", self.debited_micros),
            changes.get("held_micros", self.held_micros),
            changes.get("paid_usage_s", self.paid_usage_s),
            changes.get("limited", self.limited),
            changes.get("deadline_ms", self.deadline_ms),
            changes.get("cut_reason", self.cut_reason),
            changes.get("cut_attempts", self.cut_attempts),
            changes.get("cut_ms", self.cut_ms),
            changes.get("cut_ok", self.cut_ok),
            changes.get("adopted", self.adopted),
            changes.get("nas_session_id", self.nas_session_id),
            changes.get("conf_id", self.conf_id),
            changes.get("call_origin", self.call_origin),
            changes.get("credit_micros", self.credit_micros),
            changes.get("state", self.state),
            changes.get("status", self.status),
            changes.get("cost_micros", self.cost_micros),
            changes.get("charged_micros", self.charged_micros),
            changes.get("provisional", self.provisional),
            changes.get("reported_usage_s", self.reported_usage_s),
            changes.get("cdr_revision", self.cdr_revision),
        )

    def noted(
        self,
        last_seen_ms: int,
        last_usage_s: int,
        answer_ms: int,
        nas_session_id: str,
        call_origin: str,
    ) -> SessionRecord:
        """``replace`` of the fields an accounting packet notes (sessions/noting.py):
        positional, no keyword dict and no 35 look-ups in it (~10,000 -> ~1,500
        instructions per packet noted, round 13b)."""
        rec = SessionRecord(
            self.session_id,
            self.account_id,
            self.user_name,
            self.caller,
            self.callee,
            self.destination,
            self.plan,
            self.currency,
            self.gateway,
            self.client,
            self.auth_ms,
            answer_ms,
            last_seen_ms,
            last_usage_s,
            self.debited_micros,
            self.held_micros,
            self.paid_usage_s,
            self.limited,
            self.deadline_ms,
            self.cut_reason,
            self.cut_attempts,
            self.cut_ms,
            self.cut_ok,
            self.adopted,
            nas_session_id,
            self.conf_id,
            call_origin,
            self.credit_micros,
            self.state,
            self.status,
            self.cost_micros,
            self.charged_micros,
            self.provisional,
            self.reported_usage_s,
            self.cdr_revision,
        )
        rec._head = self._head  # (the head's fields kept)
        rec._head_keys = self._head_keys
        return rec

    def granted(
        self,
        debited_micros: int,
        held_micros: int,
        paid_usage_s: int,
        limited: int,
        deadline_ms: int,
    ) -> SessionRecord:
        """``replace`` of the grant's fields (an Interim renewed on a noted record,
        sessions/fused.py), positional as ``noted``."""
        rec = SessionRecord(
            self.session_id,
            self.account_id,
            self.user_name,
            self.caller,
            self.callee,
            self.destination,
            self.plan,
            self.currency,
            self.gateway,
            self.client,
            self.auth_ms,
            self.answer_ms,
            self.last_seen_ms,
            self.last_usage_s,
            debited_micros,
            held_micros,
            paid_usage_s,
            limited,
            deadline_ms,
            self.cut_reason,
            self.cut_attempts,
            self.cut_ms,
            self.cut_ok,
            self.adopted,
            self.nas_session_id,
            self.conf_id,
            self.call_origin,
            self.credit_micros,
            self.state,
            self.status,
            self.cost_micros,
            self.charged_micros,
            self.provisional,
            self.reported_usage_s,
            self.cdr_revision,
        )
        rec._head = self._head  # (the head's fields kept)
        rec._head_keys = self._head_keys
        return rec

    def closed(
        self,
        last_usage_s: int,
        status: str,
        cost_micros: int,
        charged_micros: int,
        provisional: int,
        reported_usage_s: int,
        cdr_revision: int,
    ) -> SessionRecord:
        """``replace`` of what a close writes (state CLOSED and its CDR's figures:
        sessions/close.py closed_fields), positional as ``noted``."""
        rec = SessionRecord(
            self.session_id,
            self.account_id,
            self.user_name,
            self.caller,
            self.callee,
            self.destination,
            self.plan,
            self.currency,
            self.gateway,
            self.client,
            self.auth_ms,
            self.answer_ms,
            self.last_seen_ms,
            last_usage_s,
            self.debited_micros,
            self.held_micros,
            self.paid_usage_s,
            self.limited,
            self.deadline_ms,
            self.cut_reason,
            self.cut_attempts,
            self.cut_ms,
            self.cut_ok,
            self.adopted,
            self.nas_session_id,
            self.conf_id,
            self.call_origin,
            self.credit_micros,
            CLOSED,
            status,
            cost_micros,
            charged_micros,
            provisional,
            reported_usage_s,
            cdr_revision,
        )
        rec._head = self._head  # (the head's fields kept)
        rec._head_keys = self._head_keys
        return rec

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, SessionRecord)
        return self.as_dict() == other.as_dict()

    def __hash__(self) -> int:
        return hash(tuple(self.as_dict().values()))

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self.as_dict().items())
        return f"SessionRecord({inner})"

    @property
    def member(self) -> bytes:
        return member(self.account_id, self.session_id)

    def stored(
        self, *, omit: tuple[str, ...] = (), layout: Layout | None = None
    ) -> dict[Any, str | int]:
        """Code -> value of the fields that differ from their defaults (state always),
        ``omit`` left out: the map the record is stored as. Not stored twice: a
        conf_id equal to the session id (Cisco: the session id is the h323-conf-id)
        is the flag ``SAME_CONF_ID``, a last_seen_ms equal to auth_ms (a new call) is
        left out (from_fields restores both). ``layout`` COMPACT: the same map by
        INT_CODES, the state left out while live."""
        out = self._stored(omit)
        if layout is None or not layout.compact:
            return out
        compact: dict[Any, str | int] = {}
        for code, value in out.items():
            if code == _STATE and value == LIVE:
                continue
            if code in _SINCE_AUTH:
                value = self.answer_ms if code == _ANSWER else self.last_seen_ms
                value -= self.auth_ms
            compact[_TO_INT[code]] = value
        return compact

    def _stored(self, omit: tuple[str, ...]) -> dict[Any, str | int]:
        out: dict[Any, str | int] = {
            "u": self.user_name,
            "cg": self.caller,
            "cd": self.callee,
            "ds": self.destination,
            "pl": self.plan,
            "cu": self.currency,
            "gw": self.gateway,
            "cl": self.client,
            "at": self.auth_ms,
        }
        self._stored_grant(out)
        self._stored_cut(out)
        out["st"] = self.state
        self._stored_closed(out)
        if self.conf_id != "" and self.conf_id == self.session_id:
            out[SAME_CONF_ID] = 1
        for name in omit:
            out.pop(CODES[name], None)
        return out

    # stored() in three parts (one branch per field: native attribute reads and compares)
    def _stored_grant(self, out: dict[str, str | int]) -> None:
        if self.answer_ms != 0:
            out["an"] = self.answer_ms
        if self.last_seen_ms != 0 and self.last_seen_ms != self.auth_ms:
            out["ls"] = self.last_seen_ms
        if self.last_usage_s != 0:
            out["lu"] = self.last_usage_s
        if self.debited_micros != 0:
            out["db"] = self.debited_micros
        if self.held_micros != 0:
            out["hd"] = self.held_micros
        if self.paid_usage_s != 0:
            out["pu"] = self.paid_usage_s
        if self.limited != 0:
            out["lm"] = self.limited
        if self.deadline_ms != 0:
            out["dl"] = self.deadline_ms

    def _stored_cut(self, out: dict[str, str | int]) -> None:
        if self.cut_reason != "":
            out["cr"] = self.cut_reason
        if self.cut_attempts != 0:
            out["ca"] = self.cut_attempts
        if self.cut_ms != 0:
            out["cm"] = self.cut_ms
        if self.cut_ok != 0:
            out["co"] = self.cut_ok
        if self.adopted != 0:
            out["ad"] = self.adopted
        if self.nas_session_id != "":
            out["ns"] = self.nas_session_id
        if self.conf_id != "" and self.conf_id != self.session_id:
            out["cf"] = self.conf_id
        if self.call_origin != "":
            out["or"] = self.call_origin
        if self.credit_micros != 0:
            out["cc"] = self.credit_micros

    def _stored_closed(self, out: dict[str, str | int]) -> None:
        if self.status != "":
            out["ss"] = self.status
        if self.cost_micros != 0:
            out["cs"] = self.cost_micros
        if self.charged_micros != 0:
            out["ch"] = self.charged_micros
        if self.provisional != 0:
            out["pv"] = self.provisional
        if self.reported_usage_s != 0:
            out["ru"] = self.reported_usage_s
        if self.cdr_revision != 0:
            out["rv"] = self.cdr_revision

    def pack(
        self, *, extra: int = 0, omit: tuple[str, ...] = (), layout: Layout | None = None
    ) -> bytes:
        """The stored value. ``extra``: that many code/value pairs follow, appended by a
        script (the map header counts them); ``omit``: fields the script writes;
        ``layout``: LEGACY (None) or COMPACT ([sessions] compact_records)."""
        keys = LEGACY if layout is None else layout
        # The record's fields written straight (_write): no stored() map built and
        # walked (~23,000 -> ~10,000 instructions per authorize, round 11); nothing
        # omitted or only credit_micros (the fused authorize's), else the map's path.
        if not omit or (len(omit) == 1 and omit[0] == "credit_micros"):
            try:
                return self._write(extra, not omit, keys)
            except _Unwritten:
                pass  # a value _write_map leaves to msgpack: the map's path
        return self._pack_map(extra, omit, keys)

    def _pack_map(self, extra: int, omit: tuple[str, ...], keys: Layout) -> bytes:
        """pack() through stored(): the map written by _write_map, or by msgpack."""
        fields = self.stored(omit=omit, layout=keys)
        written = _write_map(fields, len(fields) + extra)
        if written is not None:
            return written
        body: bytes = _packb(fields)  # a value msgpack itself packs (or refuses)
        if not extra:
            return body
        return map_header(len(fields) + extra) + body[len(map_header(len(fields))) :]

    def _write(self, extra: int, credit: bool, k: Layout) -> bytes:
        """stored()'s map as _write_map writes it, straight from the fields, in
        stored()'s order (credit_micros left out when not ``credit``); _Unwritten for a
        value _write_map leaves to msgpack (not exactly a str or an int, a str that is
        not UTF-8, an int outside 64 bits); ``k``: the layout's keys."""
        # the header, once the pairs are counted; the head's HEAD_PAIRS pairs
        head = self._head if self._head_keys is k else self._write_head(k)
        parts: list[bytes] = [b"", head]
        self._write_grant(parts, k)
        self._write_cut(parts, credit, k)
        if not k.compact or self.state != LIVE:
            _put_str(parts, k.state, self.state)
        self._write_closed(parts, k)
        if self.conf_id != "" and self.conf_id == self.session_id:
            parts.append(k.same_conf_id)
            parts.append(_POS_FIX[1])
        # every pair after the head is two parts (_put_str, _put_int)
        parts[0] = map_header(HEAD_PAIRS + (len(parts) - 2) // 2 + extra)
        return b"".join(parts)

    def head_size(self, layout: Layout | None = None) -> int:
        """The size of the packed head (``_write_head``) this record keeps for
        ``layout`` (None: LEGACY), 0 when it keeps none: how far past its map header a
        value packed from this record starts with it."""
        return len(self._head) if self._head_keys is (LEGACY if layout is None else layout) else 0

    def keep_head(self, head: bytes, layout: Layout | None = None) -> None:
        """Keep ``head`` as this record's packed head for ``layout`` (None: LEGACY): the
        bytes ``_write_head`` writes for it, cut from a value packed from a record
        with the same fields (SessionStore.cached: the authorize's prefix)."""
        self._head = head
        self._head_keys = LEGACY if layout is None else layout

    def _write_head(self, k: Layout) -> bytes:
        """_write's first HEAD_PAIRS pairs (the fields a call never changes), kept on
        the record for ``k``: an Interim's and a Stop's packs of a held record write
        them once a call, not once a pack (docs/performance.md, round 17b)."""
        parts: list[bytes] = []
        _put_str(parts, k.user, self.user_name)
        _put_str(parts, k.caller, self.caller)
        _put_str(parts, k.callee, self.callee)
        _put_str(parts, k.destination, self.destination)
        _put_str(parts, k.plan, self.plan)
        _put_str(parts, k.currency, self.currency)
        _put_str(parts, k.gateway, self.gateway)
        _put_str(parts, k.client, self.client)
        _put_int(parts, k.auth_ms, self.auth_ms)
        head = b"".join(parts)
        self._head = head
        self._head_keys = k
        return head

    # _write's parts: _stored_grant's, _stored_cut's and _stored_closed's fields
    def _write_grant(self, parts: list[bytes], k: Layout) -> None:
        # COMPACT: answer_ms and last_seen_ms as ms since auth_ms (3-5 bytes, not 9)
        since = self.auth_ms if k.compact else 0
        if self.answer_ms != 0:
            _put_int(parts, k.answer_ms, self.answer_ms - since)
        if self.last_seen_ms != 0 and self.last_seen_ms != self.auth_ms:
            _put_int(parts, k.last_seen_ms, self.last_seen_ms - since)
        if self.last_usage_s != 0:
            _put_int(parts, k.last_usage_s, self.last_usage_s)
        if self.debited_micros != 0:
            _put_int(parts, k.debited_micros, self.debited_micros)
        if self.held_micros != 0:
            _put_int(parts, k.held_micros, self.held_micros)
        if self.paid_usage_s != 0:
            _put_int(parts, k.paid_usage_s, self.paid_usage_s)
        if self.limited != 0:
            _put_int(parts, k.limited, self.limited)
        if self.deadline_ms != 0:
            _put_int(parts, k.deadline_ms, self.deadline_ms)

    def _write_cut(self, parts: list[bytes], credit: bool, k: Layout) -> None:
        if self.cut_reason != "":
            _put_str(parts, k.cut_reason, self.cut_reason)
        if self.cut_attempts != 0:
            _put_int(parts, k.cut_attempts, self.cut_attempts)
        if self.cut_ms != 0:
            _put_int(parts, k.cut_ms, self.cut_ms)
        if self.cut_ok != 0:
            _put_int(parts, k.cut_ok, self.cut_ok)
        if self.adopted != 0:
            _put_int(parts, k.adopted, self.adopted)
        if self.nas_session_id != "":
            _put_str(parts, k.nas_session_id, self.nas_session_id)
        if self.conf_id != "" and self.conf_id != self.session_id:
            _put_str(parts, k.conf_id, self.conf_id)
        if self.call_origin != "":
            _put_str(parts, k.call_origin, self.call_origin)
        if credit and self.credit_micros != 0:
            _put_int(parts, k.credit_micros, self.credit_micros)

    def _write_closed(self, parts: list[bytes], k: Layout) -> None:
        if self.status != "":
            _put_str(parts, k.status, self.status)
        if self.cost_micros != 0:
            _put_int(parts, k.cost_micros, self.cost_micros)
        if self.charged_micros != 0:
            _put_int(parts, k.charged_micros, self.charged_micros)
        if self.provisional != 0:
            _put_int(parts, k.provisional, self.provisional)
        if self.reported_usage_s != 0:
            _put_int(parts, k.reported_usage_s, self.reported_usage_s)
        if self.cdr_revision != 0:
            _put_int(parts, k.cdr_revision, self.cdr_revision)

    @classmethod
    def unpack(cls, account_id: str, session_id: str, blob: bytes) -> SessionRecord:
        """Decode a stored value (either layout); unknown codes (newer versions) are
        ignored."""
        read = _read(account_id, session_id, blob)
        if read is not None:
            return read
        raw = _unpackb(blob)
        return cls.from_fields(account_id, session_id, raw)

    @classmethod
    def from_fields(cls, account_id: str, session_id: str, raw: dict[Any, Any]) -> SessionRecord:
        values: dict[str, Any] = {"account_id": account_id, "session_id": session_id}
        for code, data in raw.items():
            spec = _BY_CODE.get(code)
            if spec is not None and data is not None:
                name, kind = spec
                values[name] = data if type(data) is kind else kind(data)
        if raw.get(SAME_CONF_ID) or raw.get(INT_SAME_CONF_ID):
            values["conf_id"] = session_id
        if _INT_ANSWER in raw or _INT_LAST_SEEN in raw:  # COMPACT: ms since auth_ms
            since = values.get("auth_ms", 0)
            if raw.get(_INT_ANSWER) is not None:
                values["answer_ms"] += since
            if raw.get(_INT_LAST_SEEN) is not None:
                values["last_seen_ms"] += since
        if _LAST_SEEN not in raw and _INT_LAST_SEEN not in raw:
            values["last_seen_ms"] = values.get("auth_ms", 0)
        if not _REQUIRED.issubset(values):
            raise TypeError(f"SessionRecord fields: {sorted(values)}")
        # positional: a keyword call parses 35 names (~15 % more per unpack, compiled)
        return SessionRecord(
            values["session_id"],
            values["account_id"],
            values["user_name"],
            values["caller"],
            values["callee"],
            values["destination"],
            values["plan"],
            values["currency"],
            values["gateway"],
            values["client"],
            values["auth_ms"],
            values.get("answer_ms", 0),
            values.get("last_seen_ms", 0),
            values.get("last_usage_s", 0),
            values.get("debited_micros", 0),
            values.get("held_micros", 0),
            values.get("paid_usage_s", 0),
            values.get("limited", 0),
            values.get("deadline_ms", 0),
            values.get("cut_reason", ""),
            values.get("cut_attempts", 0),
            values.get("cut_ms", 0),
            values.get("cut_ok", 0),
            values.get("adopted", 0),
            values.get("nas_session_id", ""),
            values.get("conf_id", ""),
            values.get("call_origin", ""),
            values.get("credit_micros", 0),
            values.get("state", LIVE),
            values.get("status", ""),
            values.get("cost_micros", 0),
            values.get("charged_micros", 0),
            values.get("provisional", 0),
            values.get("reported_usage_s", 0),
            values.get("cdr_revision", 0),
        )

    @classmethod
    def build(cls, **values: Any) -> SessionRecord:
        """``SessionRecord(**values)``: a missing or unknown field is a TypeError."""
        return cls(**values)


_LAST_SEEN = CODES["last_seen_ms"]
_INT_LAST_SEEN = INT_CODES["last_seen_ms"]
_ANSWER = CODES["answer_ms"]
_INT_ANSWER = INT_CODES["answer_ms"]
_SINCE_AUTH = frozenset([_ANSWER, _LAST_SEEN])  # COMPACT stores them as ms since auth_ms
_STATE = CODES["state"]
_INT_STATE = INT_CODES["state"]
_TO_INT: dict[Any, int] = {CODES[name]: code for name, code in INT_CODES.items()}
_TO_INT[SAME_CONF_ID] = INT_SAME_CONF_ID
_KEYED = ("session_id", "account_id")  # in the key, not in the value
_STORED = [f for f in FIELDS if f[0] not in _KEYED]
# code -> (field, its type)
_BY_CODE: dict[Any, tuple[str, type]] = {CODES[name]: (name, kind) for name, kind, _ in _STORED}
_BY_CODE.update({INT_CODES[name]: (name, kind) for name, kind, _ in _STORED})
_NAMES = frozenset(name for name, _, _ in FIELDS)
_REQUIRED = frozenset(name for name, _, default in FIELDS if default is REQUIRED)
_WRITTEN: frozenset[Any] = frozenset(
    [*CODES.values(), SAME_CONF_ID, *INT_CODES.values(), INT_SAME_CONF_ID]
)


def _unpackb(blob: bytes) -> Any:
    """A stored value decoded (either layout: COMPACT's keys are integers)."""
    return msgpack.unpackb(blob, raw=False, unicode_errors="surrogateescape", strict_map_key=False)


def state_of(blob: bytes) -> Any:
    """A stored record's state (either layout; LIVE when COMPACT left it out), without
    building the record; None when the value is no record."""
    try:
        fields = _unpackb(blob)
    except (ValueError, msgpack.ExtraData):
        return None
    if not isinstance(fields, dict):
        return None
    if _STATE in fields:
        return fields[_STATE]
    if _INT_STATE in fields:
        return fields[_INT_STATE]
    return LIVE if INT_CODES["auth_ms"] in fields else None


def unpack_known(account_id: str, session_id: str, blob: bytes) -> tuple[SessionRecord, bool]:
    """SessionRecord.unpack of a stored value, and True when every code in it is one
    this version writes back (a record a newer version added fields to is only merged
    into, never rewritten whole): one decode for both."""
    read = _read(account_id, session_id, blob)
    if read is not None:
        return read, True  # (_read takes only the codes this version writes)
    raw = _unpackb(blob)
    return SessionRecord.from_fields(account_id, session_id, raw), _WRITTEN.issuperset(raw)


def fields_map(fields: dict[str, str | int], layout: Layout | None = None) -> bytes:
    """A msgpack map of some fields by code (what session_set.lua merges in), in
    ``layout``'s codes (None: LEGACY); times as they are (the scripts merge it into the
    record rec_unpack decoded, whose times are absolute, and rec_pack stores it).
    Written pair by pair as _write writes them (msgpack's bytes: ~11,700 -> ~4,000
    instructions for a close's 7 fields, round 13b), by msgpack when a value is one it
    leaves."""
    keys = LEGACY if layout is None else layout
    try:
        return _write_fields(fields, keys.fields)
    except _Unwritten:
        pass
    packed: bytes = _packb({keys.codes[name]: value for name, value in fields.items()})
    return packed


def _write_fields(fields: dict[str, str | int], keys: dict[str, list[bytes]]) -> bytes:
    """fields_map's bytes, ``keys`` a layout's keys of each field as _keyed lists them
    (KeyError for a name that is not a stored field); _Unwritten for a value _write_map
    leaves to msgpack."""
    parts: list[bytes] = [b""]  # the header, once the pairs are counted
    for name, value in fields.items():
        keyed = keys[name]
        if type(value) is str:
            _put_str(parts, keyed, value)
        elif type(value) is int:
            _put_int(parts, keyed[32], value)
        elif isinstance(value, str):  # (after int: compiled, a bool narrowed to int is 1)
            # a str subclass (a close's CdrStatus): msgpack packs its text, the exact
            # str that "".join of it alone is (a copy of its characters)
            _put_str(parts, keyed, "".join((value,)))
        else:
            raise _Unwritten
    parts[0] = map_header((len(parts) - 1) // 2)
    return b"".join(parts)


def map_header(n: int) -> bytes:
    """The msgpack header of a map of ``n`` pairs."""
    if n < 16:
        return _MAP_FIX[n]  # (bytes((0x80 | n,)): a tuple and a call, ~900 instructions)
    if n < 1 << 16:
        return b"\xde" + n.to_bytes(2, "big")
    return b"\xdf" + n.to_bytes(4, "big")


# msgpack's own bytes for the record's map, written here (msgpack.Packer through a
# dict cost ~10,000 instructions per authorize, round 10b): str as UTF-8 (fixstr,
# str8, str16, str32), int in its shortest form (fixint, uint8..64, int8..64), as
# Packer(use_bin_type=True) writes them. tests/sessions/test_record_bytes.py keeps
# the bytes.
_MAP_FIX: Final = [bytes((0x80 | n,)) for n in range(16)]
# the pairs SessionRecord._write_head writes (user_name .. auth_ms)
HEAD_PAIRS: Final = 9
_POS_FIX: Final = [bytes((n,)) for n in range(128)]
_NEG_FIX: Final = [bytes((256 + n,)) for n in range(-32, 0)]
_STR_FIX: Final = [bytes((0xA0 | n,)) for n in range(32)]
_INT_MIN: Final = -(1 << 63)
_UINT_END: Final = 1 << 64
# what a compiled int holds unboxed (63 bits): compared without a Python int object
# (the bounds above are boxed: ~600 instructions per int written, round 13b)
_SHORT_MIN: Final = -4611686018427387904  # -(2**62)
_SHORT_MAX: Final = 4611686018427387903  # 2**62 - 1


def _msgpack_int(value: int) -> bytes:
    """An int in msgpack's shortest form (-2**63 <= value < 2**64)."""
    if value >= 0:
        if value < 0x80:
            return _POS_FIX[value]
        if value < 0x100:
            return b"\xcc" + value.to_bytes(1, "big")
        if value < 0x10000:
            return b"\xcd" + value.to_bytes(2, "big")
        if value < 0x100000000:
            return b"\xce" + value.to_bytes(4, "big")
        return b"\xcf" + value.to_bytes(8, "big")
    if value >= -32:
        return _NEG_FIX[value + 32]
    if value >= -0x80:
        return b"\xd0" + value.to_bytes(1, "big", signed=True)
    if value >= -0x8000:
        return b"\xd1" + value.to_bytes(2, "big", signed=True)
    if value >= -0x80000000:
        return b"\xd2" + value.to_bytes(4, "big", signed=True)
    return b"\xd3" + value.to_bytes(8, "big", signed=True)


msgpack_int = _msgpack_int  # (the store completes an authorize's record with it)


def _msgpack_str_head(size: int) -> bytes:
    if size < 32:
        return _STR_FIX[size]
    if size < 0x100:
        return b"\xd9" + size.to_bytes(1, "big")
    if size < 0x10000:
        return b"\xda" + size.to_bytes(2, "big")
    return b"\xdb" + size.to_bytes(4, "big")


def _write_map(fields: dict[Any, str | int], pairs: int) -> bytes | None:
    """``fields`` as msgpack packs the map, its header counting ``pairs``; None when a
    value is not exactly a str or an int msgpack takes (packed by msgpack then)."""
    parts = [map_header(pairs)]
    for code, value in fields.items():
        if type(code) is int:
            parts.append(_msgpack_int(code))  # COMPACT's key (a small int)
        else:
            key = code.encode()
            parts.append(_msgpack_str_head(len(key)))
            parts.append(key)
        kind = type(value)
        if kind is str:
            text: str = value  # type: ignore[assignment]
            try:
                data = text.encode()
            except UnicodeEncodeError:
                return None
            parts.append(_msgpack_str_head(len(data)))
            parts.append(data)
        elif kind is int:
            number: int = value  # type: ignore[assignment]
            if not _INT_MIN <= number < _UINT_END:
                return None
            parts.append(_msgpack_int(number))
        else:
            return None
    return b"".join(parts)


def _key(code: str | int) -> bytes:
    """A code as _write_map writes a key (COMPACT's: a positive fixint)."""
    if isinstance(code, int):
        return _msgpack_int(code)
    return _msgpack_str_head(len(code)) + code.encode()


def _keyed(code: str | int) -> list[bytes]:
    """A code's key followed by each fixstr header (value lengths 0..31), then the key
    alone: [key + fixstr(0), ..., key + fixstr(31), key]."""
    key = _key(code)
    return [key + head for head in _STR_FIX] + [key]


class Layout:
    """One stored layout of the record: its codes, and its keys as SessionRecord._write
    writes them (a str field's with its value's header, an int field's alone).

    LEGACY: two-letter codes, the state always stored (every version reads it).
    COMPACT ([sessions] compact_records): INT_CODES, one byte a key, the state left out
    while live, answer_ms and last_seen_ms as ms since auth_ms: ~2 bytes less a field,
    43-55 a started call (docs/performance.md, round 13c). Versions before it cannot
    read it: docs/credit-control.md "Upgrading to compact records"."""

    __slots__ = (
        "adopted",
        "answer_ms",
        "auth_ms",
        "call_origin",
        "callee",
        "caller",
        "cdr_revision",
        "charged_micros",
        "client",
        "codes",
        "compact",
        "conf_id",
        "cost_micros",
        "credit_micros",
        "currency",
        "cut_attempts",
        "cut_ms",
        "cut_ok",
        "cut_reason",
        "deadline_ms",
        "debited_micros",
        "destination",
        "fields",
        "gateway",
        "held_micros",
        "last_seen_ms",
        "last_usage_s",
        "limited",
        "nas_session_id",
        "paid_usage_s",
        "plan",
        "provisional",
        "reported_usage_s",
        "same_conf_id",
        "state",
        "status",
        "user",
    )

    def __init__(self, codes: dict[str, Any], same_conf_id: str | int, *, compact: bool) -> None:
        self.codes: Final[dict[str, Any]] = codes
        self.compact: Final = compact
        self.same_conf_id: Final = _key(same_conf_id)
        # field -> its code's keys as _keyed lists them (fields_map's pairs)
        self.fields: Final = {name: _keyed(code) for name, code in codes.items()}
        self.user: Final = _keyed(codes["user_name"])
        self.caller: Final = _keyed(codes["caller"])
        self.callee: Final = _keyed(codes["callee"])
        self.destination: Final = _keyed(codes["destination"])
        self.plan: Final = _keyed(codes["plan"])
        self.currency: Final = _keyed(codes["currency"])
        self.gateway: Final = _keyed(codes["gateway"])
        self.client: Final = _keyed(codes["client"])
        self.cut_reason: Final = _keyed(codes["cut_reason"])
        self.nas_session_id: Final = _keyed(codes["nas_session_id"])
        self.conf_id: Final = _keyed(codes["conf_id"])
        self.call_origin: Final = _keyed(codes["call_origin"])
        self.state: Final = _keyed(codes["state"])
        self.status: Final = _keyed(codes["status"])
        self.auth_ms: Final = _key(codes["auth_ms"])
        self.answer_ms: Final = _key(codes["answer_ms"])
        self.last_seen_ms: Final = _key(codes["last_seen_ms"])
        self.last_usage_s: Final = _key(codes["last_usage_s"])
        self.debited_micros: Final = _key(codes["debited_micros"])
        self.held_micros: Final = _key(codes["held_micros"])
        self.paid_usage_s: Final = _key(codes["paid_usage_s"])
        self.limited: Final = _key(codes["limited"])
        self.deadline_ms: Final = _key(codes["deadline_ms"])
        self.cut_attempts: Final = _key(codes["cut_attempts"])
        self.cut_ms: Final = _key(codes["cut_ms"])
        self.cut_ok: Final = _key(codes["cut_ok"])
        self.adopted: Final = _key(codes["adopted"])
        self.credit_micros: Final = _key(codes["credit_micros"])
        self.cost_micros: Final = _key(codes["cost_micros"])
        self.charged_micros: Final = _key(codes["charged_micros"])
        self.provisional: Final = _key(codes["provisional"])
        self.reported_usage_s: Final = _key(codes["reported_usage_s"])
        self.cdr_revision: Final = _key(codes["cdr_revision"])


LEGACY: Final = Layout(dict(CODES), SAME_CONF_ID, compact=False)
COMPACT: Final = Layout(dict(INT_CODES), INT_SAME_CONF_ID, compact=True)


def layout_of(compact: bool) -> Layout:
    """COMPACT when ``compact`` ([sessions] compact_records), else LEGACY."""
    return COMPACT if compact else LEGACY


class _Unwritten(Exception):
    """A value _write_map leaves to msgpack, met by SessionRecord._write."""


def _put_str(parts: list[bytes], keyed: list[bytes], text: str) -> None:
    """Append a str pair as _write_map writes it (two parts: the key with the value's
    header, the value); _Unwritten for a value it leaves to msgpack."""
    if type(text) is not str:
        raise _Unwritten
    try:
        data = text.encode()
    except UnicodeEncodeError:
        raise chained(_Unwritten(), None) from None  # (compiled: core/chain.py)
    size = len(data)
    if size < 32:
        parts.append(keyed[size])
    else:
        parts.append(keyed[32] + _msgpack_str_head(size))
    parts.append(data)


def _put_int(parts: list[bytes], key: bytes, value: int) -> None:
    """Append an int pair as _write_map writes it (two parts: the key, the value);
    _Unwritten for a value it leaves to msgpack."""
    if type(value) is not int:
        raise _Unwritten
    # (the bounds of 64 bits are not short ints: compared first with a short int's)
    if not _SHORT_MIN <= value <= _SHORT_MAX and not _INT_MIN <= value < _UINT_END:
        raise _Unwritten
    parts.append(key)
    parts.append(_msgpack_int(value))


_TOKEN = re.compile(r"\$([a-z_]+)")


def record_lua(source: str, layout: Layout | None = None) -> str:
    """A session script with each ``$field`` replaced by its code in ``layout`` (None:
    LEGACY; KeyError for a name that is not a stored field: a typo fails at load, not
    in a live call), and ``rec_unpack`` defined first when it calls it."""
    codes = CODES if layout is None else layout.codes
    body = _TOKEN.sub(lambda m: _lua_code(codes[m.group(1)]), source)
    if "rec_unpack(" not in body and "rec_pack(" not in body:
        return body
    return _rec_lua(layout is not None and layout.compact) + body


def _lua_code(code: str | int) -> str:
    return str(code) if isinstance(code, int) else f"'{code}'"


def _rec_lua(compact: bool) -> str:
    """rec_unpack(raw): a stored record decoded into a table keyed by this layout's
    codes, its times absolute: a record of the other layout (another daemon's [sessions]
    compact_records, during its change: docs/credit-control.md) converted key by key,
    the state left out while live (COMPACT) or put back (LEGACY); one look-up when it
    is this layout's. rec_pack(r): the table stored in this layout (COMPACT: answer_ms
    and last_seen_ms as ms since auth_ms, last_seen_ms left out when it is auth_ms, as
    SessionRecord.pack writes them)."""
    pairs = [(CODES[name], code) for name, code in INT_CODES.items()]
    pairs.append((SAME_CONF_ID, INT_SAME_CONF_ID))
    at, an, ls = INT_CODES["auth_ms"], INT_CODES["answer_ms"], INT_CODES["last_seen_ms"]
    if compact:
        conv = ", ".join(f"['{s}']={i}" for s, i in pairs)
        state = INT_CODES["state"]
        return (
            "local function rec_unpack(raw)\n"
            "  local r = cmsgpack.unpack(raw)\n"
            f"  local at = r[{at}]\n"
            "  if at ~= nil then\n"
            f"    if r[{an}] then r[{an}] = r[{an}] + at end\n"
            f"    if r[{ls}] then r[{ls}] = r[{ls}] + at end\n"
            "    return r\n"
            "  end\n"
            f"  local to, n = {{{conv}}}, {{}}\n"
            "  for k, v in pairs(r) do n[to[k] or k] = v end\n"
            f"  if n[{state}] == 'live' then n[{state}] = nil end\n"
            "  return n\n"
            "end\n"
            "local function rec_pack(r)\n"
            f"  local at, an, ls = r[{at}], r[{an}], r[{ls}]\n"
            "  if at then\n"
            f"    if an then if an == 0 then r[{an}] = nil else r[{an}] = an - at end end\n"
            f"    if ls then\n"
            f"      if ls == 0 or ls == at then r[{ls}] = nil else r[{ls}] = ls - at end\n"
            "    end\n"
            "  end\n"
            "  local raw = cmsgpack.pack(r)\n"
            f"  r[{an}], r[{ls}] = an, ls\n"
            "  return raw\n"
            "end\n"
        )
    conv = ", ".join(f"[{i}]='{s}'" for s, i in pairs)
    return (
        "local function rec_unpack(raw)\n"
        "  local r = cmsgpack.unpack(raw)\n"
        "  if r.at ~= nil then return r end\n"
        f"  local to, n = {{{conv}}}, {{}}\n"
        "  for k, v in pairs(r) do n[to[k] or k] = v end\n"
        "  if n.at then\n"
        "    if n.an then n.an = n.an + n.at end\n"
        "    if n.ls then n.ls = n.ls + n.at end\n"
        "  end\n"
        "  if n.st == nil then n.st = 'live' end\n"
        "  return n\n"
        "end\n"
        "local rec_pack = cmsgpack.pack\n"
    )


def member(account_id: str, session_id: str) -> bytes:
    """Index member naming one session; account ids never contain NUL."""
    return f"{account_id}\0{session_id}".encode()


def split_member(raw: bytes | str) -> tuple[str, str]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    account_id, _, session_id = text.partition("\0")
    return account_id, session_id


# -- the stored map read straight from its bytes --------------------------------------
# msgpack.unpackb (a dict, its keys interned) and from_fields (a dict of values, a get
# per field) cost ~45,000 instructions per record read, once per Start (round 13b).
# _read takes the map as this version's writers write it (_write, _write_map, the
# scripts' cmsgpack), in either layout: a fixmap or map16 whose keys are all LEGACY's
# (the 1- or 2-letter codes this version writes, fixstr) or all COMPACT's (INT_CODES
# and INT_SAME_CONF_ID, positive fixints), each value a str or an int of its field's
# own type, nothing after the map; None for anything else (a nil, a float, a bool, a
# code it does not know, both layouts' keys in one map, a str that is not UTF-8,
# another header), which unpack and unpack_known read through msgpack and from_fields
# as before. tests/sessions/test_record_reader.py compares both on random and odd maps
# of both layouts (round 13d).
_STR_VALUE: Final = 1
_INT_VALUE: Final = 2
_COMPACT_AT: Final = 26 * 26 + 26  # COMPACT's key n at _COMPACT_AT + n
_COMPACT_KEYS: Final = INT_SAME_CONF_ID + 1  # (keys 0..INT_SAME_CONF_ID)
_SEEN_LEGACY: Final = 1
_SEEN_COMPACT: Final = 2


def _code_at(code: str | int) -> int:
    """A code's place in _SLOTS: 2 lowercase letters at 0..675, one at 676..701,
    COMPACT's n at _COMPACT_AT + n (-1: any other code, never read by _read)."""
    if isinstance(code, int):
        return _COMPACT_AT + code if 0 <= code < _COMPACT_KEYS else -1
    if not 1 <= len(code) <= 2 or not all("a" <= c <= "z" for c in code):
        return -1
    if len(code) == 1:
        return 676 + ord(code) - 97
    return (ord(code[0]) - 97) * 26 + ord(code[1]) - 97


def _slot_tables() -> tuple[bytes, bytes]:
    """code place -> where _read keeps its value + 1 (0: not a code it reads): a
    field's position in _STORED, the flag SAME_CONF_ID's after them; and its kind
    (_STR_VALUE, _INT_VALUE); both layouts' codes."""
    size = _COMPACT_AT + _COMPACT_KEYS
    slots, kinds = bytearray(size), bytearray(size)
    for position, (name, kind, _) in enumerate(_STORED):
        for code in (CODES[name], INT_CODES[name]):
            at = _code_at(code)
            if at >= 0:
                slots[at] = position + 1
                kinds[at] = _STR_VALUE if kind is str else _INT_VALUE
    for same in (SAME_CONF_ID, INT_SAME_CONF_ID):
        at = _code_at(same)
        if at >= 0:
            slots[at], kinds[at] = len(_STORED) + 1, _INT_VALUE
    return bytes(slots), bytes(kinds)


_TABLES = _slot_tables()
_SLOTS: Final = _TABLES[0]
_KINDS: Final = _TABLES[1]
_STORED_NAMES = [name for name, _, _ in _STORED]
_ANSWER_AT: Final = _STORED_NAMES.index("answer_ms")
_LAST_SEEN_AT: Final = _STORED_NAMES.index("last_seen_ms")
_AUTH_AT: Final = _STORED_NAMES.index("auth_ms")
_CONF_AT: Final = _STORED_NAMES.index("conf_id")
_SAME_CONF_AT: Final = len(_STORED)
# _STORED's defaults in order, then SAME_CONF_ID's (0); None: required, or (answer_ms,
# last_seen_ms) not in the map (COMPACT adds auth_ms to them when they are)
_DEFAULTS: Final[list[object]] = [None if d is REQUIRED else d for _, _, d in _STORED] + [0]
_DEFAULTS[_ANSWER_AT] = None
_DEFAULTS[_LAST_SEEN_AT] = None
_REQUIRED_AT: Final = [i for i, (_, _, d) in enumerate(_STORED) if d is REQUIRED]


def _read(account_id: str, session_id: str, blob: bytes) -> SessionRecord | None:
    """SessionRecord.unpack of a map _read takes (above), else None."""
    end = len(blob)
    if end == 0:
        return None
    head = blob[0]
    if 0x80 <= head <= 0x8F:
        pairs = head & 0x0F
        at = 1
    elif head == 0xDE and end >= 3:
        pairs = blob[1] << 8 | blob[2]
        at = 3
    else:
        return None
    values = _DEFAULTS.copy()
    seen = 0
    for _ in range(pairs):
        place, at = _read_key(blob, at, end)
        if at < 0:
            return None
        seen |= _SEEN_COMPACT if place >= _COMPACT_AT else _SEEN_LEGACY
        slot = _SLOTS[place]
        if slot == 0:
            return None
        if _KINDS[place] == _STR_VALUE:
            text, at = _read_str(blob, at, end)
            values[slot - 1] = text
        else:
            number, at = _read_int(blob, at, end)
            values[slot - 1] = number
        if at < 0:
            return None
    if at != end or seen == _SEEN_LEGACY | _SEEN_COMPACT:
        return None
    return _read_record(account_id, session_id, values, seen == _SEEN_COMPACT)


def _read_key(blob: bytes, at: int, end: int) -> tuple[int, int]:
    """The code at ``at`` (its place in _SLOTS: a fixstr of 1 or 2 lowercase letters,
    LEGACY's, or a fixint, COMPACT's) and the place after it, a value's byte at least
    following; (0, -1) when _read does not take it."""
    if at + 2 > end:
        return 0, -1
    key = blob[at]
    if key < 0x80:
        if key >= _COMPACT_KEYS:
            return 0, -1
        return _COMPACT_AT + key, at + 1
    if at + 3 > end:
        return 0, -1
    first = blob[at + 1] - 97
    if key == 0xA2 and at + 4 <= end:
        second = blob[at + 2] - 97
        if not (0 <= first < 26 and 0 <= second < 26):
            return 0, -1
        return first * 26 + second, at + 3
    if key == 0xA1 and 0 <= first < 26:
        return 676 + first, at + 2
    return 0, -1


def _read_record(
    account_id: str, session_id: str, values: list[object], compact: bool
) -> SessionRecord | None:
    """The record of the values _read read (None: a required field missing), as
    from_fields builds it: the conf flag, COMPACT's answer_ms and last_seen_ms as ms
    since auth_ms, a last_seen_ms not in the map auth_ms."""
    for i in _REQUIRED_AT:
        if values[i] is None:
            return None
    if values[_SAME_CONF_AT]:
        values[_CONF_AT] = session_id
    since = cast(int, values[_AUTH_AT]) if compact else 0
    answer = values[_ANSWER_AT]
    values[_ANSWER_AT] = 0 if answer is None else cast(int, answer) + since
    last_seen = values[_LAST_SEEN_AT]
    if last_seen is None:
        values[_LAST_SEEN_AT] = values[_AUTH_AT]
    else:
        values[_LAST_SEEN_AT] = cast(int, last_seen) + since
    return _record(session_id, account_id, values)


def _read_int(blob: bytes, at: int, end: int) -> tuple[int, int]:
    """The msgpack int at ``at`` and the place after it; (0, -1) when it is not one."""
    head = blob[at]
    if head < 0x80:
        return head, at + 1
    if head >= 0xE0:
        return head - 0x100, at + 1
    if 0xCC <= head <= 0xCF:
        size = 1 << (head - 0xCC)
        signed = False
    elif 0xD0 <= head <= 0xD3:
        size = 1 << (head - 0xD0)
        signed = True
    else:
        return 0, -1
    start = at + 1
    stop = start + size
    if stop > end:
        return 0, -1
    value = 0
    for i in range(start, stop):
        value = (value << 8) | blob[i]
    if signed and blob[start] >= 0x80:
        value -= 1 << (8 * size)
    return value, stop


def _read_str(blob: bytes, at: int, end: int) -> tuple[str, int]:
    """The msgpack str at ``at`` and the place after it; ("", -1) when it is not one
    (or not UTF-8: msgpack's surrogateescape reads it)."""
    head = blob[at]
    start = at + 1
    if 0xA0 <= head <= 0xBF:
        size = head & 0x1F
    elif head == 0xD9 and start + 1 <= end:
        size = blob[start]
        start += 1
    elif head == 0xDA and start + 2 <= end:
        size = blob[start] << 8 | blob[start + 1]
        start += 2
    elif head == 0xDB and start + 4 <= end:
        size = blob[start] << 24 | blob[start + 1] << 16 | blob[start + 2] << 8 | blob[start + 3]
        start += 4
    else:
        return "", -1
    stop = start + size
    if stop > end:
        return "", -1
    try:
        text = blob[start:stop].decode()
    except UnicodeDecodeError:
        return "", -1
    return text, stop


def _record(session_id: str, account_id: str, values: list[object]) -> SessionRecord:
    """A record of its ids and _STORED's values in order (of their fields' types)."""
    return SessionRecord(
        session_id,
        account_id,
        cast(str, values[0]),
        cast(str, values[1]),
        cast(str, values[2]),
        cast(str, values[3]),
        cast(str, values[4]),
        cast(str, values[5]),
        cast(str, values[6]),
        cast(str, values[7]),
        cast(int, values[8]),
        cast(int, values[9]),
        cast(int, values[10]),
        cast(int, values[11]),
        cast(int, values[12]),
        cast(int, values[13]),
        cast(int, values[14]),
        cast(int, values[15]),
        cast(int, values[16]),
        cast(str, values[17]),
        cast(int, values[18]),
        cast(int, values[19]),
        cast(int, values[20]),
        cast(int, values[21]),
        cast(str, values[22]),
        cast(str, values[23]),
        cast(str, values[24]),
        cast(int, values[25]),
        cast(str, values[26]),
        cast(str, values[27]),
        cast(int, values[28]),
        cast(int, values[29]),
        cast(int, values[30]),
        cast(int, values[31]),
        cast(int, values[32]),
    )
