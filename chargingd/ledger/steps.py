"""Ledger steps run inside a caller's Lua script: one round trip per credit-control request.

sessions.py fuses a money step with its session-record step (authorize = reserve +
record, interim = commit + renew + record, stop = close lease + release). The money
logic is NOT copied: the ledger's own reserve/commit/release.lua are wrapped, at load
time, as Lua functions (``ledger_reserve(KEYS, ARGV)`` ...) ahead of the caller's
script, so the ledger's scripts stay the only place where money moves (DESIGN
invariant 2). The arguments are built and checked here exactly as Ledger builds them.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources
from typing import Any

from chargingd.ledger import codec as C
from chargingd.ledger import keys as K
from chargingd.ledger.batch import CommandBatcher
from chargingd.ledger.ledger import Ledger
from chargingd.ledger.types import Grant, RefusalReason, SessionClosed

_MAX_LEASE_MS = 7 * 86400 * 1000
EMBEDDABLE = ("reserve", "commit", "release")


def fused_source(body: str, embeds: Sequence[str]) -> str:
    """common.lua, each ledger script of ``embeds`` as ``ledger_NAME(KEYS, ARGV)``, then body."""
    lua = resources.files("chargingd.ledger") / "lua"
    parts = [(lua / "common.lua").read_text()]
    for name in embeds:
        if name not in EMBEDDABLE:
            raise ValueError(f"ledger script {name!r} cannot be embedded")
        script = (lua / f"{name}.lua").read_text()
        parts.append(f"local function ledger_{name}(KEYS, ARGV)\n{script}\nend")
    parts.append(body)
    return "\n".join(parts)


def batcher_of(ledger: Ledger) -> CommandBatcher | None:
    """The ledger's per-tick pipeline, shared so a request's commands all ride in it."""
    return ledger._batcher


def reserve_argv(
    ledger: Ledger,
    account_id: str,
    session_id: str,
    amount_micros: int,
    *,
    lease_ms: int,
    now_ms: int,
    partial: bool = True,
    new_session: bool,
    who: str = "sessions",
) -> list[Any]:
    """ARGV of reserve.lua, checked as Ledger.reserve checks them (amount may be 1+)."""
    K.check_account_id(account_id)
    K.check_token(session_id, "session id")
    K.check_amount(amount_micros, "reserve amount", lo=1)
    K.check_int(lease_ms, "lease_ms", 1, _MAX_LEASE_MS)
    args: list[Any] = [session_id, amount_micros, now_ms, lease_ms, int(partial)]
    args += [int(new_session), who, ledger.audit_max, ledger.reclaim_per_reserve]
    args.append(ledger.audit_holds)
    return args


def hold_index_command(
    ledger: Ledger, account_id: str, expiry_ms: int
) -> tuple[tuple[Any, ...], int] | None:
    """The hold-index ZADD to send first, in the same pipeline as a fused reserve (as
    Ledger.reserve does), and its score; None when this process already covered it."""
    score = ledger._index_score(account_id, expiry_ms)
    if score is None:
        return None
    return ("ZADD", K.HOLD_INDEX_KEY, "GT", score, account_id), score


def remember_index(ledger: Ledger, account_id: str, score: int) -> None:
    """Once the ZADD of hold_index_command is known written."""
    ledger._remember_index(account_id, score)


def commit_argv(
    ledger: Ledger, session_id: str, cumulative_cost_micros: int, *, now_ms: int
) -> list[Any]:
    """ARGV of commit.lua."""
    K.check_amount(cumulative_cost_micros, "cumulative cost", lo=0)
    args = [session_id, cumulative_cost_micros, now_ms, "sessions", ledger.audit_max]
    return [*args, ledger.session_ttl_ms]


def release_argv(
    ledger: Ledger, session_id: str, final_cost_micros: int, *, now_ms: int
) -> list[Any]:
    """ARGV of release.lua (a final cost is always given on this path)."""
    final = str(K.check_amount(final_cost_micros, "final cost", lo=0))
    args = [session_id, final, now_ms, "sessions", ledger.audit_max, ledger.session_ttl_ms]
    return [*args, ledger.reclaim_per_reserve]


def grant_of(res: Sequence[Any], account_id: str, session_id: str) -> Grant:
    """Decode a reserve.lua reply as Ledger.reserve does (SessionClosed raised)."""
    status = C.s(res[0])
    if status == "ok":
        return Grant(int(res[1]), None, int(res[2]))
    if status == "closed":
        raise SessionClosed(f"session {session_id!r} of {account_id!r} was released")
    return Grant(0, RefusalReason(C.s(res[1])), int(res[2]))


session_keys = K.session_keys
commit_result = C.commit_result
