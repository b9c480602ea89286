"""The live session record and its stored form: one compact msgpack value per call.

A record is one Redis string ``{a:ACC}:r:SID`` (one expiry) holding a msgpack map of
the fields that differ from their defaults, keyed by short codes (``CODES``); the
session and account ids are not stored (they are in the key). Short codes and no
defaults keep a new call's record near 120 bytes of value, where a hash of the full
field names took ~470 bytes of Redis memory (docs/performance.md).

The session scripts (sessions/lua/*.lua) read and write the same map with Redis's
built-in ``cmsgpack``; they name a field ``$field_name``, replaced by its quoted code
when the script is loaded (``record_lua``), so the codes are written in one place.
Integers stay integers both ways (cmsgpack packs an integral Lua number as an int).
"""

from __future__ import annotations

import dataclasses
import operator
import re
from dataclasses import dataclass
from typing import Any

import msgpack

from chargingd.core.plain import plain_class

LIVE = "live"
CLOSED = "closed"
# msgpack.packb(o, use_bin_type=True) is interpreted Python that builds a Packer per
# call; one Packer (autoreset: each pack returns its own bytes, and a failed pack
# leaves it empty) packs the same bytes (tests/sessions/test_record_bytes.py).
_packb: Any = msgpack.Packer(use_bin_type=True).pack


# A plain Python class in the compiled build too (core/plain.py): build fills the
# instance __dict__ in one step. As a native class (no __dict__) it is built through the
# dataclass's interpreted __init__, one object.__setattr__ per field: ~3x slower for
# these 38 fields (docs/performance.md, round 6a), on every request.
@plain_class
@dataclass(frozen=True)
class SessionRecord:
    """One call as sessions/service.py knows it; integers carry their unit in the name."""

    session_id: str
    account_id: str
    user_name: str
    caller: str  # E.164 where it could be normalised
    callee: str
    destination: str  # matched destination id
    plan: str  # tariff plan id
    currency: str
    gateway: str
    client: str
    auth_ms: int
    answer_ms: int = 0
    last_seen_ms: int = 0
    last_usage_s: int = 0
    debited_micros: int = 0  # cumulative cost committed so far
    held_micros: int = 0  # current hold (the grant beyond the debited cost)
    paid_usage_s: int = 0  # usage that debited + held money pays for
    limited: int = 0  # 1 when the last grant was partial (the session has a deadline)
    deadline_ms: int = 0
    cut_reason: str = ""  # "credit_cut" | "killed" | "" (why the cutter cut it)
    cut_attempts: int = 0
    cut_ms: int = 0  # when the latest cut attempt went out
    cut_ok: int = 0  # 1 once the gateway confirmed it
    adopted: int = 0  # 1 when accounting arrived without our authorize
    # What the gateway's POD handler matches a Disconnect-Request on (Cisco): its own
    # Acct-Session-Id when the session is keyed by the h323-conf-id, the conf-id, and
    # the charged leg's h323-call-origin. Learnt from the Access-Request and accounting.
    nas_session_id: str = ""
    conf_id: str = ""
    call_origin: str = ""
    # The money the Session-Timeout last told to the gateway stands for (authorize,
    # CoA after a top-up): part of what the call is allowed (sessions/settle.py).
    credit_micros: int = 0
    state: str = LIVE
    # Once closed, what its CDR said (late accounting reads them, sessions/late.py).
    status: str = ""
    cost_micros: int = 0
    charged_micros: int = 0
    provisional: int = 0  # 1: closed without the gateway's word (reaper, restart)
    reported_usage_s: int = 0  # the most usage the gateway had reported when it closed
    cdr_revision: int = 0  # the CDR's revision (a correction writes the next one)

    @property
    def member(self) -> bytes:
        return member(self.account_id, self.session_id)

    def stored(self, *, omit: tuple[str, ...] = ()) -> dict[str, str | int]:
        """Code -> value of the fields that differ from their defaults (state always),
        ``omit`` left out: the map the record is stored as. Not stored twice: a
        conf_id equal to the session id (Cisco: the session id is the h323-conf-id)
        is the flag ``SAME_CONF_ID``, a last_seen_ms equal to auth_ms (a new call) is
        left out (from_fields restores both)."""
        out = {
            code: value
            for code, value, default in zip(_CODE_LIST, _values(self), _DEFAULT_LIST, strict=True)
            if value != default
        }
        if self.conf_id and self.conf_id == self.session_id:
            del out[_CONF_ID]
            out[SAME_CONF_ID] = 1
        if self.last_seen_ms == self.auth_ms:
            out.pop(_LAST_SEEN, None)
        for name in omit:
            out.pop(CODES[name], None)
        return out

    def pack(self, *, extra: int = 0, omit: tuple[str, ...] = ()) -> bytes:
        """The stored value. ``extra``: that many code/value pairs follow, appended by a
        script (the map header counts them); ``omit``: fields the script writes."""
        fields = self.stored(omit=omit)
        body: bytes = _packb(fields)
        if not extra:
            return body
        return map_header(len(fields) + extra) + body[len(map_header(len(fields))) :]

    @classmethod
    def unpack(cls, account_id: str, session_id: str, blob: bytes) -> SessionRecord:
        """Decode a stored value; unknown codes (newer versions) are ignored."""
        raw = msgpack.unpackb(blob, raw=False, unicode_errors="surrogateescape")
        return cls.from_fields(account_id, session_id, raw)

    @classmethod
    def from_fields(cls, account_id: str, session_id: str, raw: dict[str, Any]) -> SessionRecord:
        values: dict[str, Any] = {"account_id": account_id, "session_id": session_id}
        for code, data in raw.items():
            spec = _BY_CODE.get(code)
            if spec is not None and data is not None:
                name, kind = spec
                values[name] = data if type(data) is kind else kind(data)
        if raw.get(SAME_CONF_ID):
            values["conf_id"] = session_id
        if _LAST_SEEN not in raw:
            values["last_seen_ms"] = values.get("auth_ms", 0)
        return cls.build(**values)

    @classmethod
    def build(cls, **values: Any) -> SessionRecord:
        """``SessionRecord(**values)`` (values of the right types; the rest take their
        defaults) without the frozen __init__'s per-field setattr: ~5x cheaper for this
        38-field class, on every request of the hot path (the class has no
        __post_init__). A missing or unknown field is a TypeError, as with __init__."""
        if not _REQUIRED.issubset(values) or not _NAMES.issuperset(values):
            raise TypeError(f"SessionRecord fields: {sorted(values)}")
        rec = object.__new__(cls)
        rec.__dict__.update(values)  # the defaults are class attributes
        return rec


