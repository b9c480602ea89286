"""The per-request result classes are plain classes (own __init__, no dataclass: a
dataclass's __init__ stays interpreted in the compiled build, docs/performance.md round
7b) that keep what the dataclasses gave: equality, hash, repr, defaults, and (compiled)
no writes."""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import pytest

from chargingd.fraud.types import CallFacts
from chargingd.ledger.steps import AccountCheck, ReserveStep, Step
from chargingd.ledger.types import Grant, RefusalReason
from chargingd.sessions.ccapi import Authorized, CallInfo
from chargingd.sessions.fused import FirstGrant
from chargingd.sessions.pricing import Priced
from chargingd.sessions.record import FIELDS, REQUIRED, SessionRecord

# class, its fields in order, one instance's values, another's
CASES: list[tuple[type, tuple[str, ...], tuple[Any, ...], tuple[Any, ...]]] = [
    (
        Grant,
        ("granted_micros", "reason", "available_micros"),
        (0, RefusalReason.INSUFFICIENT_CREDIT, 200),
        (300, None, 700),
    ),
    (
        Authorized,
        (
            "account_id",
            "session_timeout_s",
            "interim_interval_s",
            "credit_micros",
            "currency",
            "postpaid",
            "grant_s",
            "final",
        ),
        ("acc1", 3600, 60, 5_000_000, "EUR", False, 90, True),
        ("acc1", 3600, 60, 5_000_000, "EUR", True, 90, True),
    ),
    (Priced, ("cost_micros", "billed_s", "destination_id"), (120, 60, "DE_MOB"), (0, 0, "")),
    (
        AccountCheck,
        ("tariff", "currency", "identity", "mode"),
        ("t1", "EUR", "user:alice", "prepaid"),
        ("t1", "EUR", "", ""),
    ),
    (Step, ("keys", "argv"), (["k1", "k2"], [1, "x"]), (["k1"], [1, "x"])),
    (
        CallFacts,
        ("account_id", "session_id", "callee", "identity", "caller_ip", "tariff", "client"),
        ("acc1", "s1", "+4930123456", "user:alice", "192.0.2.7", "t1", "fs1"),
        ("acc1", "s1", "+4930123456", "", "", "", ""),
    ),
    (
        ReserveStep,
        ("keys", "argv", "index", "index_score", "account_id", "session_id"),
        (["k"], [1], ("ZADD", "idx", "GT", 5, "a"), 5, "a", "s1"),
        (["k"], [1], None, 0, "a", "s1"),
    ),
    (
        CallInfo,
        (
            "session_id",
            "user_name",
            "calling",
            "called",
            "gateway",
            "client",
            "default_account",
            "conf_id",
            "lookup",
            "nas_session_id",
            "call_origin",
            "caller_ip",
            "account_hint",
        ),
        (
            "s1",
            "alice",
            "+49301",
            "0049302",
            "10.0.0.1",
            "gw",
            "d",
            "cf",
            ("user",),
            "n",
            "o",
            "ip",
            "h",
        ),
        (
            "s1",
            "alice",
            "+49301",
            "0049302",
            "10.0.0.1",
            "gw",
            "d",
            "cf",
            ("ani",),
            "n",
            "o",
            "ip",
            "h",
        ),
    ),
    (
        SessionRecord,
        tuple(name for name, _, _ in FIELDS),
        tuple(f"v{i}" if kind is str else i for i, (_, kind, _) in enumerate(FIELDS)),
        tuple(f"w{i}" if kind is str else i for i, (_, kind, _) in enumerate(FIELDS)),
    ),
]


@pytest.mark.parametrize(
    "cls, names, values, other", CASES, ids=lambda c: getattr(c, "__name__", "")
)
def test_as_the_dataclass_was(
    cls: type, names: tuple[str, ...], values: tuple[Any, ...], other: tuple[Any, ...]
) -> None:
    reference = dataclasses.make_dataclass(cls.__name__, names, frozen=True)
    obj, ref = cls(*values), reference(*values)
    assert repr(obj) == repr(ref)
    assert obj == cls(*values) and obj == cls(**dict(zip(names, values, strict=True)))
    assert obj != cls(*other) and cls(*other) == cls(*other)
    assert obj != ref and obj != values  # another class is never equal
    assert [getattr(obj, n) for n in names] == list(values)
    hashable = all(not isinstance(v, list) for v in values)
    if hashable:
        assert hash(obj) == hash(ref) and len({obj, cls(*values)}) == 1
    else:
        with pytest.raises(TypeError):
            hash(obj)
    compiled = importlib.import_module(cls.__module__).__file__.endswith(".so")  # type: ignore[union-attr]
    if compiled:  # Final attributes: read-only
        with pytest.raises(AttributeError):
            setattr(obj, names[0], values[0])
    with pytest.raises(AttributeError):  # no other attributes (slots)
        obj.unknown = 1  # type: ignore[attr-defined]


def test_defaults() -> None:
    assert Grant(5) == Grant(5, None, 0) and Grant(5).ok and not Grant(0).ok
    assert not Grant(5, RefusalReason.SUSPENDED).ok
    assert Authorized("a", 1, 2, 3, "EUR") == Authorized("a", 1, 2, 3, "EUR", False, 0, False)
    assert AccountCheck("t", "EUR", "") == AccountCheck("t", "EUR", "", "")
    assert CallFacts("a", "s", "+49") == CallFacts("a", "s", "+49", "", "", "", "")
    first = FirstGrant(None)
    assert (first.grant, first.created, first.status, first.reason, first.fraud) == (
        None,
        -1,
        "",
        "",
        None,
    )
    assert repr(FirstGrant(Grant(1), 1)) == (
        "FirstGrant(grant=Grant(granted_micros=1, reason=None, available_micros=0), "
        "created=1, status='', reason='', fraud=None)"
    )


@pytest.mark.parametrize("index", [-2, -1], ids=["CallInfo", "SessionRecord"])
def test_replace_as_dict_and_defaults(index: int) -> None:
    """replace / as_dict as dataclasses.replace / asdict were; the defaults kept."""
    cls, names, values, other = CASES[index]
    reference = dataclasses.make_dataclass(cls.__name__, names, frozen=True)
    obj, ref = cls(*values), reference(*values)
    assert obj.as_dict() == dataclasses.asdict(ref) and list(obj.as_dict()) == list(names)
    changes = {names[2]: other[2], names[8]: other[8]}  # values of the field's type
    moved = obj.replace(**changes)
    assert moved.as_dict() == dataclasses.asdict(dataclasses.replace(ref, **changes))
    assert obj.as_dict() == dataclasses.asdict(ref) and moved != obj
    with pytest.raises(TypeError):
        obj.replace(unknown=1)
    if cls is CallInfo:
        call = CallInfo("s1", "alice", "+49301", "0049302", "10.0.0.1", "gw")
        assert call.lookup == ("user", "ani", "default")
        assert (call.default_account, call.account_hint) == ("", "")
        return
    rec = SessionRecord(*(v for v, f in zip(values, FIELDS, strict=True) if f[2] is REQUIRED))
    defaults = [(name, default) for name, _, default in FIELDS if default is not REQUIRED]
    assert [(name, getattr(rec, name)) for name, _ in defaults] == defaults
