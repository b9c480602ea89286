"""`chargingd rate` and `chargingd max-usage`: price one call, or invert an amount.

The called number is read as the daemon reads it when ``--country`` says where it was
dialled from; ``--usage 95`` is 95 seconds (never nanoseconds).

Both print exactly one JSON object on stdout; a call that cannot be rated prints
{"error": code, "message": ...} and exits 1 (a tariff that does not load, or bad
input such as a destination that is no number: 2).
"""

from __future__ import annotations

import argparse
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import phonenumbers

from chargingd.core.money import AmountError, parse_amount
from chargingd.core.numbers import to_e164
from chargingd.rating.durations import DurationError, format_duration, parse_duration
from chargingd.rating.loaders import TariffLoadError, load_plan
from chargingd.rating.model import RatingError
from chargingd.rating.plan import TariffPlan

EXIT_RATING_ERROR = 1
EXIT_BAD_INPUT = 2
_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?", re.ASCII)


def configure_parser(name: str, parser: argparse.ArgumentParser) -> None:
    """Arguments of `rate` (--usage) or `max-usage` (--amount)."""
    parser.add_argument("--plan", required=True, help="native tariff file or CGRateS TP dir")
    parser.add_argument("--subject", required=True, help="the rated subject (account)")
    parser.add_argument(
        "--destination",
        required=True,
        help="called number: +E.164, digits as the tariff's prefixes read them (4930...),"
        " or as dialled (0..., 00...) with --country",
    )
    parser.add_argument(
        "--country",
        help="ISO 3166 country the number was dialled from (the daemon's [sessions]"
        " default_country / client_countries): normalise it as the daemon does",
    )
    parser.add_argument("--start", required=True, help="ISO 8601 start time with offset")
    parser.add_argument("--tenant", default="", help="tenant (default: the tariff's)")
    parser.add_argument("--category", default="call")
    parser.add_argument(
        "--rounding-decimals", type=int, default=None, help="CGRateS per-span decimals"
    )
    parser.add_argument(
        "--timezone",
        default=None,
        help="CGRateS TP directory only: the IANA zone its Timings are read in (CGRateS"
        " general.default_timezone, e.g. Europe/Berlin); default UTC",
    )
    if name == "max-usage":
        parser.add_argument("--amount", required=True, help="money, e.g. 1.50")
    else:
        parser.add_argument(
            "--usage",
            required=True,
            help="duration: 95 (a bare number is seconds), 90s, 2m10s, 1.5s, 300ms",
        )


def run(name: str, args: argparse.Namespace) -> int:
    """Load the plan, rate or invert, print one JSON object."""
    try:
        start = _parse_start(args.start)
        plan = load_plan(
            args.plan, rounding_decimals=args.rounding_decimals, timezone=args.timezone
        )
        # A CGRateS TP matches destinations as text ("voicemail", a data plan's
        # "*any"): any word is a destination there, as cgr-loader's plans expect.
        text_ok = Path(args.plan).is_dir()
        number, e164 = destination(args.destination, args.country, text_ok=text_ok)
    except TariffLoadError as exc:
        return _fail("bad_tariff", str(exc), EXIT_BAD_INPUT)
    except ValueError as exc:
        return _fail("bad_request", str(exc), EXIT_BAD_INPUT)
    try:
        if name == "max-usage":
            out = _max_usage(plan, args, number, start)
        else:
            out = _rate(plan, args, number, start)
    except (DurationError, AmountError) as exc:
        return _fail("bad_request", str(exc), EXIT_BAD_INPUT)
    except RatingError as exc:
        return _fail(exc.code, str(exc), EXIT_RATING_ERROR)
    if e164 is not None:
        out["number"] = e164  # what was rated, as the daemon would have normalised it
    print(json.dumps(out, indent=2))
    return 0


def destination(text: str, country: str | None, *, text_ok: bool = False) -> tuple[str, str | None]:
    """(the digits the tariff matches, the E.164 number when it was normalised).

    With ``country`` the number is read exactly as the daemon reads a Called-Station-Id
    from a gateway of that country (core.numbers.to_e164). Without it a "+E.164" number
    is checked and used; a number starting with a dialling prefix ("0", "00") is
    refused, since only a country says what it means; other digits (as the tariff's
    prefixes read them) are rated as written. Text that is no number at all ("abc")
    is a usage error (ValueError, exit 2), not "unknown destination" (exit 1):
    prefixes are digits, and the daemon refuses such a Called-Station-Id.
    With ``text_ok`` (a CGRateS TP directory, whose Destinations.csv may hold text
    prefixes such as "voicemail") a word without spaces is rated as written.
    """
    raw = text.strip()
    if country:
        if len(country) != 2 or not phonenumbers.country_code_for_region(country.upper()):
            raise ValueError(f"--country {country!r} is not an ISO 3166 country code such as DE")
        e164 = to_e164(raw, country=country)
        return e164[1:], e164
    if raw.startswith("+"):
        e164 = to_e164(raw)
        return e164[1:], e164
    if raw[:1] == "0" and raw.isdigit():
        raise ValueError(
            f"--destination {raw!r} starts with a dialling prefix: give --country (the"
            " daemon's default_country for the gateway) to read it as the daemon does"
        )
    if text_ok and raw.isascii() and raw.isprintable() and raw and " " not in raw:
        return raw, None
    if not (raw.isascii() and raw.isdigit()):
        raise ValueError(
            f"--destination {text!r} is not a number: give digits as the tariff's prefixes"
            " read them (4930...), +E.164, or the number as dialled with --country"
        )
    return raw, None


def usage_ns(text: str) -> int:
    """--usage in ns: a bare number is seconds (as gateways count), else a Go duration."""
    raw = text.strip()
    if _SECONDS.fullmatch(raw):
        return parse_duration(raw + "s")
    return parse_duration(raw)


def _parse_start(text: str) -> datetime:
    try:
        start = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--start {text!r} is not ISO 8601") from None
    if start.tzinfo is None:
        raise ValueError(f"--start {text!r} needs a UTC offset (e.g. 2026-03-02T10:00:00Z)")
    return start


def _rate(
    plan: TariffPlan, args: argparse.Namespace, number: str, start: datetime
) -> dict[str, Any]:
    cost = plan.rate(
        subject=args.subject,
        destination=number,
        start=start,
        usage_ns=usage_ns(args.usage),
        tenant=args.tenant,
        category=args.category,
    )
    return cost.to_json()


def _max_usage(
    plan: TariffPlan, args: argparse.Namespace, number: str, start: datetime
) -> dict[str, Any]:
    amount = parse_amount(args.amount, allow_negative=False)
    max_ns = plan.max_usage(
        subject=args.subject,
        destination=number,
        start=start,
        amount_micros=amount,
        tenant=args.tenant,
        category=args.category,
    )
    whole, frac = divmod(max_ns, 1_000_000_000)
    usage_s = str(whole) + (f".{frac:09d}".rstrip("0") if frac else "")
    return {"usage_s": usage_s, "usage": format_duration(max_ns), "usage_ns": max_ns}


def _fail(code: str, message: str, exit_code: int) -> int:
    print(json.dumps({"error": code, "message": message}))
    return exit_code
