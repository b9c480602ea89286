"""Invoices, credit notes and statements as PDF (reportlab, A4).

Issuer at the top, the customer and the document's facts below, then the lines, the
totals, the tax note and the payment instructions; an optional call-detail appendix
follows on its own pages. Every page has the issuer's footer and "page x of y".
Amounts printed are the stored figures (chargingd.invoicing.tax, "the rule").
"""

from __future__ import annotations

import io
import logging
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from html import escape
from pathlib import Path
from typing import Any

from reportlab.lib import colors
from reportlab.lib.enums import TA_RIGHT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    KeepTogether,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from chargingd.invoicing.cdrs import CdrRow
from chargingd.invoicing.model import Invoice, Kind, currency_decimals
from chargingd.invoicing.render import credit_went, negated
from chargingd.invoicing.tax import TaxMode, percent
from chargingd.invoicing.usage import group_of

log = logging.getLogger("chargingd.invoicing")

# DejaVu Sans, embedded (subset) when the host has it: Latin with every European
# diacritic (Łódź, Příbram, Győr, Constanța), Greek and Cyrillic, so customers' names
# and addresses print as written. Without it the PDF standard Helvetica, which has
# Latin-1 only: any other letter prints as a black box. Debian/Ubuntu:
# fonts-dejavu-core; Fedora/RHEL: dejavu-sans-fonts; Alpine: font-dejavu.
FONT_DIRS = (
    "/usr/share/fonts/truetype/dejavu",
    "/usr/share/fonts/dejavu-sans-fonts",
    "/usr/share/fonts/dejavu",
    "/usr/share/fonts/TTF",
    "/usr/local/share/fonts/dejavu",
)


def _pick_fonts() -> tuple[str, str]:
    """(regular, bold) font names for every text of the documents."""
    for folder in FONT_DIRS:
        regular, bold = Path(folder, "DejaVuSans.ttf"), Path(folder, "DejaVuSans-Bold.ttf")
        if regular.is_file() and bold.is_file():
            try:
                pdfmetrics.registerFont(TTFont("DejaVuSans", str(regular)))
                pdfmetrics.registerFont(TTFont("DejaVuSans-Bold", str(bold)))
            except Exception as exc:  # an unreadable or broken file: the next, else Helvetica
                log.warning("invoice PDFs: cannot use %s: %s", regular, exc)
                continue
            return "DejaVuSans", "DejaVuSans-Bold"
    log.info("invoice PDFs: DejaVu Sans not found (%s): Helvetica, Latin-1 text only", FONT_DIRS[0])
    return "Helvetica", "Helvetica-Bold"


FONT, FONT_BOLD = _pick_fonts()
# DejaVu Sans runs ~14 % wider than Helvetica (its digits are 0.636 em, Helvetica's
# 0.556) and has a taller x-height: set a little smaller, it reads as large and the
# layout (columns, one-line payment instructions) stays as drawn for Helvetica.
SCALE = 0.88 if FONT == "DejaVuSans" else 1.0


def _pt(size: float) -> float:
    return round(size * SCALE, 2)


TITLES = {Kind.INVOICE: "INVOICE", Kind.CREDIT_NOTE: "CREDIT NOTE", Kind.STATEMENT: "STATEMENT"}
INK = colors.HexColor("#1f2933")
ACCENT = colors.HexColor("#1d4e89")
RULE = colors.HexColor("#c5ccd3")
ZEBRA = colors.HexColor("#f3f5f7")
WIDTH = A4[0] - 36 * mm - 12  # inside the margins and the frame's own 6 pt padding

_base = getSampleStyleSheet()["Normal"]
NORMAL = ParagraphStyle("n", parent=_base, fontName=FONT, fontSize=_pt(9), leading=12)
SMALL = ParagraphStyle("s", parent=NORMAL, fontSize=_pt(8), leading=10, textColor=colors.grey)
LABEL = ParagraphStyle("l", parent=NORMAL, textColor=colors.grey)
BOLD = ParagraphStyle("b", parent=NORMAL, fontName=FONT_BOLD)
RIGHT = ParagraphStyle("r", parent=NORMAL, alignment=TA_RIGHT)
ISSUER = ParagraphStyle("i", parent=BOLD, fontSize=_pt(15), leading=19, textColor=ACCENT)
TITLE = ParagraphStyle("t", parent=BOLD, fontSize=_pt(20), leading=24, alignment=TA_RIGHT)
HEADING = ParagraphStyle("h", parent=BOLD, fontSize=_pt(11), leading=14, spaceBefore=6)


