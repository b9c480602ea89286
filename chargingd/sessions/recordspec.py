"""The stored session record's fields: their short codes and their defaults.

sessions/record.py's SessionRecord stores the fields that differ from these defaults
under these codes; the session scripts name them as ``$field`` (record_lua).
"""

from __future__ import annotations

import dataclasses

LIVE = "live"
CLOSED = "closed"
# A live record's ``status`` (otherwise "": it says how a closed record ended) when its
# client said its usage is final (Diameter: every rating group reported FINAL): the
# reaper charges it exactly that usage (sessions/idle.py).
USAGE_FINAL = "usage_final"

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

# The record's `adopted`: 0 authorized here; ADOPTED accounting without our authorize;
# ADOPTED_REFUSED the same for a call chargingd refused (the refusal still remembered)
# that its gateway connected anyway (charged in full as debt, CDR `overrun`). Versions
# before ADOPTED_REFUSED take any value but 0 as ADOPTED.
ADOPTED = 1
ADOPTED_REFUSED = 2

# The compact layout ([sessions] compact_records): each field under a small integer
# (one byte of msgpack where a code takes two or three) and the state left out while
# live. auth_ms (always stored) is 0, so a record's map never has keys 1..n only (Lua's
# cmsgpack would pack such a table as an array) and r[0] tells the layouts apart.
# Stored data: never reuse or change a number.
INT_CODES: dict[str, int] = {
    "auth_ms": 0,
    "user_name": 1,
    "caller": 2,
    "callee": 3,
    "destination": 4,
    "plan": 5,
    "currency": 6,
    "gateway": 7,
    "client": 8,
    "answer_ms": 9,
    "last_seen_ms": 10,
    "last_usage_s": 11,
    "debited_micros": 12,
    "held_micros": 13,
    "paid_usage_s": 14,
    "limited": 15,
    "deadline_ms": 16,
    "cut_reason": 17,
    "cut_attempts": 18,
    "cut_ms": 19,
    "cut_ok": 20,
    "adopted": 21,
    "nas_session_id": 22,
    "conf_id": 23,
    "call_origin": 24,
    "credit_micros": 25,
    "state": 26,
    "status": 27,
    "cost_micros": 28,
    "charged_micros": 29,
    "provisional": 30,
    "reported_usage_s": 31,
    "cdr_revision": 32,
}
INT_SAME_CONF_ID = 33

# dataclasses.fields of the dataclass SessionRecord was: (name, type, default) in order;
# REQUIRED (dataclasses.MISSING) for no default (sessions/upgrade.py sends these to
# the scripts that convert old records).
REQUIRED: object = dataclasses.MISSING
FIELDS: tuple[tuple[str, type, object], ...] = (
    ("session_id", str, REQUIRED),
    ("account_id", str, REQUIRED),
    ("user_name", str, REQUIRED),
    ("caller", str, REQUIRED),
    ("callee", str, REQUIRED),
    ("destination", str, REQUIRED),
    ("plan", str, REQUIRED),
    ("currency", str, REQUIRED),
    ("gateway", str, REQUIRED),
    ("client", str, REQUIRED),
    ("auth_ms", int, REQUIRED),
    ("answer_ms", int, 0),
    ("last_seen_ms", int, 0),
    ("last_usage_s", int, 0),
    ("debited_micros", int, 0),
    ("held_micros", int, 0),
    ("paid_usage_s", int, 0),
    ("limited", int, 0),
    ("deadline_ms", int, 0),
    ("cut_reason", str, ""),
    ("cut_attempts", int, 0),
    ("cut_ms", int, 0),
    ("cut_ok", int, 0),
    ("adopted", int, 0),
    ("nas_session_id", str, ""),
    ("conf_id", str, ""),
    ("call_origin", str, ""),
    ("credit_micros", int, 0),
    ("state", str, LIVE),
    ("status", str, ""),
    ("cost_micros", int, 0),
    ("charged_micros", int, 0),
    ("provisional", int, 0),
    ("reported_usage_s", int, 0),
    ("cdr_revision", int, 0),
)
