"""Diameter codec cost: python-diameter's message classes vs chargingd's struct codec.

Per CCR-U (decode + pick the fields the translation needs) and per CCA (encode),
in microseconds, median of several rounds. Run:

    .venv/bin/python scripts/bench_diameter_codec.py

python-diameter is not a dependency of chargingd: install it to compare
(`.venv/bin/pip install python-diameter`); without it only chargingd's codec runs.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

from chargingd.diameter import codec as dc
from chargingd.diameter.dictionary import VENDOR_3GPP, A, G

ROUNDS = 5
N = 20_000


def ccr_bytes() -> bytes:
    """A CCR-U as an IMS S-CSCF sends it (built with chargingd's encoder)."""
    body = b"".join(
        [
            dc.utf8(A.SESSION_ID, "scscf.example.net;1700000000;42;call-000123"),
            dc.utf8(A.ORIGIN_HOST, "scscf.example.net"),
            dc.utf8(A.ORIGIN_REALM, "example.net"),
            dc.utf8(A.DESTINATION_REALM, "charging.example.net"),
            dc.u32(A.AUTH_APPLICATION_ID, 4),
            dc.utf8(A.SERVICE_CONTEXT_ID, "32260@3gpp.org"),
            dc.u32(A.CC_REQUEST_TYPE, 2),
            dc.u32(A.CC_REQUEST_NUMBER, 1),
            dc.grouped(
                A.SUBSCRIPTION_ID,
                dc.u32(A.SUBSCRIPTION_ID_TYPE, 0),
                dc.utf8(A.SUBSCRIPTION_ID_DATA, "441234567890"),
            ),
            dc.grouped(
                A.MULTIPLE_SERVICES_CREDIT_CONTROL,
                dc.grouped(A.REQUESTED_SERVICE_UNIT, dc.u32(A.CC_TIME, 60)),
                dc.grouped(A.USED_SERVICE_UNIT, dc.u32(A.CC_TIME, 30)),
                dc.u32(A.RATING_GROUP, 100),
            ),
            dc.grouped(
                G.SERVICE_INFORMATION,
                dc.grouped(
                    G.IMS_INFORMATION,
                    dc.utf8(G.CALLED_PARTY_ADDRESS, "tel:+493012345678", vendor=VENDOR_3GPP),
                    vendor=VENDOR_3GPP,
                ),
                vendor=VENDOR_3GPP,
            ),
        ]
    )
    return dc.encode(272, dc.FLAG_R | dc.FLAG_P, 4, 1, 2, body)


def ours_decode(data: bytes) -> tuple[str, int, int, str]:
    msg = dc.decode(data)
    sid = msg.get(A.SESSION_ID).text()  # type: ignore[union-attr]
    number = msg.get(A.CC_REQUEST_NUMBER).u32()  # type: ignore[union-attr]
    used = 0
    for mscc in msg.all(A.MULTIPLE_SERVICES_CREDIT_CONTROL):
        for usu in (a for a in mscc.group() if a.code == A.USED_SERVICE_UNIT):
            t = dc.find(usu.group(), A.CC_TIME)
            used += t.u32() if t else 0
    sub = dc.find(msg.get(A.SUBSCRIPTION_ID).group(), A.SUBSCRIPTION_ID_DATA)  # type: ignore[union-attr]
    return sid, number, used, sub.text() if sub else ""


def ours_encode() -> bytes:
    body = b"".join(
        [
            dc.utf8(A.SESSION_ID, "scscf.example.net;1700000000;42;call-000123"),
            dc.u32(A.RESULT_CODE, 2001),
            dc.utf8(A.ORIGIN_HOST, "chargingd.example.net"),
            dc.utf8(A.ORIGIN_REALM, "example.net"),
            dc.u32(A.AUTH_APPLICATION_ID, 4),
            dc.u32(A.CC_REQUEST_TYPE, 2),
            dc.u32(A.CC_REQUEST_NUMBER, 1),
            dc.grouped(
                A.MULTIPLE_SERVICES_CREDIT_CONTROL,
                dc.grouped(A.GRANTED_SERVICE_UNIT, dc.u32(A.CC_TIME, 60)),
                dc.u32(A.RATING_GROUP, 100),
                dc.u32(A.VALIDITY_TIME, 90),
                dc.u32(A.RESULT_CODE, 2001),
            ),
        ]
    )
    return dc.encode(272, dc.FLAG_P, 4, 1, 2, body)


def python_diameter() -> tuple[Callable[[bytes], object], Callable[[], bytes]] | None:
    try:
        from diameter.message import Message
        from diameter.message.avp.grouped import (
            GrantedServiceUnit,
            MultipleServicesCreditControl,
        )
        from diameter.message.commands import CreditControlAnswer
    except ImportError:
        return None

    def decode(data: bytes) -> object:
        msg = Message.from_bytes(data)
        used = 0
        for mscc in msg.multiple_services_credit_control:  # type: ignore[attr-defined]
            for usu in mscc.used_service_unit:
                used += usu.cc_time or 0
        sub = msg.subscription_id[0].subscription_id_data  # type: ignore[attr-defined]
        return msg.session_id, msg.cc_request_number, used, sub  # type: ignore[attr-defined]

    def encode() -> bytes:
        cca = CreditControlAnswer()
        cca.header.hop_by_hop_identifier = 1
        cca.header.end_to_end_identifier = 2
        cca.session_id = "scscf.example.net;1700000000;42;call-000123"
        cca.result_code = 2001
        cca.origin_host = b"chargingd.example.net"
        cca.origin_realm = b"example.net"
        cca.auth_application_id = 4
        cca.cc_request_type = 2
        cca.cc_request_number = 1
        cca.multiple_services_credit_control = [
            MultipleServicesCreditControl(
                granted_service_unit=GrantedServiceUnit(cc_time=60),
                rating_group=100,
                validity_time=90,
                result_code=2001,
            )
        ]
        out: bytes = cca.as_bytes()
        return out

    return decode, encode


def per_op_us(fn: Callable[[], object]) -> float:
    rounds = []
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        for _ in range(N):
            fn()
        rounds.append((time.perf_counter() - t0) / N * 1e6)
    return statistics.median(rounds)


def main() -> None:
    data = ccr_bytes()
    rows = [
        ("chargingd codec", per_op_us(lambda: ours_decode(data)), per_op_us(ours_encode)),
    ]
    pd = python_diameter()
    if pd is not None:
        decode, encode = pd
        assert decode(data)[:3] == ours_decode(data)[:3], "both codecs must read the same"
        assert dc.decode(encode()).get(A.RESULT_CODE).u32() == 2001  # type: ignore[union-attr]
        rows.append(("python-diameter", per_op_us(lambda: decode(data)), per_op_us(encode)))
    else:
        print("python-diameter not installed: pip install python-diameter to compare")
    print(f"{'codec':<18} {'CCR decode µs':>14} {'CCA encode µs':>14} {'total µs':>10}")
    for name, dec, enc in rows:
        print(f"{name:<18} {dec:>14.1f} {enc:>14.1f} {dec + enc:>10.1f}")


if __name__ == "__main__":
    main()