def amount(micros: int, decimals: int = 2) -> str:
    """1234567800 -> "1,234.57" (grouped thousands; micros already rounded to
    ``decimals``): at least ``decimals`` decimals, more where the amount has them (a
    document issued when its currency was rounded to more decimals prints as issued)."""
    unit = 10**6
    sign = "-" if micros < 0 else ""
    whole, frac = divmod(abs(micros), unit)
    text = f"{whole:,}"
    digits = f"{frac:06d}"
    keep = max(decimals, len(digits.rstrip("0")))
    if keep:
        text += "." + digits[:keep]
    return sign + text


def quantity(value: Decimal, unit: str) -> str:
    """Minutes with two decimals, other quantities as short as exact ("0.5", "1")."""
    if unit == "min":
        return f"{value:,.2f}"
    return format(value.normalize(), "f")


def _p(text: str, style: ParagraphStyle = NORMAL) -> Paragraph:
    return Paragraph(escape(text).replace("\n", "<br/>"), style)


def _day(moment: datetime | None) -> str:
    return "" if moment is None else moment.strftime("%d %b %Y")


class _NumberedCanvas(Canvas):  # type: ignore[misc]
    """Draws "page x of y" and the footer once every page is known."""

    footer = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pages: list[dict[str, Any]] = []

    def showPage(self) -> None:
        self._pages.append(dict(self.__dict__))
        self._startPage()

    def save(self) -> None:
        total = len(self._pages)
        for state in self._pages:
            self.__dict__.update(state)
            self.setFont(FONT, _pt(7.5))
            self.setFillColor(colors.grey)
            self.setStrokeColor(RULE)
            left, right = 18 * mm + 6, A4[0] - 18 * mm - 6  # the text's edges
            self.line(left, 14 * mm, right, 14 * mm)
            self.drawString(left, 10 * mm, self.footer[:140])
            self.drawRightString(right, 10 * mm, f"Page {self._pageNumber} of {total}")
            super().showPage()
        super().save()


def _header(inv: Invoice) -> Table:
    issuer = inv.issuer
    left: list[Any] = [_p(issuer.get("name") or "(issuer name not configured)", ISSUER)]
    lines = list(issuer.get("address", []))
    contact = " · ".join(x for x in (issuer.get("email"), issuer.get("phone")) if x)
    if contact:
        lines.append(contact)
    if issuer.get("vat_id"):
        lines.append(f"VAT ID {issuer['vat_id']}")
    left.append(_p("\n".join(lines), SMALL))
    right = [_p(TITLES[inv.kind], TITLE), _p(inv.number, RIGHT)]
    table = Table([[left, right]], colWidths=[WIDTH * 0.6, WIDTH * 0.4])
    table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), *_no_padding()]))
    return table


def _no_padding() -> list[tuple[Any, ...]]:
    return [("LEFTPADDING", (0, 0), (-1, -1), 0), ("RIGHTPADDING", (0, 0), (-1, -1), 0)]


def _facts(inv: Invoice) -> list[tuple[str, str]]:
    last_day = inv.period_end - timedelta(days=1)
    facts = [
        ("Number", inv.number),
        ("Issue date", _day(inv.issued_at)),
        ("Period", f"{_day(inv.period_start)} – {_day(last_day)}"),
        ("Account", inv.account_id),
        ("Currency", inv.currency),
    ]
    if inv.kind is Kind.INVOICE:
        facts.insert(2, ("Due date", _day(inv.due_at)))
    if inv.kind is Kind.INVOICE and inv.settles:  # a negative invoice's credit
        facts.insert(2, ("Credit applied to", ", ".join(n for n, _ in inv.settles)))
    elif inv.refers_to:
        label = "Credit applied to" if inv.kind is Kind.INVOICE else "Corrects invoice"
        facts.insert(2, (label, inv.refers_to))
    return facts


