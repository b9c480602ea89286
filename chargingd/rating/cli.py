"""`chargingd rate` and `chargingd max-usage`: price one call, or invert an amount.

Both print exactly one JSON object on stdout; a call that cannot be rated prints
{"error": code, "message": ...} and exits 1 (a tariff that does not load: 2).
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from typing import Any

from chargingd.core.money import AmountError, parse_amount
from chargingd.rating.durations import DurationError, format_duration, parse_duration
from chargingd.rating.loaders import TariffLoadError, load_plan
from chargingd.rating.model import RatingError
from chargingd.rating.plan import TariffPlan

EXIT_RATING_ERROR = 1
EXIT_BAD_INPUT = 2


def configure_parser(name: str, parser: argparse.ArgumentParser) -> None:
    """Arguments of `rate` (--usage) or `max-usage` (--amount)."""
    parser.add_argument("--plan", required=True, help="native tariff file or CGRateS TP dir")
    parser.add_argument("--subject", required=True, help="the rated subject (account)")
    parser.add_argument("--destination", required=True, help="called number, normalised")
    parser.add_argument("--start", required=True, help="ISO 8601 start time with offset")
    parser.add_argument("--tenant", default="", help="tenant (default: the tariff's)")
    parser.add_argument("--category", default="call")
    parser.add_argument(
        "--rounding-decimals", type=int, default=None, help="CGRateS per-span decimals"
    )
    if name == "max-usage":
        parser.add_argument("--amount", required=True, help="money, e.g. 1.50")
    else:
        parser.add_argument("--usage", required=True, help="duration: 90s, 2m10s, 1.5s, ns")


def run(name: str, args: argparse.Namespace) -> int:
    """Load the plan, rate or invert, print one JSON object."""
    try:
        start = _parse_start(args.start)
        plan = load_plan(args.plan, rounding_decimals=args.rounding_decimals)
    except TariffLoadError as exc:
        return _fail("bad_tariff", str(exc), EXIT_BAD_INPUT)
    except ValueError as exc:
        return _fail("bad_request", str(exc), EXIT_BAD_INPUT)
    try:
        out = _max_usage(plan, args, start) if name == "max-usage" else _rate(plan, args, start)
    except (DurationError, AmountError) as exc:
        return _fail("bad_request", str(exc), EXIT_BAD_INPUT)
    except RatingError as exc:
        return _fail(exc.code, str(exc), EXIT_RATING_ERROR)
    print(json.dumps(out, indent=2))
    return 0


def _parse_start(text: str) -> datetime:
    try:
        start = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"--start {text!r} is not ISO 8601") from None
    if start.tzinfo is None:
        raise ValueError(f"--start {text!r} needs a UTC offset (e.g. 2026-03-02T10:00:00Z)")
    return start


def _rate(plan: TariffPlan, args: argparse.Namespace, start: datetime) -> dict[str, Any]:
    cost = plan.rate(
        subject=args.subject,
        destination=args.destination,
        start=start,
        usage_ns=parse_duration(args.usage),
        tenant=args.tenant,
        category=args.category,
    )
    return cost.to_json()


def _max_usage(plan: TariffPlan, args: argparse.Namespace, start: datetime) -> dict[str, Any]:
    amount = parse_amount(args.amount, allow_negative=False)
    usage_ns = plan.max_usage(
        subject=args.subject,
        destination=args.destination,
        start=start,
        amount_micros=amount,
        tenant=args.tenant,
        category=args.category,
    )
    whole, frac = divmod(usage_ns, 1_000_000_000)
    usage_s = str(whole) + (f".{frac:09d}".rstrip("0") if frac else "")
    return {"usage_s": usage_s, "usage": format_duration(usage_ns), "usage_ns": usage_ns}


def _fail(code: str, message: str, exit_code: int) -> int:
    print(json.dumps({"error": code, "message": message}))
    return exit_code
