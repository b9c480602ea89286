"""The rated CDR: one per call, whatever produced it (live session or mediated file).

Live sessions append it msgpack-encoded to the Redis stream ``cdr:stream`` (field
``cdr``); the exporter writes it to PostgreSQL, idempotent on (source, call_id).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import msgpack

CDR_STREAM = "cdr:stream"


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
    status: str  # "normal", "credit_cut", "killed", "stale", "unanswered", "overrun"
    extra: dict[str, str] = dataclasses.field(default_factory=dict)

    def pack(self) -> bytes:
        return msgpack.packb(dataclasses.asdict(self), use_bin_type=True)  # type: ignore[no-any-return]

    @classmethod
    def unpack(cls, raw: bytes) -> CDR:
        data: dict[str, Any] = msgpack.unpackb(raw, raw=False)
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"CDR has unknown fields: {sorted(unknown)}")
        return cls(**data)