def _parties(inv: Invoice) -> Table:
    c = inv.customer
    bill_to = [_p("Bill to" if inv.kind is not Kind.STATEMENT else "Statement for", SMALL)]
    name = c.get("name") or f"Account {inv.account_id}"
    bill_to.append(_p(name, BOLD))
    details = list(c.get("address", []))
    if c.get("country"):
        details.append(c["country"])
    if c.get("vat_id"):
        details.append(f"VAT ID {c['vat_id']}")
    bill_to.append(_p("\n".join(details)))
    facts = Table(
        [[_p(k, LABEL), _p(v, RIGHT)] for k, v in _facts(inv)],
        colWidths=[WIDTH * 0.17, WIDTH * 0.25],
    )
    facts.setStyle(TableStyle([("BOTTOMPADDING", (0, 0), (-1, -1), 1), *_no_padding()]))
    table = Table([[bill_to, facts]], colWidths=[WIDTH * 0.58, WIDTH * 0.42])
    table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), *_no_padding()]))
    return table


def _grid(rows: list[list[Any]], widths: Sequence[float], numeric_from: int) -> Table:
    table = Table(rows, colWidths=[WIDTH * w for w in widths], repeatRows=1)
    style: list[tuple[Any, ...]] = [
        ("FONT", (0, 0), (-1, 0), FONT_BOLD, _pt(8.5)),
        ("FONT", (0, 1), (-1, -1), FONT, _pt(9)),
        ("TEXTCOLOR", (0, 0), (-1, 0), colors.white),
        ("BACKGROUND", (0, 0), (-1, 0), ACCENT),
        ("ALIGN", (numeric_from, 0), (-1, -1), "RIGHT"),
        ("VALIGN", (0, 0), (-1, -1), "MIDDLE"),
        ("LINEBELOW", (0, -1), (-1, -1), 0.6, RULE),
        ("TOPPADDING", (0, 0), (-1, -1), 3),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 3),
    ]
    style += [("BACKGROUND", (0, i), (-1, i), ZEBRA) for i in range(2, len(rows), 2)]
    table.setStyle(TableStyle(style))
    return table


def _lines(inv: Invoice, decimals: int) -> Table:
    cur = inv.currency
    if inv.kind is Kind.STATEMENT:
        rows: list[list[Any]] = [["Description", "Minutes", f"Amount ({cur})"]]
        rows += [
            [_p(ln.description), quantity(ln.quantity, ln.unit), amount(ln.amount_micros, decimals)]
            for ln in inv.lines
        ] or [[_p("No calls in this period"), "", ""]]
        return _grid(rows, (0.62, 0.16, 0.22), 1)
    rate = f"VAT {percent(inv.tax.rate_ppm)} %"
    rows = [["Description", "Quantity", "Unit", f"Net ({cur})", rate, f"Total ({cur})"]]
    for ln in inv.lines:
        rows.append(
            [
                _p(ln.description),
                quantity(ln.quantity, ln.unit),
                ln.unit,
                amount(ln.amount_micros, decimals),
                amount(ln.tax_micros, decimals),
                amount(ln.amount_micros + ln.tax_micros, decimals),
            ]
        )
    return _grid(rows, (0.43, 0.1, 0.07, 0.14, 0.12, 0.14), 1)


def _totals(inv: Invoice, decimals: int) -> Table:
    cur = inv.currency
    vat = f"VAT {percent(inv.tax.rate_ppm)} %"
    if (
        inv.tax.mode is not TaxMode.STANDARD
    ):  # no VAT charged, and why ("VAT (0 %) 0 %" was printed)
        why = "reverse charge" if inv.tax.mode is TaxMode.REVERSE_CHARGE else "exempt"
        vat = f"VAT 0 % ({why})"
    rows = [
        ["Subtotal", f"{amount(inv.subtotal_micros, decimals)} {cur}"],
        [vat, f"{amount(inv.tax_micros, decimals)} {cur}"],
        [
            "Total credited" if inv.kind is Kind.CREDIT_NOTE else "Total",
            f"{amount(inv.total_micros, decimals)} {cur}",
        ],
    ]
    if inv.kind is Kind.INVOICE and (inv.paid_micros or inv.credited_micros):
        rows.append(["Paid", f"-{amount(inv.paid_micros, decimals)} {cur}"])
        rows.append(["Credited", f"-{amount(inv.credited_micros, decimals)} {cur}"])
        rows.append(["Amount due", f"{amount(inv.outstanding_micros, decimals)} {cur}"])
    elif inv.kind is Kind.INVOICE:  # a negative one asks for nothing: its credit went on
        rows.append(["Amount due", f"{amount(max(0, inv.total_micros), decimals)} {cur}"])
    table = Table(rows, colWidths=[WIDTH * 0.22, WIDTH * 0.2], hAlign="RIGHT")
    table.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, -1), FONT, _pt(9.5)),
                ("ALIGN", (1, 0), (1, -1), "RIGHT"),
                ("FONT", (0, -1), (-1, -1), FONT_BOLD, _pt(11)),
                ("LINEABOVE", (0, -1), (-1, -1), 1, INK),
                ("TOPPADDING", (0, -1), (-1, -1), 5),
            ]
        )
    )
    return table


