"""Per-source mediation settings: ``[mediation.sources.NAME]`` tables of the TOML config.

One source is one switch (or one family of switches writing the same file format):
its format, its clock's time zone, how its numbers are dialled and which account and
tariff its calls are charged to. Loaded by chargingd.core.config; nothing here does I/O.
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass, field

from chargingd.core.numbers import is_region, region_fault

FORMATS = (
    "freeswitch",  # mod_cdr_csv, `example`/`sql` templates or a custom field list
    "asterisk",  # cdr_csv Master.csv
    "kamailio",  # acc module syslog lines (ACC: transaction answered: ...)
    "kamailio_db",  # acc table exported as CSV with a header row
    "cucm",  # Cisco Unified CM CDR flat file
    "cisco_radius",  # Cisco IOS gateway RADIUS accounting, FreeRADIUS detail file
    "csv",  # any CSV with a configured column mapping
    "kamailio_cdrs",  # dialog-based acc_cdrs table exported as CSV with a header row
    "opensips_db",  # OpenSIPS acc table in CDR mode exported as CSV with a header row
    "freeswitch_json",  # mod_json_cdr files, one JSON document per call leg
    "freeswitch_xml",  # mod_xml_cdr files, one XML document per call leg
)
# kamailio_cdrs: what acc_cdrs start_time is (Kamailio's cdr_start_on_confirmed).
CDR_STARTS = ("confirmed", "created")
# Formats reading a table with a header whose extra columns ``mapping`` may name.
HEADED_TABLES = ("kamailio_cdrs", "opensips_db")
# The fields such a mapping may name (the core columns only where the switch lets the
# operator rename them: Kamailio's cdr_start_id / cdr_end_id / cdr_duration_id).
TABLE_MAPPABLE = {
    "kamailio_cdrs": ("call_id", "caller", "callee", "account", "gateway", "sip_code",
                      "start", "end", "duration"),
    "opensips_db": ("caller", "callee", "account", "gateway"),
}  # fmt: skip
ACCOUNT_RULES = ("ani", "accountcode", "fixed")
_OFFSET = re.compile(r"[+-](?:0[0-9]|1[0-4]):[0-5][0-9]")
# How a source's calls move money (DESIGN invariant 7); every source says which.
CHARGE_MODES = ("ledger", "record_only")
INSUFFICIENT = ("debt", "cap")
UNPREFIXED = ("international", "national")
# An outside-line access code is a digit or a few ("9", "0", "81"); a longer one is a
# mistake (a number pasted in the wrong key).
ACCESS_CODE_MAX_DIGITS = 4
# Internal extensions: at most this long. Longer, a callee may be a subscriber number
# dialled without its area code (8 digits in many cities), a billable call.
INTERNAL_MAX_DIGITS = 7
# Fields a generic CSV mapping may fill (see docs/mediation.md).
MAPPABLE = (
    "call_id",
    "caller",
    "callee",
    "start",
    "answer",
    "end",
    "duration",
    "billsec",
    "cause",
    "sip_code",
    "account",
    "gateway",
)
# What a csv mapping needs to know when a call ended: its end, or what the end is
# computed from (start + duration, answer + billsec, start + billsec: mediation/normalise.py).
CSV_ENDS = (("end",), ("start", "duration"), ("answer", "billsec"), ("start", "billsec"))


@dataclass(frozen=True)
class SourceConfig:
    format: str = "csv"
    # IANA zone of the switch clock for local timestamps (epoch times are UTC anyway).
    time_zone: str = "UTC"
    # ISO 3166 region the switch dials from; empty means every number is international.
    default_country: str = ""
    trunk_prefix: str = "0"
    international_prefix: str = "00"
    # Digits with neither prefix: "international" (country code included, "4930...")
    # or "national" (national significant number: the country code is prepended).
    unprefixed: str = "international"
    # A PBX's outside-line access codes ("9" in North America, "0" in much of Europe):
    # a callee dialled as code + number (CUCM "912125551234" when the route pattern
    # keeps the code) is read without it when the rest is a possible number; the
    # longest matching code first, the whole number when no reading without a code is
    # possible (a route that discarded it). The digits as dialled go to extra
    # ``dialled``. Empty: none (docs/mediation.md, "Access codes and internal calls").
    access_codes: tuple[str, ...] = ()
    # A callee of at most this many digits (as dialled, no "+") is an internal
    # extension: the call is skipped and counted "internal", not rejected. 0: off (such
    # a callee is no possible number: rejected).
    internal_max_digits: int = 0
    # Gateway name for rows that carry none.
    gateway: str = ""
    # Whose money pays: "ani" (ledger identity ani:+E164 of the caller), "accountcode"
    # (the row's account column, through account_map), "fixed" (the `account` below).
    account_rule: str = "ani"
    account: str = ""
    account_map: dict[str, str] = field(default_factory=dict)
    # Tariff plan file for every call of this source; empty: the account's tariff.
    plan: str = ""
    # Price the calls; false stores them unrated (cost 0) for a later `chargingd rerate`.
    rate: bool = True
    # Whose money the calls move; required (no default: a wrong guess charges twice or
    # never). "ledger": a switch chargingd does not control in real time; each call's
    # rated cost is debited once, keyed by (source, call id), so prepaid balances and
    # postpaid credit limits see the usage. "record_only": calls chargingd already
    # charged live; each is matched to its live CDR and never charged again.
    charge: str = ""
    # charge = "ledger", when the account cannot pay the whole cost (balance - holds,
    # + credit limit for postpaid): "debt" debits it all (the call happened: a prepaid
    # balance goes below zero, CDR reason "debt"); "cap" debits what is available (CDR
    # charged_micros < cost_micros, reason "capped"; the rest is yours to collect).
    insufficient: str = "debt"
    # charge = "record_only": the source of the live CDRs these calls repeat, and where
    # the live call's id is: "call_id" (the call id this format reads) or an extra
    # field of the mediated call (cisco_radius: "Acct-Session-Id").
    match_source: str = "radius"
    match_on: str = "call_id"
    currency: str = "EUR"
    tenant: str = ""
    category: str = "call"
    # Source-specific cause text -> Q.850 cause (Asterisk dispositions, vendor strings).
    cause_map: dict[str, int] = field(default_factory=dict)
    # FreeSWITCH custom template: the ${variable} names in column order.
    fields: tuple[str, ...] = ()
    # Generic CSV: field -> column name (with header) or 0-based column index.
    mapping: dict[str, str | int] = field(default_factory=dict)
    time_format: str = "%Y-%m-%d %H:%M:%S"
    delimiter: str = ","
    header: bool = True
    # Cisco h323-disconnect-cause radix: 16 (Cisco IOS) or 10 (AudioCodes and others).
    radius_cause_radix: int = 16
    # cisco_radius: the zone labels of the gateway's clock ("clock timezone CET 1",
    # "clock summer-time CEST ...") -> UTC offset, e.g. { CET = "+01:00", CEST = "+02:00" }.
    # UTC/GMT need none; a label naming time_zone's standard or summer time (CET/CEST for
    # Europe/Berlin) is read as that; any other label is rejected, never guessed.
    zone_labels: dict[str, str] = field(default_factory=dict)
    # asterisk: what the switch's cdr.conf [csv] section says. Set any of the three and
    # they decide the columns of Master.csv (an unset one is no, Asterisk's default): a
    # row with another count is rejected. None set: the file's first row says, by its
    # count, where that count has one meaning (16 none, 18 uniqueid and userfield, 19
    # newcdrcolumns, 21 all three; 17 and 20 need the source to say which).
    loguniqueid: bool | None = None  # a uniqueid column after amaflags (then the call id)
    loguserfield: bool | None = None  # a userfield column after it
    newcdrcolumns: bool | None = None  # peeraccount, linkedid, sequence at the end
    usegmtime: bool = False  # times are UTC, not the switch's local time
    # kamailio_cdrs (required there, no default: a wrong guess bills the ringing or
    # loses it): what acc_cdrs start_time is. "confirmed" = the switch sets
    # modparam("acc", "cdr_start_on_confirmed", 1): start_time is the answer;
    # "created" = Kamailio's default: start_time is the INVITE, and duration includes
    # the ringing (acc_cdrs has no answer time: the whole duration is billed).
    cdr_start: str = ""
    # freeswitch_json / freeswitch_xml: what json_cdr.conf / xml_cdr.conf say in
    # encode-values (default true: every value is URL-encoded, and is decoded here).
    encode_values: bool = True
    # freeswitch (cdr_csv): what cdr_csv.conf's `legs` says: "a" (its default: A-legs
    # only) or "ab" (every channel: a bridged call's B-leg line, the one another line's
    # ${bleg_uuid} names, is skipped, so the call is billed once). Lines with an
    # ${originating_leg_uuid} set are B-legs either way.
    legs: str = "a"

    def __post_init__(self) -> None:
        # The names as the switch's own config writes them (copied from cdr_csv.conf's
        # template, cdr_custom.conf's mapping) are the names: "${uuid}" is uuid,
        # "${CSV_QUOTE(${CDR(start,u)})}" is start. They were refused ("fields needs one
        # of uuid") or, past validation, never matched a column name.
        names = tuple(_template_name(name) for name in self.fields)
        if names != self.fields:
            object.__setattr__(self, "fields", names)

    def validate(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}")
        try:
            zoneinfo.ZoneInfo(self.time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"time_zone {self.time_zone!r} is not an IANA zone") from None
        self._validate_charge()
        if self.account_rule not in ACCOUNT_RULES:
            raise ValueError(f"account_rule must be one of {', '.join(ACCOUNT_RULES)}")
        if self.account_rule == "fixed" and not self.account:
            raise ValueError("account_rule 'fixed' needs account")
        if self.unprefixed not in UNPREFIXED:
            raise ValueError("unprefixed must be international or national")
        if self.default_country and not is_region(self.default_country):
            raise ValueError(
                f"default_country {self.default_country!r} {region_fault(self.default_country)}"
            )
        if self.unprefixed == "national" and not self.default_country:
            raise ValueError("unprefixed = 'national' needs default_country")
        self._validate_pbx()
        self._validate_switch()
        if len(self.delimiter) != 1:
            raise ValueError("delimiter must be one character")
        for label, offset in self.zone_labels.items():
            if not _OFFSET.fullmatch(offset):
                raise ValueError(f'zone_labels.{label} must be a UTC offset such as "+01:00"')
        self._validate_fields()
        self._validate_mapping()
        self._validate_tables()

    def _validate_switch(self) -> None:
        """Settings that say what the switch writes."""
        if self.legs not in ("a", "ab"):
            raise ValueError('legs must be "a" or "ab" (cdr_csv.conf\'s legs)')
        if self.radius_cause_radix not in (10, 16):
            raise ValueError("radius_cause_radix must be 10 or 16")

    def _validate_pbx(self) -> None:
        """Access codes are digits (a code with anything else never matches a callee,
        an empty one would match every callee); the extension length a digit count."""
        for code in self.access_codes:
            if not (code.isascii() and code.isdigit()) or len(code) > ACCESS_CODE_MAX_DIGITS:
                raise ValueError(
                    f"access_codes: {code!r} is no access code (1 to"
                    f' {ACCESS_CODE_MAX_DIGITS} digits, such as "9" or "0")'
                )
        if len(set(self.access_codes)) != len(self.access_codes):
            raise ValueError(f"access_codes lists a code twice: {list(self.access_codes)}")
        if not 0 <= self.internal_max_digits <= INTERNAL_MAX_DIGITS:
            raise ValueError(
                f"internal_max_digits must be between 0 (off) and {INTERNAL_MAX_DIGITS}"
                f" (an extension's length), not {self.internal_max_digits}"
            )

    def _validate_charge(self) -> None:
        if self.charge not in CHARGE_MODES:
            raise ValueError(
                'charge must say whose money the calls move: "ledger" (debit each call'
                ' once) or "record_only" (calls chargingd charged live)'
            )
        if self.insufficient not in INSUFFICIENT:
            raise ValueError("insufficient must be debt or cap")
        if self.charge == "ledger" and not self.rate:
            raise ValueError('charge = "ledger" needs rate = true (an unrated call has no cost)')
        if self.charge == "record_only" and not (self.match_source and self.match_on):
            raise ValueError('charge = "record_only" needs match_source and match_on')

    def _validate_fields(self) -> None:
        """A custom FreeSWITCH template must name a call id, a callee and an end time,
        an Asterisk cdr_custom mapping a callee and an end time (without them every row
        would be rejected at run time)."""
        if not self.fields:
            return
        if self.format == "asterisk":
            missing = [name for name in ("dst", "end") if name not in self.fields]
            if missing:
                raise ValueError(
                    f"fields (a cdr_custom mapping's CDR names) needs {', '.join(missing)}"
                )
            return
        if self.format != "freeswitch":
            return
        for needed in _FREESWITCH_NEEDS:
            if not set(needed) & set(self.fields):
                raise ValueError(f"fields (a custom template) needs one of {', '.join(needed)}")

    def _validate_mapping(self) -> None:
        unknown = sorted(set(self.mapping) - set(MAPPABLE))
        if unknown:
            raise ValueError(f"mapping has unknown fields {unknown}; known: {', '.join(MAPPABLE)}")
        if self.format in HEADED_TABLES:
            return  # _validate_tables
        if self.format == "csv":
            if "callee" not in self.mapping:
                raise ValueError("format 'csv' needs mapping for callee")
            if not any(set(ends) <= set(self.mapping) for ends in CSV_ENDS):
                raise ValueError(
                    "format 'csv' needs mapping for end (or for start and duration, or"
                    " for answer or start and billsec: the end is then computed)"
                )
            if "answer" not in self.mapping and "billsec" not in self.mapping:
                raise ValueError(
                    "format 'csv' needs mapping for answer or billsec (the talk time):"
                    " without either no call can be told answered, and every call would be"
                    " stored unanswered and billed nothing"
                )
            if not self.header and any(isinstance(v, str) for v in self.mapping.values()):
                raise ValueError("header = false needs column indexes in mapping")

    def _validate_tables(self) -> None:
        if self.cdr_start and self.cdr_start not in CDR_STARTS:
            raise ValueError("cdr_start must be confirmed or created")
        if self.format == "kamailio_cdrs" and not self.cdr_start:
            raise ValueError(
                "format 'kamailio_cdrs' needs cdr_start: \"confirmed\" when kamailio.cfg"
                ' sets modparam("acc", "cdr_start_on_confirmed", 1) (start_time is the'
                ' answer), else "created" (Kamailio\'s default: start_time is the INVITE'
                " and the billed duration includes the ringing)"
            )
        if self.format not in HEADED_TABLES:
            return
        allowed = TABLE_MAPPABLE[self.format]
        unknown = sorted(set(self.mapping) - set(allowed))
        if unknown:
            raise ValueError(
                f"format {self.format!r}: mapping may name only {', '.join(allowed)}"
                f" (the table's extra columns); not {unknown}"
            )
        for name, column in self.mapping.items():
            if not isinstance(column, str) or not column:
                raise ValueError(
                    f"format {self.format!r}: mapping.{name} must be a column name of the"
                    " exported table's header"
                )


_CDR_VAR = re.compile(r"\$\{CDR\(\s*([A-Za-z0-9_-]+)[^)]*\)\}")
_CHANNEL_VAR = re.compile(r"\$\{([^{}()]+)\}")


def _template_name(text: str) -> str:
    """A template's variable as written in the switch's config, reduced to its name:
    FreeSWITCH "${uuid}" -> uuid, Asterisk "${CDR(billsec,f)}" (also inside
    ${CSV_QUOTE(...)}) -> billsec. A bare name stays as it is."""
    text = text.strip()
    found = _CDR_VAR.search(text) or _CHANNEL_VAR.fullmatch(text)
    return found.group(1) if found else text


_FREESWITCH_NEEDS = (
    ("uuid", "call_uuid"),
    ("destination_number",),
    ("end_stamp", "end_epoch", "end_uepoch"),
)


@dataclass(frozen=True)
class MediationConfig:
    # Where reject files go; empty: FILE.rejects.csv next to each input file.
    rejects_dir: str = ""
    # CDRs rated and stored per database round trip.
    batch_size: int = 1000
    # A half of a call a file rotation split (Kamailio INVITE / BYE, Cisco Start) is
    # kept this long for its other half in a later file, then rejected; 0: at once.
    pending_max_age_s: int = 86_400
    # A file modified less than this many seconds ago may still be written by its
    # switch: when its last record has no end (a line without its newline, a detail
    # file's record without its blank line, a spool document) it is watched for a
    # second, and one that changes has that record left for the next run;
    # pipeline.watch / ended. 0: every file read to its end.
    settle_s: int = 60
    sources: dict[str, SourceConfig] = field(default_factory=dict)

    def validate(self) -> None:
        if not 1 <= self.batch_size <= 100_000:
            raise ValueError("batch_size must be between 1 and 100000")
        if not 0 <= self.pending_max_age_s <= 90 * 86_400:
            raise ValueError("pending_max_age_s must be between 0 and 7776000 (90 days)")
        if not 0 <= self.settle_s <= 86_400:
            raise ValueError("settle_s must be between 0 and 86400 (a day)")
