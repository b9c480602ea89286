"""The one written form of a "user" identity, for storing and for looking up.

An account's ``user:NAME`` identity is matched against what a gateway names the caller
by: RADIUS User-Name, a Diameter Subscription-Id (END_USER_SIP_URI, NAI, ...) or its
User-Name. The same subscriber is written in several ways that mean the same address:

- a SIP or SIPS URI, ``sip:alice@example.com``, ``<SIP:alice@Example.COM;transport=udp>``:
  RFC 3261 §19.1.4 compares the scheme, the host and the parameters without regard to
  case, the userinfo (user and password, also a telephone-subscriber) exactly, and takes
  a character outside the "reserved" set as equal to its ``%XX`` escape. The identity is
  the address of record: ``alice@example.com`` (no scheme, no parameters or headers,
  the host in lower case, the user as sent with its needless escapes decoded).
- ``alice@EXAMPLE.COM`` without a scheme (Kamailio's ``$fU@$fd``, an NAI, RFC 7542): the
  part after the last "@" is a host or realm, a DNS name (RFC 4343: case-insensitive),
  written in lower case; the user part stays as sent.

A name without "@" and without a SIP scheme (``alice``, ``+4930123``, ``tel:+4930123``)
is kept as it is: nothing in it is case-insensitive by a rule chargingd can apply.
Numbers are matched as ``ani:+E164`` identities (core/numbers.py), not here.

ledger/keys.check_identities stores ``user:`` identities in this form (an operator's
``user:sip:Alice@EXAMPLE.COM`` is kept as ``user:Alice@example.com``), and sessions looks
a caller up by it; an identity stored before, in another form, is still found by the
name exactly as the gateway sends it (sessions/authorize.py tries both).
"""

from __future__ import annotations

import re
from typing import Final

USER_PREFIX: Final = "user:"
_SIP_SCHEMES: Final = ("sips:", "sip:")
# RFC 3261 §25.1 / RFC 2396 §2.3 "unreserved": an escape of one of these is the
# character itself (§19.1.4); escapes of reserved characters stay, their hex in upper case.
_UNRESERVED: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!~*'()"
)
_ESCAPE: Final = re.compile(r"%([0-9A-Fa-f]{2})")


def canonical_user(name: str) -> str:
    """The canonical form of a user name (see the module's docstring); idempotent."""
    if ":" not in name and "<" not in name:  # no URI: per authorize, kept cheap
        at = name.rfind("@")
        if at < 0:
            return name  # "alice": the usual RADIUS User-Name, nothing to do
        host = name[at + 1 :]
        low = host.lower()
        return name if low == host else name[: at + 1] + low
    text = name.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    lowered = text[:5].lower()
    for scheme in _SIP_SCHEMES:
        if lowered.startswith(scheme):
            return _address_of_record(text[len(scheme) :], fold=True)
    at = text.rfind("@")
    if at < 0:
        return text
    host = text[at + 1 :]
    low = host.lower()
    return text if low == host else text[: at + 1] + low


def sip_address(uri: str) -> str:
    """A SIP/SIPS URI as its address of record as sent: the scheme, the parameters and
    headers dropped, no case folded ("SIP:alice@Example.com;transport=udp" ->
    "alice@Example.com"); another text as it is. What a frontend passes on as the
    caller's user name (sessions looks it up canonical_user'd, then as sent)."""
    text = uri.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    lowered = text[:5].lower()
    for scheme in _SIP_SCHEMES:
        if lowered.startswith(scheme):
            return _address_of_record(text[len(scheme) :], fold=False)
    return text


def user_identity(name: str) -> str:
    """``user:`` + canonical_user(name)."""
    return USER_PREFIX + canonical_user(name)


def canonical_identity(identity: str) -> str:
    """A stored identity in its canonical form: ``user:`` ones through canonical_user,
    others (``ani:+E164``) as they are."""
    if identity.startswith(USER_PREFIX):
        return user_identity(identity[len(USER_PREFIX) :])
    return identity


def _address_of_record(rest: str, *, fold: bool) -> str:
    """``user@host:port;params?headers`` (after the scheme) -> ``user@host:port``, the
    userinfo's needless escapes decoded (the same URI), with ``fold`` the host in lower
    case."""
    at = rest.find("@")  # the userinfo holds no unescaped "@" (RFC 3261 §25.1)
    if at < 0:
        userinfo, hostpart = "", rest
    else:
        userinfo, hostpart = rest[:at], rest[at + 1 :]
    for stop in (";", "?"):
        hostpart = hostpart.split(stop, 1)[0]
    host = hostpart.lower() if fold else hostpart
    if not userinfo:
        return host
    return _unescape(userinfo) + "@" + host


def _unescape(text: str) -> str:
    """Escapes of unreserved characters decoded, the others' hex in upper case."""
    if "%" not in text:
        return text

    def one(m: re.Match[str]) -> str:
        char = chr(int(m.group(1), 16))
        return char if char in _UNRESERVED else "%" + m.group(1).upper()

    return _ESCAPE.sub(one, text)