# Field -> its code in the stored map. Stored data: never reuse or change a code.
CODES: dict[str, str] = {
    "user_name": "u",
    "caller": "cg",
    "callee": "cd",
    "destination": "ds",
    "plan": "pl",
    "currency": "cu",
    "gateway": "gw",
    "client": "cl",
    "auth_ms": "at",
    "answer_ms": "an",
    "last_seen_ms": "ls",
    "last_usage_s": "lu",
    "debited_micros": "db",
    "held_micros": "hd",
    "paid_usage_s": "pu",
    "limited": "lm",
    "deadline_ms": "dl",
    "cut_reason": "cr",
    "cut_attempts": "ca",
    "cut_ms": "cm",
    "cut_ok": "co",
    "adopted": "ad",
    "nas_session_id": "ns",
    "conf_id": "cf",
    "call_origin": "or",
    "credit_micros": "cc",
    "state": "st",
    "status": "ss",
    "cost_micros": "cs",
    "charged_micros": "ch",
    "provisional": "pv",
    "reported_usage_s": "ru",
    "cdr_revision": "rv",
}
# Not a field: 1 when conf_id is the session id (stored once, in the key).
SAME_CONF_ID = "cq"
_CONF_ID, _LAST_SEEN = CODES["conf_id"], CODES["last_seen_ms"]
_KEYED = ("session_id", "account_id")  # in the key, not in the value
_ALWAYS = object()  # a default no value equals: the field is always stored (state)

_FIELDS = [f for f in dataclasses.fields(SessionRecord) if f.name not in _KEYED]
_values = operator.attrgetter(*(f.name for f in _FIELDS))  # every stored field, in order
_CODE_LIST = tuple(CODES[f.name] for f in _FIELDS)
_DEFAULT_LIST = tuple(
    _ALWAYS if f.name == "state" or f.default is dataclasses.MISSING else f.default for f in _FIELDS
)
# code -> (field, its type)
_BY_CODE: dict[str, tuple[str, type]] = {
    CODES[f.name]: (f.name, int if f.type in ("int", int) else str) for f in _FIELDS
}
_REQUIRED = frozenset(
    f.name for f in dataclasses.fields(SessionRecord) if f.default is dataclasses.MISSING
)
_NAMES = frozenset(f.name for f in dataclasses.fields(SessionRecord))
_WRITTEN = frozenset(CODES.values()) | {SAME_CONF_ID}


def all_known(blob: bytes) -> bool:
    """True when every code of a stored value is one this version writes back (a record
    a newer version added fields to is only merged into, never rewritten whole)."""
    return _WRITTEN.issuperset(msgpack.unpackb(blob, raw=False, unicode_errors="surrogateescape"))


def fields_map(fields: dict[str, str | int]) -> bytes:
    """A msgpack map of some fields by code (what session_set.lua merges in)."""
    packed: bytes = _packb({CODES[name]: value for name, value in fields.items()})
    return packed


def map_header(n: int) -> bytes:
    """The msgpack header of a map of ``n`` pairs."""
    if n < 16:
        return bytes((0x80 | n,))
    if n < 1 << 16:
        return b"\xde" + n.to_bytes(2, "big")
    return b"\xdf" + n.to_bytes(4, "big")


_TOKEN = re.compile(r"\$([a-z_]+)")


def record_lua(source: str) -> str:
    """A session script with each ``$field`` replaced by its quoted code (KeyError for
    a name that is not a stored field: a typo fails at load, not in a live call)."""
    return _TOKEN.sub(lambda m: f"'{CODES[m.group(1)]}'", source)


def member(account_id: str, session_id: str) -> bytes:
    """Index member naming one session; account ids never contain NUL."""
    return f"{account_id}\0{session_id}".encode()


def split_member(raw: bytes | str) -> tuple[str, str]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    account_id, _, session_id = text.partition("\0")
    return account_id, session_id
