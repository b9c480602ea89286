"""Counters components already keep, as metric samples (read at snapshot time only).

The RADIUS frontend, the Disconnect/CoA client and the cutter count in plain
attributes; these functions name them for Prometheus. A counter this table does not
know (a field added later) still appears, as ``chargingd_radius_events_total{event}``.
"""

from __future__ import annotations

from collections.abc import Mapping

from chargingd.monitoring.meters import Sample

_RADIUS_DROPS = {
    "dropped_overload": "overload",
    "shed_stale": "shed_stale",
    "unknown_client": "unknown_client",
    "malformed": "malformed",
    "unexpected_code": "unexpected_code",
    "bad_authenticator": "bad_authenticator",
    "missing_message_authenticator": "missing_message_authenticator",
}
_RADIUS_DUPLICATES = {"duplicates": "answered", "duplicates_in_progress": "in_progress"}
_RADIUS_REPLIES = {
    "accepted": "access_accept",
    "rejected": "access_reject",
    "accounted": "accounting_response",
    "status_server": "status_server",
}


def radius_samples(counters: Mapping[str, int]) -> list[Sample]:
    """The RADIUS frontend's Counters (radius/server.py) as samples."""
    out: list[Sample] = []
    for name, value in counters.items():
        if name == "received":
            out.append(("chargingd_radius_packets_received_total", (), value))
        elif name in _RADIUS_DROPS:
            out.append(("chargingd_radius_packets_dropped_total", (_RADIUS_DROPS[name],), value))
        elif name in _RADIUS_DUPLICATES:
            out.append(("chargingd_radius_duplicates_total", (_RADIUS_DUPLICATES[name],), value))
        elif name in _RADIUS_REPLIES:
            out.append(("chargingd_radius_replies_total", (_RADIUS_REPLIES[name],), value))
        else:
            out.append(("chargingd_radius_events_total", (name,), value))
    return out


def dynauth_samples(counters: Mapping[str, int]) -> list[Sample]:
    """The Disconnect/CoA client's DmCounters (radius/dynauth.py) as samples."""
    return [
        ("chargingd_disconnect_requests_total", (name,), value) for name, value in counters.items()
    ]


def kamailio_rpc_samples(counters: Mapping[str, int]) -> list[Sample]:
    """The Kamailio cut backend's RpcCounters (radius/kamailio_rpc.py) as samples."""
    return [
        ("chargingd_kamailio_rpc_cuts_total", (name,), value) for name, value in counters.items()
    ]


def cutter_samples(sent: int, failed: int) -> list[Sample]:
    return [
        ("chargingd_cuts_total", ("sent",), sent),
        ("chargingd_cuts_total", ("failed",), failed),
    ]


def outage_samples(totals: Mapping[str, int]) -> list[Sample]:
    """RateLimitedLog totals ("redis unreachable at authorize" -> where="authorize")."""
    out: list[Sample] = []
    for kind, value in totals.items():
        where = kind.removeprefix("redis unreachable at ")
        out.append(("chargingd_redis_errors_total", (where.replace(" ", "_"),), value))
    return out
