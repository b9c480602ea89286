"""The fused scripts as Redis Functions libraries (single Redis).

An EVALSHA runs its script's top level on every call: the definition of every function
it embeds (the ledger's prelude and steps; for session_authorize_fraud the fraud
rules' too): about 10 us of Redis per authorize with the rules (docs/fraud-cost.md, "Fifth
round"), ~1 us for the plain authorize and the accounting scripts, plus the sha's
lookup (docs/performance.md, "Round 6b"). A library's top level runs once, at
FUNCTION LOAD; each FCALL runs only the body. The body is the same Lua (e.g.
session_authorize.lua) and the functions are the same text, so money still moves
only through the ledger's own scripts (ledger.steps.fused_source). Each fused script
(sessions/fused.py: authorize, with the rules or not, renew, close, stop) is its own
library of one function.

Safety:
- a library keeps its top-level values between calls: the only mutable ones
  (fraud.lua's fr_vals, fr_parsed, fr_learn, fr_scan_v: what one run read and decoded) are reset
  at the start of each call, as a fresh EVALSHA run starts them; kept on purpose:
  fraud.lua's fr_ops_seen, the decoded ops by their msgpack text (read only, at most
  256, another text another entry: ~2 us of Redis a call, docs/fraud-cost.md "Seventh
  round"), and fr_kept, the values the library wrote, decoded, taken only when GET
  returns the very bytes written (taken out when read, put back when written: a
  failed run leaves none; docs/fraud-cost.md "Ninth round"), and fr_gen_seen, each ops
  text's generated Lua, compiled once (read only, at most 256, another text another
  entry: docs/fraud-cost.md "Tenth round"), and fr_sum/fr_edge, each counter table's window
  sum and the soonest one of its buckets stops counting, by the table (weak keys: gone
  with it; only tables fr_kept hands back, the very ones written: docs/fraud-cost.md
  "Thirteenth round"); and the ledger's RESERVE_STEPS (ledger/lua/common.lua):
  reserve.lua's three functions of their arguments, made by its first run and never
  changed after (docs/performance.md, round 13a);
- rolling upgrades: the library's (and its function's) name carries the hash of its
  code, so daemons of two versions each call their own; a library is loaded without
  REPLACE ("already exists" is the same code: nothing to do);
- a Redis that lost it (restarted, FUNCTION FLUSH, a new master) answers "Function not
  found": nothing ran; the library is loaded once (however many calls met the error
  together) and the call sent again, as NOSCRIPT reloads scripts;
- a Redis without Functions (before 7.0), or a user its ACL does not allow FCALL or
  FUNCTION LOAD: the same script by EVALSHA, as before;
- Redis Cluster never takes the fused path (one script names keys of several slots):
  the step-by-step path keeps its scripts there.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from redis.exceptions import ResponseError

# fraud.lua's per-run state (its head): what a fresh script run starts with; fr_lib:
# this run is a library's, whose top level is kept between calls (fraud.lua runs the
# ops' generated Lua, compiled once per ops text: docs/fraud-cost.md "Tenth round")
FRAUD_RESET = "fr_vals = {} fr_learn = 0 fr_parsed = nil fr_scan_v = nil fr_lib = true"
PREFIX = "chargingd_af_"  # the authorize with the fraud rules; the others: fused.py


class FusedLibrary:
    """One fused script as a library of one function, and how to call it."""

    def __init__(
        self, redis: Any, definitions: str, body: str, reset: str = "", prefix: str = PREFIX
    ) -> None:
        """``definitions``: the Lua the body calls (ledger.steps.fused_source of it);
        ``body``: the script's own top level, run per call, after ``reset`` (what puts
        the definitions' per-run values back as a fresh script run has them);
        ``prefix``: the library's name before its code's hash (which script it is)."""
        self.redis = redis
        digest = hashlib.sha1(f"{definitions}\0{reset}\0{body}".encode()).hexdigest()[:16]
        self.name = f"{prefix}{digest}"
        self.code = (
            f"#!lua name={self.name}\n{definitions}\n"
            f"redis.register_function('{self.name}', function(KEYS, ARGV)\n"
            f"{reset}\n{body}\nend)\n"
        )
        self.available = True  # False: this Redis has no Functions (EVALSHA instead)
        self.loads = 0  # FUNCTION LOADs sent (tests)
        self._loading: asyncio.Future[None] | None = None

    def command(self, keys: list[str], args: list[Any]) -> tuple[Any, ...]:
        return ("FCALL", self.name, len(keys), *keys, *args)

    async def recover(self, exc: ResponseError) -> None:
        """An FCALL failed without running (``missing``): load the library, or, where
        this Redis or its user cannot call functions, use EVALSHA from now on."""
        if _unusable(str(exc).lower()):
            self.available = False
            return
        await self.load()

    async def load(self) -> None:
        """FUNCTION LOAD, once at a time: the calls that found it missing together wait
        for one load. Marks the library unavailable on a Redis without Functions."""
        if self._loading is None or self._loading.done():
            self._loading = asyncio.ensure_future(self._load())
        await asyncio.shield(self._loading)

    async def _load(self) -> None:
        self.loads += 1
        try:
            await self.redis.execute_command("FUNCTION", "LOAD", self.code)
        except ResponseError as exc:
            text = str(exc).lower()
            if "already exists" in text:
                return  # the same code (its name is its hash)
            if _unusable(text) or "unknown subcommand" in text:
                self.available = False
                return
            raise


def _unusable(text: str) -> bool:
    """No Functions on this Redis (before 7.0), or its ACL denies this user them."""
    return "unknown command" in text or "noperm" in text or "no permissions" in text


def missing(exc: ResponseError) -> bool:
    """Does this error say the FCALL did not run (the library is not there, or this
    Redis or user cannot call functions)?"""
    text = str(exc).lower()
    return "function not found" in text or _unusable(text)
