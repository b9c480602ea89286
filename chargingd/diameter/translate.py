"""CCR -> ccapi translation: who is calling whom, which session, how much was used.

Pure functions over a decoded codec.Message (no I/O), used by credit.py. They
translate; they decide nothing (DESIGN: frontends translate, sessions decides).

- Subscription-Id (RFC 4006 §8.46, or RFC 8506's Subscription-Id-Extension):
  END_USER_E164 is the caller's number (the "ani" lookup); SIP URI, NAI, IMSI and
  private ids are the "user" identity (User-Name when no Subscription-Id names one).
- The called party: Called-Station-Id, else 3GPP Service-Information /
  IMS-Information / Called-Party-Address (TS 32.299), else Requested-Party-Address.
- Used units: CC-Time of Used-Service-Unit, top level (RFC 4006 single service) or
  inside Multiple-Services-Credit-Control, reported per rating group (``Service.key``).
  One call's time is charged once: ccstate.Spans places each rating group's reports
  on the call's timeline (groups used at once charged once, one after another each).
- Units chargingd does not rate: a Requested- or Used-Service-Unit that names units
  (octets, service-specific units, money) but no CC-Time is kept, as it came, in
  ``Service.unrated`` (credit.py answers it 5031 DIAMETER_RATING_FAILED with it in
  Failed-AVP; translating it as "no time" would serve or close the units for free).
- Reporting-Reason (TS 32.299 §7.2.175, 3GPP AVP 872) in an MSCC or in one of its
  Used-Service-Units: FINAL says the service ended (``Service.final``: its report is
  its last, no more quota for it, even when an RSU came along); QHT without an RSU
  says it is idle, its quota given back (``Service.ended`` for both: its window on the
  call's timeline closes, ccstate.Spans). The other reasons only say why the report
  came (the report is charged, an RSU granted, as without a reason).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chargingd.core.identities import sip_address
from chargingd.diameter import codec as dc
from chargingd.diameter.dictionary import (
    VENDOR_3GPP,
    A,
    G,
    ReportingReason,
    RequestType,
    SubscriptionIdType,
)
from chargingd.sessions.accounting import valid_session_id

# Longest CC-Time accepted in one report: beyond it a client is broken (sessions
# refuses absurd usages too; this keeps the sum from overflowing a day's worth).
MAX_REPORT_S = 86_400
# The unit AVPs of Requested-/Used-Service-Unit (RFC 4006 §8.18, §8.19) beside
# CC-Time: chargingd rates time only.
OTHER_UNITS = frozenset(
    (
        A.CC_MONEY,
        A.CC_TOTAL_OCTETS,
        A.CC_INPUT_OCTETS,
        A.CC_OUTPUT_OCTETS,
        A.CC_SERVICE_SPECIFIC_UNITS,
    )
)


class MissingAvp(ValueError):
    """A required AVP is absent: answered 5005 DIAMETER_MISSING_AVP (RFC 6733 §7.1.5)."""

    def __init__(self, code: int, vendor: int = 0) -> None:
        super().__init__(f"missing AVP {code}")
        self.code = code
        self.vendor = vendor

    def failed_avp(self) -> bytes:
        """RFC 6733 §7.5: an example of the missing AVP, with a zero payload."""
        return dc.avp(self.code, b"\0\0\0\0", vendor=self.vendor)


@dataclass(frozen=True)
class Service:
    """One Multiple-Services-Credit-Control of a CCR (or the top level, mscc=False)."""

    mscc: bool
    rating_group: int | None = None
    service_ids: tuple[int, ...] = ()
    requested_s: int | None = None  # Requested-Service-Unit CC-Time (None: not asked)
    requested: bool = False  # a Requested-Service-Unit was there (possibly empty)
    used_s: int = 0  # Used-Service-Unit CC-Time summed
    timed: bool = False  # a Used-Service-Unit carried CC-Time (possibly 0)
    # Requested-/Used-Service-Units naming other units and no CC-Time, as they came
    # (raw AVPs, for Failed-AVP): time cannot be granted or charged for them. A USU
    # counts only when no USU of the service carries CC-Time.
    unrated_rsu: bytes = b""
    unrated_usu: bytes = b""
    # Reporting-Reasons of the MSCC and of its Used-Service-Units, as sent.
    reasons: tuple[int, ...] = ()

    @property
    def final(self) -> bool:
        """Reporting-Reason FINAL: the service ended here; its report is its last, and
        it is granted nothing more (TS 32.299 §5.2.2, §7.2.175)."""
        return ReportingReason.FINAL in self.reasons

    @property
    def ended(self) -> bool:
        """No use of the service follows this report until a Requested-Service-Unit
        asks for it again: FINAL, or QHT (its quota given back) without an RSU."""
        return self.final or (ReportingReason.QHT in self.reasons and not self.requested)

    @property
    def unrated(self) -> bytes:
        """The unit AVPs of this service chargingd cannot rate (b"": none)."""
        return self.unrated_rsu + self.unrated_usu

    @property
    def key(self) -> str:
        """Which service's usage this is: its Rating-Group, else its Service-Identifiers
        (TS 32.299 §7.1.9: quota and usage are per rating group), "" at the top level."""
        if self.rating_group is not None:
            return str(self.rating_group)
        if self.service_ids:
            return "s" + "-".join(map(str, self.service_ids))
        return ""


@dataclass(frozen=True)
class Ccr:
    """What chargingd reads of a Credit-Control-Request."""

    session_id: str
    origin_host: str
    request_type: int
    request_number: int
    user_name: str = ""
    calling: str = ""
    called: str = ""
    event_timestamp_s: int = 0  # Event-Timestamp as Unix seconds (0: absent)
    termination_cause: int = 0
    requested_action: int = 0
    services: tuple[Service, ...] = field(default_factory=tuple)
    # Its services whose units chargingd cannot rate (Service.unrated), found once.
    unrated: tuple[Service, ...] = ()

    @property
    def used_s(self) -> int:
        """The call time this CCR reports (longest of its services' reports)."""
        return max((s.used_s for s in self.services), default=0)

    def used_by_service(self) -> dict[str, int]:
        """CC-Time reported in this CCR per service key (two MSCCs of one key summed)."""
        out: dict[str, int] = {}
        for service in self.services:
            if service.used_s:
                out[service.key] = out.get(service.key, 0) + service.used_s
        return out

    def digest(self) -> tuple[object, ...]:
        """What must be equal for a repeated CC-Request-Number to be the same request."""
        parts: tuple[object, ...] = (
            self.request_type,
            self.used_s,
            tuple((s.rating_group, s.used_s) for s in self.services),
        )
        if self.request_type == RequestType.EVENT:
            # A direct debit's requested units are what it debits (RFC 4006 §6.3).
            parts += (tuple(s.requested_s for s in self.services),)
        if self.unrated:
            # Only then (the digests kept for every other request stay as they were).
            parts += (tuple(s.unrated for s in self.services),)
        return parts


_REQUIRED = (
    A.SESSION_ID,
    A.ORIGIN_HOST,
    A.ORIGIN_REALM,
    A.DESTINATION_REALM,
    A.AUTH_APPLICATION_ID,
    A.SERVICE_CONTEXT_ID,
    A.CC_REQUEST_TYPE,
    A.CC_REQUEST_NUMBER,
)
_REQUEST_TYPES = frozenset(int(t) for t in RequestType)
NTP_UNIX_OFFSET_S = 2_208_988_800  # RFC 6733 §4.3.1 Time: seconds since 1900


def parse_ccr(msg: dc.Message) -> Ccr:
    """The CCR's fields; MissingAvp or codec.Malformed (5004/5014) when it is wrong."""
    for code in _REQUIRED:
        if msg.get(code) is None:
            raise MissingAvp(code)
    sid_avp = msg.get(A.SESSION_ID)
    if sid_avp is not None and not valid_session_id(sid_avp.text()):
        # What sessions and the ledger take (1-256 printable characters): refused
        # there as a system error, 5012 UNABLE_TO_COMPLY, before; it is the
        # request's value that is wrong.
        raise dc.Malformed(
            f"Session-Id of {len(sid_avp.data)} bytes: 1-256 printable characters",
            dc.INVALID_AVP_VALUE,
            sid_avp.raw(),
        )
    type_avp = msg.get(A.CC_REQUEST_TYPE)
    request_type = type_avp.u32() if type_avp is not None else 0
    if type_avp is None or request_type not in _REQUEST_TYPES:
        failed = type_avp.raw() if type_avp is not None else b""
        raise dc.Malformed(f"CC-Request-Type {request_type}", dc.INVALID_AVP_VALUE, failed)
    user, calling = _subscriber(msg)
    services = _services(msg)
    unrated: tuple[Service, ...] = ()
    for service in services:
        if service.unrated_rsu or service.unrated_usu:
            unrated += (service,)
    return Ccr(
        session_id=_text(msg, A.SESSION_ID),
        origin_host=_text(msg, A.ORIGIN_HOST),
        request_type=request_type,
        request_number=_u32(msg, A.CC_REQUEST_NUMBER),
        user_name=user,
        calling=calling,
        called=_called(msg),
        event_timestamp_s=_event_s(msg),
        termination_cause=_u32(msg, A.TERMINATION_CAUSE),
        requested_action=_u32(msg, A.REQUESTED_ACTION),
        services=services,
        unrated=unrated,
    )


def _u32(msg: dc.Message, code: int) -> int:
    a = msg.get(code)
    return a.u32() if a is not None else 0


def _text(msg: dc.Message, code: int) -> str:
    a = msg.get(code)
    return a.text() if a is not None else ""


def _event_s(msg: dc.Message) -> int:
    a = msg.get(A.EVENT_TIMESTAMP)
    if a is None:
        return 0
    return max(a.u32() - NTP_UNIX_OFFSET_S, 0)


def _subscriber(msg: dc.Message) -> tuple[str, str]:
    """(user identity, calling number) from Subscription-Id(s), else User-Name."""
    user = ""
    calling = ""
    for kind, data in _subscription_ids(msg):
        if kind == SubscriptionIdType.END_USER_E164:
            calling = calling or data
        else:
            user = user or _user_of(kind, data)
    if not user:
        user = _text(msg, A.USER_NAME)
    if not calling:
        calling = _text(msg, A.CALLING_STATION_ID) or _ims(msg, G.CALLING_PARTY_ADDRESS)
    return user, calling


def _subscription_ids(msg: dc.Message) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for sub in msg.all(A.SUBSCRIPTION_ID):
        inner = sub.group()
        kind, data = dc.find(inner, A.SUBSCRIPTION_ID_TYPE), dc.find(inner, A.SUBSCRIPTION_ID_DATA)
        if kind is None or data is None:
            raise dc.Malformed(
                "Subscription-Id without type or data", dc.INVALID_AVP_VALUE, sub.raw()
            )
        out.append((kind.u32(), data.text()))
    # RFC 8506 §8.58: one typed member per Subscription-Id-Extension.
    typed = {
        A.SUBSCRIPTION_ID_E164: SubscriptionIdType.END_USER_E164,
        A.SUBSCRIPTION_ID_IMSI: SubscriptionIdType.END_USER_IMSI,
        A.SUBSCRIPTION_ID_SIP_URI: SubscriptionIdType.END_USER_SIP_URI,
        A.SUBSCRIPTION_ID_NAI: SubscriptionIdType.END_USER_NAI,
        A.SUBSCRIPTION_ID_PRIVATE: SubscriptionIdType.END_USER_PRIVATE,
    }
    for ext in msg.all(A.SUBSCRIPTION_ID_EXTENSION):
        for member in ext.group():
            kind = typed.get(member.code) if member.vendor == 0 else None  # type: ignore[call-overload]
            if kind is not None:
                out.append((int(kind), member.text()))
    return out


def _user_of(kind: int, data: str) -> str:
    """The "user" identity of a non-E.164 Subscription-Id: a SIP URI as its address of
    record, without its scheme and parameters ("sip:alice@Example.NET;x=y" ->
    "alice@Example.NET"). Sessions looks it up in its canonical form, the host in lower
    case (RFC 3261 §19.1.4; core/identities.py), then as sent."""
    if kind == SubscriptionIdType.END_USER_SIP_URI:
        return sip_address(data)
    return data


def _ims(msg: dc.Message, code: int) -> str:
    """A UTF8String inside Service-Information / IMS-Information (TS 32.299 §7.2)."""
    si = msg.get(G.SERVICE_INFORMATION, VENDOR_3GPP)
    if si is None:
        return ""
    ims = dc.find(si.group(), G.IMS_INFORMATION, VENDOR_3GPP)
    if ims is None:
        return ""
    inner = ims.group()
    a = dc.find(inner, code, VENDOR_3GPP)
    return a.text() if a is not None else ""


def _called(msg: dc.Message) -> str:
    return (
        _text(msg, A.CALLED_STATION_ID)
        or _ims(msg, G.CALLED_PARTY_ADDRESS)
        or _ims(msg, G.REQUESTED_PARTY_ADDRESS)
    )


def _services(msg: dc.Message) -> tuple[Service, ...]:
    msccs = msg.all(A.MULTIPLE_SERVICES_CREDIT_CONTROL)
    if msccs:
        return tuple(_service(m.group(), mscc=True) for m in msccs)
    return (_service(msg.avps, mscc=False),)


def _service(avps: list[dc.Avp], *, mscc: bool) -> Service:
    rsu = dc.find(avps, A.REQUESTED_SERVICE_UNIT)
    # A request is not usage: any amount may be asked, the grant is what the money
    # pays (RFC 4006 §5.1.2); only reported usage has a sane maximum.
    requested_s = _cc_time(rsu, limit=None) if rsu is not None else None
    used_s = 0
    timed = False  # a Used-Service-Unit carried CC-Time
    untimed: list[dc.Avp] = []  # those that did not
    reasons: list[int] = []
    for a in avps:
        if a.code == A.USED_SERVICE_UNIT and a.vendor == 0:
            t = _cc_time(a)
            if t is None:
                untimed.append(a)
            else:
                timed = True
                used_s += t
            reasons += _reasons(a.group())
        elif mscc and a.code == G.REPORTING_REASON and a.vendor == VENDOR_3GPP:
            reasons.append(a.u32())
    rg = dc.find(avps, A.RATING_GROUP) if mscc else None
    unrated_rsu = b""
    if rsu is not None and requested_s is None and rsu.data and _units(rsu):
        unrated_rsu = rsu.raw()
    unrated_usu = b""
    if untimed and not timed:  # its time is charged when any of its reports says it
        # (3GPP splits one report in two at a tariff change: Tariff-Change-Usage)
        unrated_usu = b"".join([a.raw() for a in untimed if _units(a)])
    return Service(
        mscc=mscc,
        rating_group=rg.u32() if rg is not None else None,
        service_ids=tuple(
            a.u32() for a in avps if mscc and a.code == A.SERVICE_IDENTIFIER and a.vendor == 0
        ),
        requested_s=requested_s,
        requested=rsu is not None,
        used_s=used_s,
        timed=timed,
        unrated_rsu=unrated_rsu,
        unrated_usu=unrated_usu,
        reasons=tuple(reasons),
    )


def _reasons(avps: list[dc.Avp]) -> list[int]:
    """The Reporting-Reasons among ``avps`` (a Used-Service-Unit's members)."""
    return [a.u32() for a in avps if a.code == G.REPORTING_REASON and a.vendor == VENDOR_3GPP]


def _units(unit: dc.Avp) -> bool:
    """The unit AVP names units other than time (octets, service-specific, money)."""
    return any(a.code in OTHER_UNITS and a.vendor == 0 for a in unit.group())


def _cc_time(unit: dc.Avp, limit: int | None = MAX_REPORT_S) -> int | None:
    t = dc.find(unit.group(), A.CC_TIME)
    if t is None:
        return None
    value = t.u32()
    if limit is not None and value > limit:
        raise dc.Malformed(f"CC-Time {value}", dc.INVALID_AVP_VALUE, unit.raw())
    return value
