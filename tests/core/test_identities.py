"""core/identities.py: one written form of a user identity (RFC 3261 §19.1.4)."""

from __future__ import annotations

import pytest

from chargingd.core.identities import canonical_identity, canonical_user, sip_address


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("alice", "alice"),
        ("sip:alice@EXAMPLE.COM", "alice@example.com"),
        ("SIP:alice@Example.com;transport=udp", "alice@example.com"),
        ("<sips:Alice@Example.com:5061;lr?subject=x>", "Alice@example.com:5061"),
        ("sip:%61lice@example.com", "alice@example.com"),  # unreserved: the character
        ("sip:al%40ice@EX.com", "al%40ice@ex.com"),  # reserved: stays escaped
        ("sip:alice;day=tuesday@Atlanta.COM", "alice;day=tuesday@atlanta.com"),
        ("sip:+4930123@GW.example;user=phone", "+4930123@gw.example"),
        ("sip:Example.COM", "example.com"),
        ("alice@EXAMPLE.COM", "alice@example.com"),  # an NAI / $fU@$fd: the realm folded
        ("Alice@example.com", "Alice@example.com"),
        ("tel:+4930123", "tel:+4930123"),
        ("+4930123", "+4930123"),
    ],
)
def test_canonical_user(name: str, canonical: str) -> None:
    assert canonical_user(name) == canonical
    assert canonical_user(canonical) == canonical  # idempotent


def test_sip_address_keeps_the_case_and_identity_forms() -> None:
    assert sip_address("SIP:alice@Example.com;transport=udp") == "alice@Example.com"
    assert sip_address("alice@Example.com") == "alice@Example.com"
    assert canonical_identity("user:sip:Bob@EXAMPLE.org") == "user:Bob@example.org"
    assert canonical_identity("ani:+4930123") == "ani:+4930123"
