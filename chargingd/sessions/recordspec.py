"""The stored session record's fields: their short codes and their defaults.

sessions/record.py's SessionRecord stores the fields that differ from these defaults
under these codes; the session scripts name them as ``$field`` (record_lua).
"""

from __future__ import annotations

import dataclasses

LIVE = "live"
CLOSED = "closed"

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
