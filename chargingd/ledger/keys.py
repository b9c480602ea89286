"""Every Redis key name of the ledger (the one place they are built) and input checks.

Per-account keys carry the hash tag ``{a:ID}`` so that every ledger script touches one
Redis Cluster hash slot (DESIGN invariant 5). The three global indexes live in other
slots and are only ever touched by their own one-key scripts or plain commands.

  {a:ID}:acct        hash    the account (fields: see balance._decode_account)
  {a:ID}:holds       hash    session id -> held micros (live holds only)
  {a:ID}:leases      zset    session id -> lease expiry ms (live holds only)
  {a:ID}:audit       stream  audit trail, trimmed to audit_max_entries
  {a:ID}:journal     stream  every money movement (journal.py); trimmed only by the
                             exporter once copied to the billing database
  {a:ID}:ls:SID      hash    ledger session: debited micros, closed flag (TTL)
  {a:ID}:txn:TXN     hash    a top-up/adjustment: kind, amount, result (TTL txn_ttl_s)
  {a:ID}:u:N:SRC:CID hash    one call charged outside live credit control (mediated) or
                             rerated: charged, cost, reason (TTL txn_ttl_s); N = len(SRC)
  ledger:accounts    set     every account id (list_accounts pages it with SSCAN)
  ledger:identities  hash    "user:NAME" / "ani:+E164" -> account id
  ledger:holdidx     zset    account id -> when the sweeper should visit it (ms)
  ledger:txn:TXN     string  the account a transaction id / payment reference belongs to
                             (TTL txn_ttl_s): refused on any other account
"""

from __future__ import annotations

import re
from typing import Final

from chargingd.core import money
from chargingd.core.identities import canonical_identity
from chargingd.ledger.types import InvalidRequest

ACCOUNTS_KEY = "ledger:accounts"
IDENTITIES_KEY = "ledger:identities"
HOLD_INDEX_KEY = "ledger:holdidx"

# Lua numbers are doubles: keep every amount (and every sum of them) well below 2**53.
MAX_AMOUNT_MICROS = money.MAX_AMOUNT_MICROS

_ACCOUNT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,63}")
_CURRENCY = re.compile(r"[A-Z]{3}")  # ISO 4217 alphabetic code
_USER = re.compile(r"user:[^\s\x00-\x1f\x7f]{1,253}")
_ANI = re.compile(r"ani:\+[1-9][0-9]{1,14}")  # ITU-T E.164: at most 15 digits
_AUDIT_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")


def account_tag(account_id: str) -> str:
    """The ``{a:ID}`` hash tag: every key of one account (ledger or session) carries it,
    so they share one Redis Cluster slot (DESIGN invariant 5). Built here only."""
    return f"{{a:{account_id}}}"


def tag_of(account_id: str) -> str:
    """account_tag(account_id), from session_keys' memory when it holds the account:
    one look-up where the f-string cost ~450 instructions per key of a session's
    (sessions/indexes.py's record and live keys, the close lease's; round 13b)."""
    known = _ACCOUNT_KEYS.get(account_id) if type(account_id) is str else None
    if known is None:
        return account_tag(account_id)
    return known[0]


def acct_key(account_id: str) -> str:
    return f"{account_tag(account_id)}:acct"


def holds_key(account_id: str) -> str:
    return f"{account_tag(account_id)}:holds"


def leases_key(account_id: str) -> str:
    return f"{account_tag(account_id)}:leases"


def audit_key(account_id: str) -> str:
    return f"{account_tag(account_id)}:audit"


def journal_key(account_id: str) -> str:
    """The journal stream; the money scripts derive it from the acct key (common.lua)."""
    return f"{account_tag(account_id)}:journal"


def session_key(account_id: str, session_id: str) -> str:
    return f"{account_tag(account_id)}:ls:{session_id}"


def txn_key(account_id: str, txn_id: str) -> str:
    return f"{account_tag(account_id)}:txn:{txn_id}"


def usage_key(account_id: str, source: str, call_id: str) -> str:
    """One call's usage charge; the source's length keeps "a:b"+"c" apart from "a"+"b:c"."""
    return f"{account_tag(account_id)}:u:{len(source)}:{source}:{call_id}"


def txn_owner_key(txn_id: str) -> str:
    """The global claim of a transaction id (its own slot; one-key scripts only)."""
    return f"ledger:txn:{txn_id}"


def session_keys(account_id: str, session_id: str) -> list[str]:
    """KEYS of reserve, commit and release, in the order the scripts name them."""
    known = _ACCOUNT_KEYS.get(account_id) if type(account_id) is str else None
    if known is None:
        known = _account_keys(account_id)
    tag, acct, holds, leases, audit = known
    return [acct, holds, leases, audit, f"{tag}:ls:{session_id}"]


# Account id (exactly str) -> its tag and its four keys of session_keys: an account's
# reserve, commit and release build the same four again and again (four f-strings,
# ~1,500 instructions per step, round 12a). Cleared when full: 10,000 of them hold up to
# ~8 MB per process with 64-character ids (100,000 measured 83 MB); a miss only builds
# the four keys again.
_ACCOUNT_KEYS: Final[dict[str, tuple[str, str, str, str, str]]] = {}
_ACCOUNT_KEYS_MAX: Final = 10_000


