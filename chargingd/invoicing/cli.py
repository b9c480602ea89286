"""`chargingd invoice|report|cdr`: the argument parsers and what each command does
with an opened Books (chargingd.app.invoicing opens it from the config).

Exit codes: 0 done, 1 refused or failed (message on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from chargingd.core.money import AmountError, parse_amount
from chargingd.invoicing import cdrs, credit, render, reports, savings, store
from chargingd.invoicing.context import Books
from chargingd.invoicing.model import Invoice, InvoicingError, Kind, Refused, money
from chargingd.invoicing.periods import PeriodError, parse_label, window
from chargingd.invoicing.run import invoice_run
from chargingd.rating.plan import TariffPlan


def _config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="PATH", help="TOML config file")


def configure_invoice(name: str, parser: argparse.ArgumentParser) -> None:
    _config(parser)
    sub = parser.add_subparsers(dest="invoice_command", metavar="ACTION", required=True)
    p = sub.add_parser("run", help="issue a period's invoices (postpaid) and statements (prepaid)")
    p.add_argument("--period", required=True, type=_period, metavar="YYYY-MM")
    p.add_argument("--account", metavar="ID", help="only this account")
    p.add_argument("--dry-run", action="store_true", help="show what would be issued")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("list", help="issued invoices, statements and credit notes")
    p.add_argument("--period", type=_period, metavar="YYYY-MM")
    p.add_argument("--account", metavar="ID")
    p.add_argument("--kind", choices=[k.value for k in Kind])
    p.add_argument("--limit", type=_page_size, default=1000)
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("show", help="one document with its lines")
    p.add_argument("number")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("pdf", help="write a document as PDF")
    p.add_argument("number")
    p.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="the PDF file; - for stdout"
    )
    p.add_argument(
        "--calls",
        choices=["auto", "yes", "no"],
        default="auto",
        help="call-detail appendix (auto: as the account's billing profile says)",
    )
    p = sub.add_parser("calls", help="the calls of a document's period as CSV")
    p.add_argument("number")
    p.add_argument("-o", "--output", metavar="FILE", help="default: stdout")
    p = sub.add_parser("credit-note", help="correct an issued invoice")
    p.add_argument("number")
    p.add_argument(
        "--amount", required=True, type=_amount, help="credited, tax included, e.g. 11.90"
    )
    p.add_argument("--reason", required=True)
    p.add_argument("--json", action="store_true")


def configure_report(name: str, parser: argparse.ArgumentParser) -> None:
    _config(parser)
    sub = parser.add_subparsers(dest="report_command", metavar="REPORT", required=True)
    p = sub.add_parser("usage", help="one account's calls by destination, day, hour or gateway")
    p.add_argument("--account", required=True, metavar="ID")
    p.add_argument("--by", choices=reports.USAGE_KEYS, default="destination")
    _range(p)
    p = sub.add_parser("revenue", help="every account's calls by destination, day or account")
    p.add_argument("--by", choices=reports.REVENUE_KEYS, default="destination")
    _range(p)
    p = sub.add_parser("savings", help="an account's calls re-priced under every loaded plan")
    p.add_argument("--account", required=True, metavar="ID")
    p.add_argument(
        "--period", type=_period, metavar="YYYY-MM", help="a calendar month (or --from/--to)"
    )
    p.add_argument("--from", dest="start", type=_day, metavar="DATE")
    p.add_argument("--to", dest="end", type=_day, metavar="DATE", help="last day, included")
    p.add_argument("--json", action="store_true")


def _page_size(text: str) -> int:
    """--limit: rows per page, at least 1 (0 printed "no CDRs" over a full table, and a
    negative one reached PostgreSQL: "LIMIT must not be negative")."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {text!r}")
    return value


def _period(text: str) -> str:
    """--period: YYYY-MM, checked while the options are read, so a malformed one is a
    usage error (exit 2, as documented) rather than a refusal (exit 1)."""
    try:
        parse_label(text)
    except PeriodError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _day(text: str) -> str:
    """--from / --to: YYYY-MM-DD or an ISO 8601 date-time (read in the configured time
    zone later); a malformed one is a usage error (exit 2)."""
    try:
        reports.parse_day(text, "UTC")
    except Refused as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _range(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--from", dest="start", required=True, type=_day, metavar="DATE", help="first day"
    )
    p.add_argument(
        "--to", dest="end", required=True, type=_day, metavar="DATE", help="last day, included"
    )
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")


def configure_cdr(name: str, parser: argparse.ArgumentParser) -> None:
    _config(parser)
    sub = parser.add_subparsers(dest="cdr_command", metavar="ACTION", required=True)
    p = sub.add_parser("list", help="CDRs, oldest first")
    p.add_argument("--account", metavar="ID")
    p.add_argument("--from", dest="start", type=_day, metavar="DATE")
    p.add_argument("--to", dest="end", type=_day, metavar="DATE", help="last day, included")
    p.add_argument("--limit", type=_page_size, default=100)
    p.add_argument(
        "--after",
        type=int,
        default=0,
        metavar="CDR_ID",
        help="continue after this CDR in the listing's order (start time, then id)",
    )
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("show", help="every CDR of one call id")
    p.add_argument("call_id")
    p.add_argument("--json", action="store_true")


