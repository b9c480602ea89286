"""The pure rules of invoicing: periods, proration, rounding, taxes, destination groups."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chargingd.core.config import ConfigError, config_from_dict
from chargingd.invoicing.build import Correction, LineMaker, correction_lines, subscription_lines
from chargingd.invoicing.credit import split_gross
from chargingd.invoicing.model import Subscription
from chargingd.invoicing.periods import (
    PeriodError,
    active_days,
    check_closed,
    prorate,
    round_half_up_div,
    window,
)
from chargingd.invoicing.reports import ReportRow
from chargingd.invoicing.tax import TaxMode, TaxProfile, line_tax, percent, round_minor
from chargingd.invoicing.usage import like_pattern

VAT19 = TaxProfile(TaxMode.STANDARD, 190_000)


def test_calendar_month_and_billing_day_windows() -> None:
    nov = window("2026-11", 1, "UTC")
    assert (nov.start, nov.end, nov.days) == (
        datetime(2026, 11, 1, tzinfo=UTC),
        datetime(2026, 12, 1, tzinfo=UTC),
        30,
    )
    dec15 = window("2026-12", 15, "Europe/Berlin")
    assert dec15.first_day == date(2026, 12, 15) and dec15.end_day == date(2027, 1, 15)
    assert dec15.start.utcoffset() is not None and dec15.start.utcoffset().total_seconds() == 3600
    assert window("2026-03", 1, "UTC").earlier(3).label == "2025-12"


@pytest.mark.parametrize("bad", ["2026-13", "2026-1", "26-11", "", "2026-11-01"])
def test_bad_period_labels(bad: str) -> None:
    with pytest.raises(PeriodError, match="YYYY-MM"):
        window(bad, 1, "UTC")


def test_billing_day_29_is_refused() -> None:
    with pytest.raises(PeriodError, match=r"1\.\.28"):
        window("2026-02", 29, "UTC")


def test_a_period_is_invoiced_only_after_it_ended_and_settled() -> None:
    nov = window("2026-11", 1, "UTC")
    with pytest.raises(PeriodError, match="can be invoiced from 2026-12-01T01:00"):
        check_closed(nov, datetime(2026, 12, 1, 0, 30, tzinfo=UTC), 3600)
    check_closed(nov, datetime(2026, 12, 1, 1, 0, tzinfo=UTC), 3600)


def test_proration_at_period_edges() -> None:
    nov = window("2026-11", 1, "UTC")  # 30 days
    assert active_days(nov, date(2026, 11, 16), None) == 15  # started mid-period
    assert active_days(nov, date(2026, 10, 1), date(2026, 11, 10)) == 10  # ended mid-period
    assert active_days(nov, date(2026, 11, 30), None) == 1  # last day only
    assert active_days(nov, date(2026, 12, 1), None) == 0  # not yet
    assert active_days(nov, date(2026, 1, 1), date(2026, 10, 31)) == 0  # already over
    assert active_days(nov, date(2026, 11, 5), date(2026, 11, 5)) == 1  # one day
    assert prorate(10_000_000, 15, 30) == 5_000_000
    assert prorate(10_000_000, 1, 30) == 333_333  # 333333.33 -> half up
    assert prorate(10_000_000, 2, 3) == 6_666_667
    assert prorate(10_000_000, 30, 30) == 10_000_000


def test_subscription_lines_show_the_days() -> None:
    nov = window("2026-11", 1, "UTC")
    make = LineMaker(VAT19, 2)
    subs = [
        Subscription(1, "a", "DID rental", 9_900_000, 1, date(2026, 11, 16), None),
        Subscription(2, "a", "Channel", 2_500_000, 10, date(2026, 1, 1), None),
    ]
    did, channels = subscription_lines(make, nov, subs)
    assert did.description == "DID rental (15 of 30 days)"
    assert (did.exact_micros, did.amount_micros, did.quantity) == (
        4_950_000,
        4_950_000,
        Decimal("0.5"),
    )
    assert did.tax_micros == 940_000  # 4.95 x 19 % = 0.9405 -> 0.94
    assert channels.description == "Channel, 10 x 2.50"
    assert channels.amount_micros == 25_000_000 and channels.quantity == 1


def test_rounding_rule_half_away_from_zero_to_the_cent() -> None:
    assert round_minor(3_704_999, 2) == 3_700_000
    assert round_minor(3_705_000, 2) == 3_710_000
    assert round_minor(-3_705_000, 2) == -3_710_000
    assert round_minor(5, 2) == 0
    assert round_minor(1_234_567, 0) == 1_000_000
    assert line_tax(3_700_000, 190_000, 2) == 700_000  # 0.703 -> 0.70
    assert line_tax(50_000, 190_000, 2) == 10_000  # 0.0095 -> 0.01
    assert line_tax(-10_000_000, 190_000, 2) == -1_900_000
    assert line_tax(10_000_000, 0, 2) == 0
    assert percent(190_000) == "19" and percent(77_000) == "7.7" and percent(0) == "0"


@given(st.integers(-(10**12), 10**12), st.integers(1, 10**9))
def test_integer_half_up_division_matches_decimal(num: int, den: int) -> None:
    expected = (Decimal(num) / Decimal(den)).quantize(Decimal(1), rounding="ROUND_HALF_UP")
    assert round_half_up_div(num, den) == int(expected)


@given(st.integers(1, 10**8).map(lambda c: c * 10_000), st.sampled_from([0, 70_000, 190_000]))
def test_credit_note_split_adds_up(gross: int, rate: int) -> None:
    net, tax = split_gross(gross, rate, 2)
    assert net + tax == gross
    assert net % 10_000 == 0 and tax % 10_000 == 0
    assert abs(tax - line_tax(net, rate, 2)) <= 10_000  # within a cent of the line rule


@given(
    st.integers(1, 10**7),
    st.sampled_from([0, 2, 3]),
    st.sampled_from([70_000, 77_000, 81_000, 190_000]),
)
def test_credit_note_net_is_rounded_once(units: int, decimals: int, rate: int) -> None:
    """A credit note's net is amount / (1 + rate) rounded half up once, to the minor
    unit: 0.714 BHD at 8.1 % is 0.660 net (0.66049...), not 0.661 (rounded to the
    micro-unit first, 0.660500, then up again), and 0.007 BHD at 7.7 % is 0.006."""
    unit = 10 ** (6 - decimals)
    gross = units * unit
    net, _ = split_gross(gross, rate, decimals)
    exact = Decimal(gross) / (Decimal(10**6 + rate) / 10**6) / unit
    assert net == int(exact.quantize(Decimal(1), rounding="ROUND_HALF_UP")) * unit


def test_credit_note_net_rounded_once_examples() -> None:
    assert split_gross(714_000, 81_000, 3) == (660_000, 54_000)
    assert split_gross(7_000, 77_000, 3) == (6_000, 1_000)


def test_a_transition_period_after_a_time_zone_change_bills_a_month_of_days() -> None:
    """November was invoiced in Europe/Berlin (to 30 Nov 23:00 UTC), then [invoicing]
    time_zone became UTC: December starts where November ended, an hour before
    midnight. Its calls are cut at that instant; its subscriptions are billed for the
    31 days of December, not 32 (the hour of 30 November is no day), and the other way
    (UTC, then Berlin: 1 Dec 01:00 local) for 31 too."""
    sub = Subscription(1, "a", "DID", 31_000_000, 1, date(2026, 1, 1), None)
    make = LineMaker(TaxProfile(TaxMode.EXEMPT, 0), 2)
    for zone, start in (
        ("UTC", datetime(2026, 11, 30, 23, tzinfo=UTC)),
        ("Europe/Berlin", datetime(2026, 12, 1, 0, tzinfo=UTC)),
    ):
        period = window("2026-12", 1, zone).transition(start)
        assert period.start == start and period.first_day == date(2026, 12, 1)
        (line,) = subscription_lines(make, period, [sub])
        assert (line.description, line.exact_micros) == ("DID", 31_000_000), zone


def test_destination_patterns_are_like_patterns() -> None:
    assert like_pattern("DE_MOB*") == "DE\\_MOB%"
    assert like_pattern("100%*") == "100\\%%"


def test_invoicing_config_checks() -> None:
    cfg = config_from_dict({"invoicing": {"vat_rates": {"DE": "19", "CH": "8.1"}}}).invoicing
    assert cfg.vat_ppm("DE") == 190_000 and cfg.vat_ppm("CH") == 81_000 and cfg.vat_ppm("FR") == 0
    # A customer's country is an address: the ISO codes phonenumbers has no numbering
    # plan for are countries too (they were refused as "not an ISO 3166 code").
    cfg = config_from_dict({"invoicing": {"vat_rates": {"TF": "20", "PN": "0"}}}).invoicing
    assert (cfg.vat_ppm("TF"), cfg.vat_ppm("PN")) == (200_000, 0)
    for raw, message in (
        ({"vat_rates": {"DE": "19%"}}, "percentage"),
        ({"vat_rates": {"Germany": "19"}}, "ISO 3166"),
        # Two capitals but no region: customers of country GB would get the default.
        (
            {"vat_rates": {"UK": "20"}},
            r"\[invoicing\] vat_rates key 'UK' is not an ISO 3166 code"
            r" \(the United Kingdom is GB\)",
        ),
        ({"vat_rates": {"XX": "20"}}, r"\[invoicing\] vat_rates key 'XX' is not an ISO 3166"),
        ({"default_vat_rate": "101"}, "between 0 and 100"),
        ({"invoice_series": "INV {year}"}, "invoice_series"),
        ({"credit_note_series": "INV-{year}"}, "must differ"),
        ({"time_zone": "Mars/Olympus"}, "IANA"),
        ({"destination_groups": {"Mobile": []}}, "needs a name and patterns"),
    ):
        with pytest.raises(ConfigError, match=message):
            config_from_dict({"invoicing": raw})


def test_report_price_per_minute_is_rounded_not_floored() -> None:
    """`report usage/revenue` per min: 0.13 over 90 billed seconds is 0.086667."""

    def per_min(charged: int, billed_s: int) -> str:
        row = ReportRow("k", "EUR", 1, 1, billed_s, charged, charged)
        return str(row.to_json()["charged_per_minute"])

    assert per_min(130_000, 90) == "0.086667"
    assert per_min(-130_000, 90) == "-0.086667"  # a refund: away from zero, as a floor was not
    assert per_min(10_000, 60) == "0.0100"
    assert per_min(0, 0) == "0.0000"


def test_correction_lines_read_as_english_with_and_without_new_calls() -> None:
    """A rerated period (charges changed, no call added) printed "Usage correction for
    2026-10 (charges corrected recorded after it was billed)" on the invoice."""
    make = LineMaker(VAT19, 2)
    start, end = datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
    lines = correction_lines(
        make,
        [Correction("2026-10", start, end, 0, -221_000), Correction("2026-09", start, end, 3, 1)],
    )
    assert [ln.description for ln in lines] == [
        "Usage correction for 2026-09 (+3 calls recorded after it was billed)",
        "Usage correction for 2026-10 (charges corrected after it was billed)",
    ]