def _statement_summary(inv: Invoice) -> Table:
    s = inv.statement or {}
    cur = inv.currency
    rows = [
        ["Opening balance", s.get("opening_balance", "")],
        ["Top-ups", s.get("topups", "")],
        ["Adjustments", s.get("adjustments", "")],
        ["Calls (debited)", negated(s.get("call_debits", "0"))],
        ["Other", s.get("other", "")],
        ["Closing balance", s.get("closing_balance", "")],
    ]
    rows = [[k, f"{v} {cur}"] for k, v in rows]
    return _sum_table(rows, [WIDTH * 0.25, WIDTH * 0.2], "LEFT")


def _statement_totals(inv: Invoice, decimals: int) -> Table:
    """Under the usage lines: their sum (the statement's total, as on an invoice), the
    rounding of the lines to the minor unit and the calls debited that both make up."""
    s = inv.statement or {}
    cur = inv.currency
    unit = amount(10 ** (6 - decimals), decimals)
    rows = [
        ["Total usage shown", f"{amount(inv.total_micros, decimals)} {cur}"],
        [f"Rounding of the lines to {unit} {cur}", f"{s.get('rounding', '')} {cur}"],
    ]
    if s.get("boundary_difference", "0").strip("0.-") != "":
        rows.append(["Calls across the period's edges", f"{s['boundary_difference']} {cur}"])
    rows.append(["Calls debited", f"{s.get('call_debits', '')} {cur}"])
    return _sum_table(rows, [WIDTH * 0.32, WIDTH * 0.2], "RIGHT")


def _sum_table(rows: list[list[str]], widths: list[float], align: str) -> Table:
    """Label and amount rows whose last row is their result (bold, ruled above)."""
    table = Table(rows, colWidths=widths, hAlign=align)
    table.setStyle(
        TableStyle(
            [
                ("FONT", (0, 0), (-1, -1), FONT, _pt(9.5)),
                ("ALIGN", (1, 0), (1, -1), "RIGHT"),
                ("FONT", (0, -1), (-1, -1), FONT_BOLD, _pt(10.5)),
                ("LINEABOVE", (0, -1), (-1, -1), 1, INK),
            ]
        )
    )
    return table


def _notes(inv: Invoice, decimals: int) -> list[Any]:
    notes: list[Any] = []
    tax = inv.tax
    if tax.mode is TaxMode.REVERSE_CHARGE:
        notes.append(_p(f"{tax.note} Customer VAT ID: {tax.vat_id}.", BOLD))
    elif tax.note:
        notes.append(_p(tax.note, BOLD))
    if inv.kind is Kind.INVOICE and inv.total_micros > 0 and inv.outstanding_micros <= 0:
        # printed again once settled (a copy for the customer's books): not "pay 0.00"
        if not inv.credited_micros:
            settled = "Paid in full: nothing is due. Thank you."
        elif not inv.paid_micros:
            settled = f"Credited in full ({', '.join(inv.credit_notes)}): nothing is due."
        else:
            settled = "Settled by payments and credit notes: nothing is due. Thank you."
        notes.append(_p(settled))
    elif inv.kind is Kind.INVOICE and inv.total_micros < 0:
        # the corrections of earlier periods exceed this period's charges: a credit
        credit = f"{amount(-inv.total_micros, decimals)} {inv.currency}"
        notes.append(_p(f"Nothing to pay: the credit of {credit} {credit_went(inv, decimals)}."))
    elif inv.kind is Kind.INVOICE:
        due = f"{amount(inv.outstanding_micros, decimals)} {inv.currency}"
        bank = inv.issuer.get("bank")
        text = f"Please pay {due} by {_day(inv.due_at)}, quoting {inv.number}"
        notes.append(_p(text + (f", to {bank}." if bank else ".")))
    if inv.kind is Kind.CREDIT_NOTE:
        notes.append(_p(f"This credit note corrects invoice {inv.refers_to}: {inv.reason}"))
    if inv.kind is Kind.STATEMENT and inv.statement:
        diff = inv.statement.get("boundary_difference", "0")
        if diff.strip("0.-") != "":
            notes.append(
                _p(
                    f"Calls debited in this period but started in another (or the reverse):"
                    f" {diff} {inv.currency}.",
                    SMALL,
                )
            )
    return notes


