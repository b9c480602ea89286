"""Alert keys in Redis: one stream of incidents and the latest incident of each key.

Every key carries the hash tag ``{alerts}``: the raise script touches the incident
and the stream together, so on Redis Cluster they share one slot (alerts are rare:
one slot is plenty).

  {alerts}:stream           stream  "opened" and "closed" entries of every incident
  {alerts}:inc:KEY          hash    the latest incident of KEY (count, first/last ms)
  {alerts}:inc:KEY:calls    list    its triggering calls, the first calls_kept
  {alerts}:touched          zset    incident key -> ms of its last raise or resolve (the
                                    listing since a time: incidents opened before it
                                    and counted or resolved after it)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from typing import Any

from chargingd.alerts.types import Incident, Raised, Severity

STREAM = "{alerts}:stream"
TOUCHED = "{alerts}:touched"
_PAGE = 500


def incident_key(key: str) -> str:
    return f"{{alerts}}:inc:{key}"


def calls_key(key: str) -> str:
    return f"{{alerts}}:inc:{key}:calls"


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _fields(raw: dict[Any, Any]) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in raw.items()}


class AlertStore:
    """The raise/resolve scripts and the incident listing; callers never build keys."""

    def __init__(
        self,
        redis: Any,
        *,
        clock_ms: Callable[[], int],
        dedup_window_s: int,
        retention_s: int,
        calls_kept: int,
        stream_maxlen: int,
    ) -> None:
        self.redis = redis
        self.clock_ms = clock_ms
        self.window_ms = dedup_window_s * 1000
        self.retention_ms = retention_s * 1000
        self.calls_kept = calls_kept
        self.stream_maxlen = stream_maxlen
        lua = resources.files("chargingd.alerts") / "lua"
        self._raise = redis.register_script((lua / "raise.lua").read_text())
        self._resolve = redis.register_script((lua / "resolve.lua").read_text())

    async def raise_(
        self,
        key: str,
        *,
        kind: str,
        severity: Severity,
        summary: str,
        details_json: str,
        call: str,
        now_ms: int,
    ) -> Raised:
        """Count one occurrence (arguments already checked by Alerts.raise_alert)."""
        keys = [incident_key(key), calls_key(key), STREAM, TOUCHED]
        args = [key, kind, severity.value, summary, details_json, call, now_ms]
        args += [self.window_ms, self.retention_ms, self.calls_kept, self.stream_maxlen]
        reply = await self._raise(keys=keys, args=args)
        if _s(reply[0]) == "opened":
            return Raised(_s(reply[1]), True, 1)
        return Raised(_s(reply[1]), False, int(reply[2]))

    async def resolve(self, key: str, *, who: str, why: str) -> Incident | None:
        """Close the open incident of ``key``; None when none is open."""
        keys = [incident_key(key), calls_key(key), STREAM, TOUCHED]
        args = [key, self.clock_ms(), who, why, self.stream_maxlen]
        reply = await self._resolve(keys=keys, args=args)
        if _s(reply[0]) != "resolved":
            return None
        return await self.latest(key)

    async def latest(self, key: str) -> Incident | None:
        """The latest incident of ``key`` (open, quiet or resolved), or None."""
        raw = _fields(await self.redis.hgetall(incident_key(key)))
        if "id" not in raw:
            return None
        calls = await self.redis.lrange(calls_key(key), 0, -1)
        return self._live(raw, tuple(_s(c) for c in calls))

    def _live(self, raw: dict[str, str], calls: tuple[str, ...]) -> Incident:
        last_ms = int(raw["last_ms"])
        state = raw.get("state", "open")
        closed: dict[str, str] = {}
        if state == "open" and self.clock_ms() - last_ms >= self.window_ms:
            state = "quiet"
        if state == "resolved":
            closed = {
                "why": "resolved",
                "by": raw.get("resolved_by", ""),
                "note": raw.get("resolved_why", ""),
            }
        return Incident(
            id=raw["id"],
            key=raw["key"],
            kind=raw["kind"],
            severity=Severity(raw["severity"]),
            summary=raw["summary"],
            details=json.loads(raw["details"]),
            first_ms=int(raw["first_ms"]),
            last_ms=last_ms,
            count=int(raw["count"]),
            calls=calls,
            state=state,
            closed=closed,
        )

    async def incidents(
        self, *, since_ms: int = 0, kind_prefix: str = "", limit: int = 100
    ) -> list[Incident]:
        """Incidents of ``since_ms`` on, newest first, with their counts: opened at or
        after it, then those opened before it that were counted (raised again), resolved
        or went quiet at or after it (an operator asking what happened since 02:00 means
        an attack that began at 01:50 and goes on too; the listing used to show only the
        incidents opened since)."""
        out, closing = await self._opened_since(since_ms, kind_prefix, limit)
        if since_ms <= 0 or len(out) >= limit:
            return out
        older = await self._touched_since(since_ms, kind_prefix, out, closing)
        older.sort(key=lambda i: (i.first_ms, i.id), reverse=True)
        return out + older[: limit - len(out)]

    async def _touched_since(
        self,
        since_ms: int,
        kind_prefix: str,
        opened: list[Incident],
        closing: dict[str, dict[str, str]],
    ) -> list[Incident]:
        """Incidents opened before ``since_ms`` and touched since (``opened``: those
        opened since, all of them; ``closing``: the 'closed' entries the walk back to
        since_ms met, every one written since among them): the latest incident of each
        key raised or resolved since (TOUCHED; a key with an incident opened since has
        its latest among those), and the incidents whose 'closed' entry (resolved, or
        quiet after its last raise) is of since_ms on."""
        out: list[Incident] = []
        seen = {i.id for i in opened}
        keys = {i.key for i in opened}
        touched = [_s(k) for k in await self.redis.zrangebyscore(TOUCHED, since_ms, "+inf")]
        touched = [k for k in touched if k not in keys]
        if touched:  # one round trip for all of them
            async with self.redis.pipeline(transaction=False) as pipe:
                for key in touched:
                    pipe.hgetall(incident_key(key))
                    pipe.lrange(calls_key(key), 0, -1)
                replies = await pipe.execute()
            for i in range(0, len(replies), 2):
                raw = _fields(replies[i])
                if "id" not in raw or raw["id"] in seen:
                    continue
                latest = self._live(raw, tuple(_s(c) for c in replies[i + 1]))
                if latest.kind.startswith(kind_prefix):
                    seen.add(latest.id)
                    out.append(latest)
        for incident_id, closed in closing.items():
            if incident_id in seen or not _closed_since(closed, since_ms):
                continue
            found = await self.redis.xrange(STREAM, incident_id, incident_id)
            if not found:  # trimmed away (stream_maxlen)
                continue
            head = _fields(found[0][1])
            if head.get("kind", "").startswith(kind_prefix):
                seen.add(incident_id)
                out.append(await self._incident(incident_id, head, closed))
        return out

    async def _opened_since(
        self, since_ms: int, kind_prefix: str, limit: int
    ) -> tuple[list[Incident], dict[str, dict[str, str]]]:
        """Incidents opened at or after ``since_ms``, newest first; and the 'closed'
        entries met on the way (by incident id): a walk back to the newest incident
        opened before since_ms meets every entry written since."""
        out: list[Incident] = []
        closing: dict[str, dict[str, str]] = {}  # id -> its "closed" entry (newer)
        top = "+"
        while len(out) < limit:
            page = await self.redis.xrevrange(STREAM, top, "-", count=_PAGE)
            for entry_id, raw in page:
                fields = _fields(raw)
                if fields.get("event") == "closed":
                    fields["_entry_ms"] = _s(entry_id).partition("-")[0]
                    closing[fields["id"]] = fields
                    continue
                if int(fields.get("first_ms", "0")) < since_ms:
                    return out, closing
                if not fields.get("kind", "").startswith(kind_prefix):
                    continue
                out.append(await self._incident(_s(entry_id), fields, closing.get(_s(entry_id))))
                if len(out) >= limit:
                    break
            if len(page) < _PAGE:
                break
            top = f"({_s(page[-1][0])}"
        return out, closing

    async def _incident(
        self, entry_id: str, opened: dict[str, str], closed: dict[str, str] | None
    ) -> Incident:
        if closed is None:
            live = await self.latest(opened["key"])
            if live is not None and live.id == entry_id:
                return live
            closed = {"count": "1", "last_ms": opened["first_ms"], "why": "expired"}
        return Incident(
            id=entry_id,
            key=opened["key"],
            kind=opened["kind"],
            severity=Severity(opened["severity"]),
            summary=opened["summary"],
            details=json.loads(opened["details"]),
            first_ms=int(opened["first_ms"]),
            last_ms=int(closed["last_ms"]),
            count=int(closed["count"]),
            calls=tuple(c for c in closed.get("calls", opened["call"]).split("\n") if c),
            state="resolved" if closed["why"] == "resolved" else "quiet",
            closed={k: closed[k] for k in ("why", "by", "note") if closed.get(k)},
        )


def _closed_since(closed: dict[str, str], since_ms: int) -> bool:
    """A 'closed' entry of an incident touched at or after ``since_ms``: resolved then
    (closed_ms; an entry written before closed_ms was kept: its stream id's time), or
    quiet with its last raise then."""
    if closed.get("why") == "resolved":
        at = closed.get("closed_ms") or closed.get("_entry_ms", "0")
        return int(at) >= since_ms
    return int(closed.get("last_ms", "0")) >= since_ms