def needs_ledger(command: str, args: argparse.Namespace) -> bool:
    """Runs post to and read the ledger; credit notes post to it."""
    if command == "invoice":
        return args.invoice_command in ("run", "credit-note")
    return command == "report" and args.report_command == "savings"


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


async def invoice(books: Books, args: argparse.Namespace) -> int:
    """`chargingd invoice ACTION`."""
    try:
        return await _invoice(books, args)
    except (InvoicingError, PeriodError) as exc:
        print(f"chargingd invoice: {exc}", file=sys.stderr)
        return 1


async def _invoice(books: Books, args: argparse.Namespace) -> int:
    # None: each document in its currency's own minor unit (else the configured decimals).
    decimals = books.cfg.minor_unit_decimals
    action = args.invoice_command
    if action == "run":
        result = await invoice_run(
            books, args.period, account_id=args.account, dry_run=args.dry_run
        )
        if args.json:
            docs = [
                d.to_json(decimals) if isinstance(d, Invoice) else render.draft_json(d, decimals)
                for d in result.issued
            ]
            _print_json(
                {"run_id": result.run_id, "period": result.period, "dry_run": result.dry_run,
                 "issued": docs, "skipped": result.skipped, "cdrs": result.cdrs,
                 "errors": result.errors, "notes": result.notes,
                 "elapsed_s": round(result.elapsed_s, 3)}
            )  # fmt: skip
        else:
            print(render.run_text(result, decimals), end="")
        return 1 if result.errors else 0
    if action == "list":
        found = await store.list_invoices(
            books.db, books.now(), period=args.period, account_id=args.account,
            kind=Kind(args.kind) if args.kind else None, limit=args.limit,
        )  # fmt: skip
        if args.json:
            _print_json([inv.to_json(decimals) for inv in found])
        else:
            print(render.list_text(found, decimals), end="")
        return 0
    return await _one(books, args, decimals)


async def _one(books: Books, args: argparse.Namespace, decimals: int | None) -> int:
    action = args.invoice_command
    if action == "credit-note":
        note = await credit.credit_note(books, args.number, args.amount, args.reason)
        if args.json:
            _print_json(note.to_json(decimals))
        else:
            print(render.invoice_text(note, decimals), end="")
        return 0
    inv = await store.get_invoice(books.db, args.number, books.now())
    if action == "show":
        if args.json:
            _print_json(inv.to_json(decimals))
        else:
            print(render.invoice_text(inv, decimals), end="")
        return 0
    # What the document billed (kept with it); one issued before that was kept, the
    # CDRs as they are now, with a note when they no longer add up to it.
    detail = await cdrs.document_calls(books.db, inv)
    rows = detail.rows
    appendix = (
        action == "calls" or args.calls == "yes" or (args.calls == "auto" and inv.call_detail)
    )
    if detail.note is not None and appendix:
        print(f"chargingd invoice: warning: {detail.note}", file=sys.stderr)
    if action == "calls":
        text = cdrs.calls_csv(rows)
        if args.output and args.output != "-":
            Path(args.output).write_text(text, encoding="utf-8")
        else:
            print(text, end="")
        return 0
    # reportlab loads only here: every other command (ctl included) starts faster.
    from chargingd.invoicing import pdf

    data = pdf.render_pdf(
        inv,
        calls=rows if appendix else None,
        decimals=decimals,
        call_limit=books.cfg.call_detail_max_rows,
        groups=books.cfg.destination_groups,
        calls_note=detail.note,
    )
    if args.output == "-":  # `-o - | lpr`, as with other tools; it made a file named "-"
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return 0
    Path(args.output).write_bytes(data)
    print(f"{inv.number}: {len(data)} bytes written to {args.output}", file=sys.stderr)
    return 0


def _amount(text: str) -> int:
    """--amount: a plain decimal amount, checked while the options are read, so a
    malformed or negative one is a usage error (exit 2, as `ctl` answers the same
    amount) before any database or ledger is opened, not a refusal (exit 1)."""
    try:
        return parse_amount(text, allow_negative=False)
    except AmountError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