def _appendix(
    inv: Invoice,
    calls: Sequence[CdrRow],
    limit: int,
    groups: Mapping[str, Sequence[str]],
    note: str | None = None,
) -> list[Any]:
    """Every call (up to ``limit``) with the exact amount the ledger moved for it;
    ``note``: why the list is not what the document billed (issued before documents
    kept their calls, and the CDRs changed since)."""
    story: list[Any] = [PageBreak(), _p(f"Call detail – {inv.number}", HEADING), Spacer(1, 3 * mm)]
    # Call times in the zone the document's dates are in ([invoicing] time_zone).
    zone = inv.period_start.tzinfo
    zone_name = str(getattr(zone, "key", "UTC"))
    header = [f"Start ({zone_name})", "Called number", "Destination", "Seconds"]
    header.append(f"Amount ({inv.currency})")
    rows: list[list[Any]] = [header]
    for c in calls[:limit]:
        rows.append(
            [
                c.start_time.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S"),
                c.callee,
                group_of(c.destination, groups),
                str(c.billed_s),
                amount(c.charged_micros, 6),
            ]
        )
    shown = calls[:limit]
    rows.append(
        [f"{len(shown)} calls", "", "", str(sum(c.billed_s for c in shown)),
         amount(sum(c.charged_micros for c in shown), 6)]
    )  # fmt: skip
    table = _grid(rows, (0.24, 0.24, 0.22, 0.12, 0.18), 3)
    table.setStyle(TableStyle([("FONT", (0, -1), (-1, -1), FONT_BOLD, _pt(9))]))
    story.append(table)
    if len(calls) > limit:
        story.append(_p(f"First {limit} of {len(calls)} calls; the CSV has them all.", SMALL))
    if note:
        story.append(_p(note, SMALL))
    return story


def render_pdf(
    inv: Invoice,
    *,
    calls: Sequence[CdrRow] | None = None,
    decimals: int | None = None,
    call_limit: int = 5000,
    groups: Mapping[str, Sequence[str]] | None = None,
    calls_note: str | None = None,
) -> bytes:
    """The document as PDF bytes; ``calls`` adds the call-detail appendix. ``decimals``:
    None, the minor unit of the document's currency (JPY 0, EUR 2, BHD 3)."""
    decimals = currency_decimals(inv.currency, decimals)
    out = io.BytesIO()
    doc = SimpleDocTemplate(
        out,
        pagesize=A4,
        leftMargin=18 * mm,
        rightMargin=18 * mm,
        topMargin=16 * mm,
        bottomMargin=20 * mm,
        title=f"{TITLES[inv.kind].title()} {inv.number}",
        author=inv.issuer.get("name", ""),
    )
    story: list[Any] = [_header(inv), Spacer(1, 8 * mm), _parties(inv), Spacer(1, 8 * mm)]
    if inv.kind is Kind.STATEMENT:
        story += [_p("Balance", HEADING), _statement_summary(inv), Spacer(1, 5 * mm)]
        story += [_p("Usage by destination", HEADING)]
    story += [_lines(inv, decimals), Spacer(1, 4 * mm)]
    if inv.kind is not Kind.STATEMENT:
        story.append(KeepTogether([_totals(inv, decimals)]))
    elif inv.statement and "usage_total" in inv.statement:
        story.append(KeepTogether([_statement_totals(inv, decimals)]))
    story += [Spacer(1, 6 * mm), *_notes(inv, decimals)]
    if calls is not None:
        story += _appendix(inv, calls, call_limit, groups or {}, calls_note)
    footer = inv.issuer.get("footer") or inv.issuer.get("name", "")

    class _Canvas(_NumberedCanvas):
        pass

    _Canvas.footer = footer
    doc.build(story, canvasmaker=_Canvas)
    return out.getvalue()