def _account_keys(account_id: str) -> tuple[str, str, str, str, str]:
    """The account's tag and keys (session_keys), remembered for an exact str."""
    tag = account_tag(account_id)
    keys = (tag, f"{tag}:acct", f"{tag}:holds", f"{tag}:leases", f"{tag}:audit")
    if type(account_id) is str:  # (a subclass's hash and equality may be its own)
        if len(_ACCOUNT_KEYS) >= _ACCOUNT_KEYS_MAX:
            _ACCOUNT_KEYS.clear()
        _ACCOUNT_KEYS[account_id] = keys
    return keys


# -- input checks: bad input is a typed error and changes nothing --------------------
# Each takes `object`: the caller's value may be anything (a float amount, a number
# for a name), and the check, not a compiled argument check (TypeError, setup.py),
# is what refuses it with InvalidRequest.


# Account ids (exactly str) check_account_id has passed: each reserve, commit and
# release checks its account's id, the same few ids again and again; a set look-up
# (the id's hash kept in the str) in place of the pattern's match (~1,800
# instructions per authorize, round 11). Cleared when full.
_CHECKED_IDS: set[str] = set()
_CHECKED_MAX = 100_000


def check_account_id(account_id: object) -> str:
    """Letters, digits and ._:@+- (no braces: they would break the hash tag)."""
    if type(account_id) is str and account_id in _CHECKED_IDS:
        return account_id
    if not isinstance(account_id, str) or not _ACCOUNT_ID.fullmatch(account_id):
        raise InvalidRequest(f"bad account id {account_id!r}: 1-64 of A-Z a-z 0-9 . _ : @ + -")
    if type(account_id) is str:  # (a subclass's hash and equality may be its own)
        if len(_CHECKED_IDS) >= _CHECKED_MAX:
            _CHECKED_IDS.clear()
        _CHECKED_IDS.add(account_id)
    return account_id


def check_token(value: object, what: str, max_len: int = 256) -> str:
    """A session or transaction id: non-empty, printable, bounded."""
    if not isinstance(value, str) or not 0 < len(value) <= max_len or not value.isprintable():
        raise InvalidRequest(f"bad {what} {value!r}: 1-{max_len} printable characters")
    return value


def check_text(value: object, what: str, *, required: bool = False, max_len: int = 1000) -> str:
    if not isinstance(value, str) or len(value) > max_len or (required and not value.strip()):
        raise InvalidRequest(f"bad {what}: {'non-empty ' if required else ''}text up to {max_len}")
    return value


def check_currency(currency: object) -> str:
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        raise InvalidRequest(f"bad currency {currency!r}: an ISO 4217 code such as EUR")
    return currency


def check_amount(amount_micros: object, what: str, *, lo: int = -MAX_AMOUNT_MICROS) -> int:
    """An integer count of micro-units within the ledger's range (never a float). An
    int exactly: a bool or another int subclass (an IntEnum) is refused, as it is by
    the compiled build's callers too (its argument checks would take it as the int it
    holds where the interpreted ledger sent the object itself, which Redis cannot take)."""
    if type(amount_micros) is not int:
        raise InvalidRequest(f"{what} must be an integer number of micro-units")
    if not lo <= amount_micros <= MAX_AMOUNT_MICROS:
        raise InvalidRequest(f"{what} {amount_micros} is out of range [{lo}, {MAX_AMOUNT_MICROS}]")
    return amount_micros


def check_int(value: object, what: str, lo: int, hi: int) -> int:
    """An int exactly (see check_amount) in [lo, hi]."""
    if type(value) is not int or not lo <= value <= hi:
        raise InvalidRequest(f"{what} must be an integer in [{lo}, {hi}]")
    return value


def check_identities(identities: object) -> tuple[str, ...]:
    """ "user:NAME" (RADIUS User-Name, a SIP URI, an NAI) or "ani:+E164" (caller ANI), a
    user identity in its canonical form (core/identities.py: ``user:sip:Alice@EXAMPLE.COM``
    is ``user:Alice@example.com``, as a gateway's SIP URI is looked up); duplicates
    (also two spellings of one identity) dropped."""
    if isinstance(identities, str) or not isinstance(identities, (tuple, list)):
        raise InvalidRequest("identities must be a list such as ['user:alice', 'ani:+4930123']")
    checked: list[str] = []
    for ident in identities:
        if not isinstance(ident, str) or not (_USER.fullmatch(ident) or _ANI.fullmatch(ident)):
            raise InvalidRequest(f"bad identity {ident!r}: want user:NAME or ani:+E164")
        canonical = canonical_identity(ident)
        if not _USER.fullmatch(canonical) and not _ANI.fullmatch(canonical):
            raise InvalidRequest(f"bad identity {ident!r}: want user:NAME or ani:+E164")
        checked.append(canonical)
    return tuple(dict.fromkeys(checked))


def check_audit_id(before_id: object) -> str:
    """ "+" (newest) or a stream entry id such as "1700000000000-0"."""
    if not isinstance(before_id, str) or (before_id != "+" and not _AUDIT_ID.fullmatch(before_id)):
        raise InvalidRequest(f"bad audit entry id {before_id!r}")
    return before_id