async def report(
    books: Books,
    args: argparse.Namespace,
    plans: Mapping[str, TariffPlan] | None = None,
    current_plan: str = "",
    account_exists: Callable[[str], Awaitable[bool]] | None = None,
) -> int:
    """`chargingd report REPORT`. ``account_exists`` (the app asks the billing
    database, then the ledger): `usage --account` of an account that does not exist is
    refused (exit 1, as `invoice show` of no invoice), not an empty report; so is
    `savings --account`."""
    try:
        if args.report_command == "savings":
            return await _savings(books, args, plans or {}, current_plan, account_exists)
        tz = books.cfg.time_zone
        start = reports.parse_day(args.start, tz)
        end = reports.parse_day(args.end, tz, end=True)
        if end <= start:  # a usage error, like a malformed date
            print("chargingd report: --to must not be before --from", file=sys.stderr)
            return 2
        account_id = getattr(args, "account", None)
        known = account_exists is None or account_id is None or await account_exists(account_id)
        if not known:
            print(f"chargingd report: no such account {account_id!r}", file=sys.stderr)
            return 1
        rows = await reports.report(
            books.db,
            by=args.by,
            start=start,
            end=end,
            time_zone=tz,
            groups=books.cfg.destination_groups,
            account_id=account_id,
        )
    except (InvoicingError, PeriodError) as exc:
        print(f"chargingd report: {exc}", file=sys.stderr)
        return 1
    print(reports.render(rows, args.by, args.format), end="")
    return 0


async def _savings(
    books: Books,
    args: argparse.Namespace,
    plans: Mapping[str, TariffPlan],
    current: str,
    account_exists: Callable[[str], Awaitable[bool]] | None = None,
) -> int:
    tz = books.cfg.time_zone
    if args.period:
        period = window(args.period, 1, tz)
        start, end = period.start, period.end
    elif args.start and args.end:
        start, end = reports.parse_day(args.start, tz), reports.parse_day(args.end, tz, end=True)
        if end <= start:  # a usage error, as in `report usage`
            print("chargingd report: --to must not be before --from", file=sys.stderr)
            return 2
    else:  # a usage error: nothing says which calls
        print("chargingd report: give --period YYYY-MM or --from and --to", file=sys.stderr)
        return 2
    if not plans:
        raise Refused("no tariff plans are loaded: configure [rating] plans or default_plan")
    if account_exists is not None and not await account_exists(args.account):
        print(f"chargingd report: no such account {args.account!r}", file=sys.stderr)
        return 1
    found = await savings.savings(
        books.db, plans, account_id=args.account, start=start, end=end, current_plan=current
    )
    if args.json:
        _print_json(found.to_json())
    else:
        print(savings.render_text(found), end="")
    return 0


async def cdr(books: Books, args: argparse.Namespace) -> int:
    """`chargingd cdr list|show`."""
    try:
        if args.cdr_command == "show":
            found = await cdrs.find_cdr(books.db, args.call_id)
            if not found:
                raise Refused(f"no CDR with call id {args.call_id!r}")
        else:
            tz = books.cfg.time_zone
            start = reports.parse_day(args.start, tz) if args.start else None
            end = reports.parse_day(args.end, tz, end=True) if args.end else None
            if start is not None and end is not None and end <= start:
                # "no CDRs" for swapped dates read as "none in that window"
                print("chargingd cdr list: --to must not be before --from", file=sys.stderr)
                return 2
            found = await cdrs.list_cdrs(
                books.db,
                account_id=args.account,
                start=start,
                end=end,
                after_id=args.after,
                limit=args.limit,
            )
    except cdrs.NoSuchCursor as exc:  # a usage error, like a bad --limit
        print(f"chargingd cdr list: --after: {exc}", file=sys.stderr)
        return 2
    except InvoicingError as exc:
        print(f"chargingd cdr: {exc}", file=sys.stderr)
        return 1
    if args.json:
        _print_json([c.to_json() for c in found])
    else:
        page = args.limit if args.cdr_command == "list" else 0
        print(_cdr_text(found, detail=args.cdr_command == "show", page=page), end="")
    return 0


def _cdr_text(rows: list[cdrs.CdrRow], *, detail: bool, page: int = 0) -> str:
    """``page``: the --limit asked; a shorter page is the last one (no "continue")."""
    if detail:
        return "".join(
            "\n".join(f"{k:<17} {v}" for k, v in r.to_json().items()) + "\n\n" for r in rows
        )
    if not rows:
        return "no CDRs\n"
    out = [
        f"{'id':>9} {'start (UTC)':<19} {'account':<16} {'callee':<16} {'destination':<14}"
        f" {'billed_s':>8} {'charged':>12} {'status':<10} call_id"
    ]
    for r in rows:
        out.append(
            f"{r.id:>9} {r.start_time:%Y-%m-%d %H:%M:%S} {r.account_id:<16.16} {r.callee:<16.16}"
            f" {r.destination:<14.14} {r.billed_s:>8} {money(r.charged_micros, 6):>12}"
            f" {r.status:<10} {r.call_id}"
        )
    if page and len(rows) < page:
        out.append(f"({len(rows)} CDRs, the last of the listing)")
    else:
        out.append(f"({len(rows)} CDRs; continue with --after {rows[-1].id})")
    return "\n".join(out) + "\n"
