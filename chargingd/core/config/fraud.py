"""``[fraud]``: the fraud rules (chargingd.fraud), their thresholds and actions,
per-account and per-tariff overrides, and the high-risk destination lists.

Every rule is one ``[[fraud.rules]]`` table: a name, a kind, the thresholds its kind
takes (and no other: a threshold the kind does not use is an error, as is a missing
or nonsensical one), an action and a shadow flag. docs/fraud.md explains each kind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields

from chargingd.core.currencies import is_known_currency
from chargingd.core.money import AmountError, parse_amount
from chargingd.core.numbers import is_region, region_fault

ACTIONS = ("alert", "refuse", "block")
SEVERITIES = ("", "info", "warning", "critical")
# What makes a destination risky for a `destination` rule: the country or prefix lists
# below, or the number's type (phonenumbers' PhoneNumberType, lower case).
NUMBER_TYPES = (
    "premium_rate",
    "shared_cost",
    "personal_number",
    "uan",
    "voip",
    "pager",
    "voicemail",
    "toll_free",
)
MATCHES = ("high_risk_country", "high_risk_prefix", *NUMBER_TYPES)
DEFAULT_MATCH = ("high_risk_country", "high_risk_prefix", "premium_rate", "shared_cost")

# Kind -> (required thresholds, optional ones). Checked in authorize (the call's own
# attempt decides) or on call events (the CDRs, Access-Rejects: the next calls decide).
KINDS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "velocity": (frozenset({"max_calls", "window_s"}), frozenset({"scope"})),
    "concurrent": (frozenset({"max_calls"}), frozenset()),
    "destination": (frozenset({"max_calls", "window_s"}), frozenset({"match"})),
    "new_country": (frozenset(), frozenset({"exempt_countries", "memory_days"})),
    "same_destination": (frozenset({"max_calls", "window_s"}), frozenset({"range_digits"})),
    "distinct_destinations": (frozenset({"max_destinations", "window_s"}), frozenset()),
    # spend: max_amount, max_amounts or both (_check_rule_extras)
    "spend": (frozenset({"window_s"}), frozenset({"max_amount", "max_amounts", "cooldown_s"})),
    "short_calls": (
        frozenset({"max_calls", "window_s", "max_duration_s"}),
        frozenset({"cooldown_s"}),
    ),
    "failed_attempts": (frozenset({"max_calls", "window_s"}), frozenset({"cooldown_s"})),
    "asr": (frozenset({"min_asr_pct", "min_calls", "window_s"}), frozenset({"cooldown_s"})),
    # identities no account has, tried from one caller IP (a SIPVicious-style scan of
    # extensions through the SBC): counted on the Access-Rejects; refuse: every call from
    # that IP refused for the cooldown, known accounts' too (docs/fraud.md)
    "identity_scan": (frozenset({"max_identities", "window_s"}), frozenset({"cooldown_s"})),
    # accounts calling one risky number (range) from the CDRs, across accounts: a Wangiri
    # callback wave (customers calling back the premium number that rang them once),
    # which no per-account rule sees (each calls it once); alerts only (docs/fraud.md)
    "shared_destination": (
        frozenset({"max_accounts", "window_s"}),
        frozenset({"match", "range_digits"}),
    ),
}
AUTHORIZE_KINDS = frozenset(
    {
        "velocity",
        "concurrent",
        "destination",
        "new_country",
        "same_destination",
        "distinct_destinations",
    }
)
EVENT_KINDS = frozenset(KINDS) - AUTHORIZE_KINDS
VELOCITY_SCOPES = ("account", "identity", "caller_ip")
THRESHOLDS = frozenset(
    {
        "window_s",
        "max_calls",
        "max_destinations",
        "max_identities",
        "max_accounts",
        "max_amount",
        "max_amounts",
        "scope",
        "match",
        "range_digits",
        "max_duration_s",
        "min_asr_pct",
        "min_calls",
        "cooldown_s",
        "exempt_countries",
        "memory_days",
    }
)
# Thresholds an override may not change: what the rule counts (per caller IP or not,
# which destinations), not how much of it.
NOT_OVERRIDDEN = frozenset({"scope", "match"})
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,39}")
_COUNTRY = re.compile(r"[A-Z]{2}")


def _country_fault(country: str) -> str | None:
    """None for two capitals phonenumbers knows as a region, else why not: calls are
    matched to countries by phonenumbers' region of the number, so "UK" (GB's common
    misspelling) or "AQ" (no numbering plan) would never match a call and leave a rule
    silently inert."""
    if _COUNTRY.fullmatch(country) is None:
        return "is not an ISO 3166 code"
    return None if is_region(country) else region_fault(country)


_PREFIX = re.compile(r"\+[1-9][0-9]{0,14}")
MAX_WINDOW_S = 31 * 86400
MAX_COUNT = 1_000_000

# A starting point, not an authority: ITU regions that carrier IRSF guidance and the
# high-risk lists of VoIP providers name again and again (small island networks, Cuba,
# West African and Pacific ranges where premium numbers are easy to lease). Review it
# against your own traffic and your carriers' current lists (docs/fraud.md).
DEFAULT_HIGH_RISK_COUNTRIES = (
    "AC",  # Ascension +247
    "CK",  # Cook Islands +682
    "CU",  # Cuba +53
    "GM",  # Gambia +220
    "GN",  # Guinea +224
    "GW",  # Guinea-Bissau +245
    "IO",  # Diego Garcia +246
    "KM",  # Comoros +269
    "LR",  # Liberia +231
    "MV",  # Maldives +960
    "NR",  # Nauru +674
    "NU",  # Niue +683
    "PG",  # Papua New Guinea +675
    "SB",  # Solomon Islands +677
    "SH",  # Saint Helena +290
    "SL",  # Sierra Leone +232
    "SO",  # Somalia +252
    "ST",  # Sao Tome and Principe +239
    "TD",  # Chad +235
    "TK",  # Tokelau +690
    "TV",  # Tuvalu +688
    "VU",  # Vanuatu +678
    "WF",  # Wallis and Futuna +681
)
# Non-geographic ranges (no country): satellite, international networks, the ITU's
# international premium-rate and shared-cost services.
DEFAULT_HIGH_RISK_PREFIXES = (
    "+870",  # Inmarsat
    "+881",  # Global Mobile Satellite System
    "+882",  # international networks
    "+883",  # international networks
    "+979",  # international premium rate service
    "+808",  # international shared cost service
)


@dataclass(frozen=True)
class RuleConfig:
    """One rule: ``kind`` and the thresholds of that kind (see KINDS and docs/fraud.md)."""

    name: str = ""
    kind: str = ""
    # alert: record only; refuse: refuse the call (authorize rules) or the account's next
    # calls for cooldown_s (event rules); block: status blocked, live calls cut.
    action: str = "alert"
    # Record what it would have done (alert with "shadow": true); change nothing.
    shadow: bool = False
    enabled: bool = True
    # Alert severity; "" = by action (alert/refuse: warning, block: critical).
    severity: str = ""
    # Reply-Message of the refusal; "" = [fraud] refuse_message / block_message.
    message: str = ""
    # The h323-return-code of its Access-Reject to Cisco-style clients (0-255, e.g. 9
    # "called number blocked" for a destination rule); unset = [radius.h323_return_codes]
    # fraud (7, user denied). Later calls of an account it blocked get that one too.
    h323_return_code: int | None = None
    window_s: int | None = None
    max_calls: int | None = None  # the rule fires at call max_calls + 1 in the window
    max_destinations: int | None = None
    max_identities: int | None = None  # identity_scan: distinct unknown identities
    max_accounts: int | None = None  # shared_destination: distinct accounts
    # spend caps: per currency (ISO 4217 code -> decimal in that currency: {JPY =
    # "8000", EUR = "50.00"}), and max_amount, in each account's own currency, for the
    # accounts of a currency max_amounts does not list; an account of a currency that
    # neither gives a cap is not counted by the rule (docs/fraud.md "Spend caps").
    max_amount: str | None = None
    max_amounts: dict[str, str] | None = None
    scope: str | None = None  # velocity: account | identity | caller_ip
    match: tuple[str, ...] | None = None  # destination: see MATCHES
    range_digits: int | None = None  # same_destination: digits cut off the end
    max_duration_s: int | None = None  # short_calls: answered, this long or shorter
    min_asr_pct: int | None = None  # asr: fires below this answer-seizure ratio
    min_calls: int | None = None  # asr: ... once the window holds this many calls
    cooldown_s: int | None = None  # event rules refusing: for how long (default window_s)
    exempt_countries: tuple[str, ...] | None = None  # new_country: never "new"
    memory_days: int | None = None  # new_country: a country is known this long

    def validate(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"rule name {self.name!r}: 1-40 of a-z 0-9 _ -, first a-z 0-9")
        where = f"rule {self.name!r}"
        if self.kind not in KINDS:
            raise ValueError(f"{where}: unknown kind {self.kind!r} (kinds: {', '.join(KINDS)})")
        if self.action not in ACTIONS:
            raise ValueError(f"{where}: action must be one of {', '.join(ACTIONS)}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"{where}: severity must be info, warning or critical")
        if len(self.message) > 200 or not self.message.isprintable():
            raise ValueError(f"{where}: message must be printable, at most 200 characters")
        code = self.h323_return_code
        if code is not None and (isinstance(code, bool) or not 0 <= code <= 255):
            raise ValueError(f"{where}: h323_return_code must be an integer 0-255, got {code!r}")
        required, optional = KINDS[self.kind]
        given = {f.name for f in fields(self) if f.name in THRESHOLDS}
        given = {name for name in given if getattr(self, name) is not None}
        missing = sorted(required - given)
        if missing:
            raise ValueError(f"{where}: a {self.kind} rule needs {', '.join(missing)}")
        extra = sorted(given - required - optional)
        if extra:
            raise ValueError(f"{where}: {', '.join(extra)} does not apply to a {self.kind} rule")
        check_thresholds(self, where)


@dataclass(frozen=True)
class RuleOverride:
    """What an account or a tariff changes of one rule (unset: the rule's own value):
    enabled, action, shadow and the thresholds of the rule's kind, except ``scope`` and
    ``match``, which choose what the rule counts (refused with a clear error: give such
    a variant a rule of its own, enabled where it applies)."""

    enabled: bool | None = None
    action: str | None = None
    shadow: bool | None = None
    window_s: int | None = None
    max_calls: int | None = None
    max_destinations: int | None = None
    max_identities: int | None = None
    max_accounts: int | None = None
    max_amount: str | None = None
    max_amounts: dict[str, str] | None = None  # merged into the rule's, per currency
    max_duration_s: int | None = None
    min_asr_pct: int | None = None
    min_calls: int | None = None
    cooldown_s: int | None = None
    range_digits: int | None = None
    exempt_countries: tuple[str, ...] | None = None
    memory_days: int | None = None
    # Never valid in an override; fields only to name them in the error.
    scope: str | None = None
    match: tuple[str, ...] | None = None

    def validate(self) -> None:
        if self.action is not None and self.action not in ACTIONS:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}")
        check_thresholds(self, "override")


def check_thresholds(obj: RuleConfig | RuleOverride, where: str) -> None:
    """Nonsensical values of the thresholds ``obj`` sets (None: not set)."""
    _bounded(obj, "window_s", 1, MAX_WINDOW_S, where)
    _bounded(obj, "max_destinations", 1, MAX_COUNT, where)
    _bounded(obj, "max_identities", 1, MAX_COUNT, where)
    _bounded(obj, "max_accounts", 1, MAX_COUNT, where)
    _bounded(obj, "max_duration_s", 1, 3600, where)
    _bounded(obj, "min_asr_pct", 1, 100, where)
    _bounded(obj, "min_calls", 1, MAX_COUNT, where)
    _bounded(obj, "cooldown_s", 1, MAX_WINDOW_S, where)
    # 0 is a destination rule's "the first risky call"; an override does not know its
    # rule's kind here: _check_applies validates the rule it makes (1 for the others)
    lowest = 0 if isinstance(obj, RuleOverride) or obj.kind == "destination" else 1
    _bounded(obj, "max_calls", lowest, MAX_COUNT, where)
    if obj.max_amount is not None:
        _check_cap(obj.max_amount, f"{where}: max_amount")
    for code, amount in (obj.max_amounts or {}).items():
        if not is_known_currency(code):
            raise ValueError(
                f"{where}: max_amounts: {code!r} is not an ISO 4217 currency code"
                " (upper case, as accounts are kept: EUR, JPY, KWD)"
            )
        _check_cap(amount, f"{where}: max_amounts.{code}")
    if isinstance(obj, RuleConfig):
        _check_rule_extras(obj, where)


def _check_cap(amount: str, where: str) -> None:
    try:
        micros = parse_amount(amount)
    except AmountError as exc:
        raise ValueError(f"{where}: {exc}") from None
    if micros <= 0:
        raise ValueError(f"{where} must be positive")


def _check_rule_extras(rule: RuleConfig, where: str) -> None:
    if rule.kind == "spend" and rule.max_amount is None and not rule.max_amounts:
        raise ValueError(
            f"{where}: a spend rule needs max_amount (in each account's currency)"
            " or max_amounts (per currency)"
        )
    _bounded(rule, "range_digits", 0, 12, where)
    _bounded(rule, "memory_days", 1, 3650, where)
    if rule.scope is not None and rule.scope not in VELOCITY_SCOPES:
        raise ValueError(f"{where}: scope must be one of {', '.join(VELOCITY_SCOPES)}")
    if rule.match is not None:
        unknown = sorted(set(rule.match) - set(MATCHES))
        if unknown or not rule.match:
            raise ValueError(f"{where}: match takes {', '.join(MATCHES)} (not {unknown})")
    for country in rule.exempt_countries or ():
        if fault := _country_fault(country):
            raise ValueError(f"{where}: exempt country {country!r} {fault}")
    if rule.kind == "identity_scan" and rule.action == "block":
        raise ValueError(
            f"{where}: an identity_scan rule refuses its caller IP (no account to block):"
            " action alert or refuse"
        )
    if rule.kind == "shared_destination" and rule.action != "alert":
        raise ValueError(
            f"{where}: a shared_destination rule counts many accounts' calls after they"
            " ended (no one account or call to refuse or block): action alert"
        )
    if rule.kind == "asr" and rule.action == "block" and (rule.min_calls or 0) < 10:
        raise ValueError(f"{where}: blocking on ASR needs min_calls >= 10")


def _bounded(obj: object, name: str, lo: int, hi: int, where: str) -> None:
    value = getattr(obj, name, None)
    if value is not None and not lo <= value <= hi:
        raise ValueError(f"{where}: {name} must be between {lo} and {hi}, not {value}")


def _rule(name: str, kind: str, **thresholds: object) -> RuleConfig:
    return RuleConfig(name=name, kind=kind, **thresholds)  # type: ignore[arg-type]


# The default rule set: alerts, except for hijacked-account traffic to risky
# destinations, which blocks. Tune per tariff (wholesale trunks call more) and account.

# The shipped spend caps (spend-hour, spend-day): about 50 and 200 euros in each of the
# currencies most operators bill in, each in its own unit; a starting point, not rates.
DEFAULT_HOUR_CAPS = {"EUR": "50.00", "USD": "50.00", "GBP": "50.00", "CHF": "50.00", "JPY": "8000"}
DEFAULT_DAY_CAPS = {
    "EUR": "200.00",
    "USD": "200.00",
    "GBP": "200.00",
    "CHF": "200.00",
    "JPY": "30000",
}

DEFAULT_RULES: tuple[RuleConfig, ...] = (
    _rule("velocity-account", "velocity", scope="account", max_calls=120, window_s=60),
    _rule("velocity-identity", "velocity", scope="identity", max_calls=60, window_s=60),
    _rule("velocity-ip", "velocity", scope="caller_ip", max_calls=300, window_s=60),
    _rule("concurrent", "concurrent", max_calls=30),
    _rule("risky-destinations", "destination", max_calls=10, window_s=3600, action="block"),
    _rule("new-country", "new_country"),
    _rule("same-range", "same_destination", range_digits=3, max_calls=20, window_s=600),
    _rule("many-destinations", "distinct_destinations", max_destinations=30, window_s=300),
    # spend caps per currency, about the same sum in each (50 / 200 euros): 50 of any
    # currency is another sum (50 yen, 50 dinars); an account of a currency not listed
    # is capped where its currency (or its tariff, or itself) is given a cap
    # (docs/fraud.md "Spend caps")
    _rule("spend-hour", "spend", max_amounts=DEFAULT_HOUR_CAPS, window_s=3600),
    _rule("spend-day", "spend", max_amounts=DEFAULT_DAY_CAPS, window_s=86400),
    _rule("short-calls", "short_calls", max_duration_s=6, max_calls=20, window_s=600),
    _rule("failed-attempts", "failed_attempts", max_calls=20, window_s=300),
    _rule("asr-collapse", "asr", min_asr_pct=10, min_calls=30, window_s=3600),
    # last: a rule's slot is its position, and the counters of the rules above keep theirs
    _rule("identity-scan", "identity_scan", max_identities=20, window_s=300),
    _rule("callback-wave", "shared_destination", max_accounts=5, window_s=3600),
)


@dataclass(frozen=True)
class FraudConfig:
    # Evaluate the rules (in authorize, and on the CDR stream in `chargingd serve`).
    enabled: bool = False
    # Every rule in shadow mode: alerts say what would have happened, nothing changes.
    shadow: bool = False
    high_risk_countries: tuple[str, ...] = DEFAULT_HIGH_RISK_COUNTRIES
    high_risk_prefixes: tuple[str, ...] = DEFAULT_HIGH_RISK_PREFIXES
    # Reply-Message of a call a rule refuses, and of the calls of a blocked account.
    refuse_message: str = "call not allowed"
    block_message: str = "account blocked"
    rules: tuple[RuleConfig, ...] = DEFAULT_RULES
    # Per account id / per tariff (plan id): rule name -> what changes. An account's
    # override wins over its tariff's.
    account_overrides: dict[str, dict[str, RuleOverride]] = field(default_factory=dict)
    tariff_overrides: dict[str, dict[str, RuleOverride]] = field(default_factory=dict)
    # The CDR-stream consumer group of the event rules (one per deployment).
    events_group: str = "fraud"
    # Accounts (and caller IPs) whose rule state each process keeps decoded, to evaluate
    # their authorize rules itself, off Redis's thread (up to ~4 KB each); 0: every
    # call's rules run in Redis's Lua. docs/fraud-cost.md "Seventeenth round".
    local_values: int = 16_384

    def validate(self) -> None:
        for country in self.high_risk_countries:
            if fault := _country_fault(country):
                raise ValueError(f"high_risk_countries: {country!r} {fault}")
        for prefix in self.high_risk_prefixes:
            if not _PREFIX.fullmatch(prefix):
                raise ValueError(f"high_risk_prefixes: {prefix!r} is not +DIGITS")
        for text in (self.refuse_message, self.block_message):
            if not 0 < len(text) <= 200 or not text.isprintable():
                raise ValueError("refuse_message and block_message: 1-200 printable characters")
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names must be unique: {', '.join(dupes)}")
        if not _NAME.fullmatch(self.events_group):
            raise ValueError("events_group: 1-40 of a-z 0-9 _ -")
        if not 0 <= self.local_values <= 1_000_000:
            raise ValueError("local_values: 0 (off) to 1000000")
        self._validate_overrides(set(names))

    def ignored(self) -> list[str]:
        """What the config sets and the rules cannot apply: an override's ``shadow =
        false`` under ``[fraud] shadow = true`` (every rule in shadow mode, whatever an
        override says: the switch that stops every refusal at once). Startup WARNINGs:
        an operator who takes one tariff or account live this way sees its rules still
        only alert."""
        if not self.shadow:
            return []
        out = []
        for what, table in (("account", self.account_overrides), ("tariff", self.tariff_overrides)):
            for owner, overrides in table.items():
                for rule_name, override in overrides.items():
                    if override.shadow is False:
                        out.append(
                            f"[fraud.{what}_overrides.{owner}.{rule_name}] shadow = false"
                            " has no effect: [fraud] shadow = true puts every rule in shadow"
                            " mode (it alerts, never refuses or blocks); to run some rules"
                            " live, set shadow = true on the others ([[fraud.rules]] or"
                            " overrides) and [fraud] shadow = false"
                        )
        return out

    def _validate_overrides(self, names: set[str]) -> None:
        by_name = {r.name: r for r in self.rules}
        for what, table in (("account", self.account_overrides), ("tariff", self.tariff_overrides)):
            for owner, overrides in table.items():
                for rule_name, override in overrides.items():
                    where = f"{what}_overrides.{owner}.{rule_name}"
                    if rule_name not in names:
                        raise ValueError(f"{where}: no rule named {rule_name!r}")
                    _check_applies(by_name[rule_name], override, where)


def _check_applies(rule: RuleConfig, override: RuleOverride, where: str) -> None:
    """An override sets only thresholds its rule's kind has; the result is a valid rule."""
    _check_not_per_account(rule, override, where)
    required, optional = KINDS[rule.kind]
    for f in fields(override):
        value = getattr(override, f.name)
        if value is None or f.name not in THRESHOLDS:
            continue
        if f.name in NOT_OVERRIDDEN:
            raise ValueError(
                f"{where}: {f.name} cannot be overridden (it chooses what the rule"
                " counts): give that variant a rule of its own, enabled where it applies"
            )
        if f.name not in required | optional:
            raise ValueError(f"{where}: {f.name} does not apply to a {rule.kind} rule")
    try:
        merged(rule, override).validate()
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _check_not_per_account(rule: RuleConfig, override: RuleOverride, where: str) -> None:
    """The rules that count per caller IP or per number, across accounts (identity_scan,
    shared_destination), count with the [fraud] rule itself: an override's threshold or
    action would change nothing, silently. An identity_scan override may only keep its
    refusal off an account's (a tariff's) calls: enabled = false, shadow = true, action =
    "alert"."""
    if rule.kind not in ("identity_scan", "shared_destination"):
        return
    allowed = {"enabled", "shadow", "action"} if rule.kind == "identity_scan" else set()
    given = {f.name for f in fields(override) if getattr(override, f.name) is not None}
    bad = sorted(given - allowed)
    turns_on = override.shadow is False or override.action not in (None, "alert")
    if bad or (rule.kind == "identity_scan" and (turns_on or override.enabled is True)):
        what = ", ".join(bad) or "turning it on"
        raise ValueError(
            f"{where}: {what}: a {rule.kind} rule counts across accounts with its own"
            " [[fraud.rules]] values (an override would change nothing); "
            + (
                "an override may only keep its refusal off these calls:"
                ' enabled = false, shadow = true or action = "alert"'
                if rule.kind == "identity_scan"
                else "change the rule itself"
            )
        )


def merged(rule: RuleConfig, override: RuleOverride) -> RuleConfig:
    """``rule`` with what ``override`` sets."""
    changes = {f.name: getattr(override, f.name) for f in fields(override)}
    values = {f.name: getattr(rule, f.name) for f in fields(rule)}
    values.update({k: v for k, v in changes.items() if v is not None})
    if override.max_amount is not None:
        # An account (a tariff's accounts) has one currency: the override's max_amount
        # is its cap, but in a currency the override's own max_amounts lists. Under the
        # rule's max_amounts (the shipped spend rules list EUR, USD, GBP, CHF and JPY)
        # it used to change nothing for the accounts of those currencies, silently.
        values["max_amounts"] = override.max_amounts
    elif rule.max_amounts and override.max_amounts:  # per currency: the others stay
        values["max_amounts"] = rule.max_amounts | override.max_amounts
    return RuleConfig(**values)
