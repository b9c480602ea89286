"""Credit modes: how a client's calls are kept within their money (DESIGN "Grants,
holds and cuts", docs/credit-control.md "Credit modes").

- ``interim``: the gateway sends Interim-Updates and accepts a cut; each Interim
  commits and renews the hold, a partial grant sets a deadline the cutter fires.
- ``hold_all``: no Interims and no way to cut the call (Kamailio without a cut
  backend, many SBCs). The money behind the whole Session-Timeout is held at
  authorize, so two concurrent calls can never be promised the same money; the call
  runs on its Session-Timeout and is reaped only after it plus ``reap_grace_s``.
- ``own_timer``: no Interims, but the call can be cut (a cut backend such as
  Kamailio JSON-RPC, but no way to tell the gateway a new Session-Timeout). The
  money behind the whole Session-Timeout is held at authorize as in ``hold_all``:
  a cut that is never confirmed leaves the call running to what it was told, so
  that must be its own money. Every call gets a deadline (its own timer) at the end
  of what it paid for, where the cutter re-checks and cuts through the client's cut
  backend; kills (operator, fraud) go the same way. Reaped like ``hold_all``.

Both hold the Session-Timeout's money for the whole call (``holds_all``): the hold
is leased again at the Start (a call may ring for long), and an Interim never asks
for money past the Session-Timeout.

The frontend's config names each client's mode; the rules live here and in the
modules that ask (authorize, accounting, reaper).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

# Final: compiled code uses them as constants (not a module dict look-up per read)
INTERIM: Final = "interim"
HOLD_ALL: Final = "hold_all"
OWN_TIMER: Final = "own_timer"
MODES: Final = (INTERIM, HOLD_ALL, OWN_TIMER)


class CreditModes:
    """Each client's credit mode by client name; ``interim`` for the unnamed."""

    def __init__(self, modes: Mapping[str, str] | None = None) -> None:
        unknown = {m for m in (modes or {}).values() if m not in MODES}
        if unknown:
            raise ValueError(f"unknown credit modes {sorted(unknown)}")
        self._modes = {name: mode for name, mode in (modes or {}).items() if mode != INTERIM}

    def of(self, client: str) -> str:
        return self._modes.get(client, INTERIM)

    def hold_all(self, client: str) -> bool:
        return self.of(client) == HOLD_ALL

    def holds_all(self, client: str) -> bool:
        """The Session-Timeout told at authorize is all held (hold_all, own_timer): the
        gateway cannot be told another, so no other call may be told that money."""
        return self.of(client) in (HOLD_ALL, OWN_TIMER)

    def own_timer(self, client: str) -> bool:
        return self.of(client) == OWN_TIMER

    def silent(self, client: str) -> bool:
        """The gateway sends no Interim: its silence says nothing about the call."""
        return self.of(client) != INTERIM
