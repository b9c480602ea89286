"""Database tables exported as CSV with a header row (kamailio_cdrs, opensips_db).

The header names the columns; the switch's own columns have fixed names, its extra
columns (Kamailio cdr_extra, OpenSIPS extra_fields) are named by the operator. The
source's ``mapping`` names them (caller = "caller_id"); without it the usual names
are looked for, in order (``CANDIDATES``). A row with another column count than the
header is rejected, never guessed; a damaged line never takes the next with it
(csvlines).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from chargingd.mediation.formats.csvlines import records
from chargingd.mediation.records import Reject, RowError

# Column names the switches' documentation and common schemas use for the extra
# fields, most usual first (Kamailio acc db_extra / cdr_extra examples, OpenSIPS
# extra_fields and opensips-cp's cdrviewer: caller_id / callee_id).
CANDIDATES: dict[str, tuple[str, ...]] = {
    "call_id": ("callid", "call_id", "sip_call_id"),
    "caller": ("src_user", "caller_id", "from_user", "src_uri", "from_uri", "caller"),
    "callee": ("dst_user", "callee_id", "to_user", "dst_ouser", "ruri_user", "dst_uri",
               "to_uri", "callee"),
    "account": ("accountcode", "account", "account_id"),
    "gateway": ("src_ip", "source_ip", "gateway"),
    "sip_code": ("sip_code", "code"),
}  # fmt: skip


@dataclass(slots=True)
class Header:
    """The header record: its names, and its text (a reject when the header will not
    do: a file exported without a header has a call on its first line)."""

    names: list[str]
    raw: str


@dataclass(slots=True)
class Row:
    header: list[str]  # the file's header (the same list for every row)
    raw: str
    values: dict[str, str]  # header name -> value


class Columns:
    """Which header column holds each field: the mapping's, else the first candidate
    the header has (``CANDIDATES``, then the format's own ``fixed`` names)."""

    def __init__(
        self,
        header: list[str],
        mapping: Mapping[str, str | int],
        fixed: Mapping[str, tuple[str, ...]] | None = None,
    ) -> None:
        self.header = header
        present = set(header)
        self.column: dict[str, str] = {}
        for name, candidates in {**CANDIDATES, **(fixed or {})}.items():
            found = next((c for c in candidates if c in present), None)
            if found is not None:
                self.column[name] = found
        for name, wanted in mapping.items():
            if isinstance(wanted, str):
                self.column[name] = wanted

    def missing(self) -> list[str]:
        """Mapped columns the header does not have (a configuration error)."""
        present = set(self.header)
        return sorted(c for c in self.column.values() if c not in present)

    def get(self, row: Row, name: str) -> str:
        column = self.column.get(name)
        return row.values.get(column, "").strip() if column else ""


# How database exports write SQL NULL: ``mysql -B`` (batch, tab-separated) prints the
# word NULL; SELECT ... INTO OUTFILE, mysqldump --tab and psql COPY (text) write \N.
# A NULL column is an empty value (OpenSIPS ``created`` DEFAULT NULL, extra columns
# the script left unset), never the text "NULL".
SQL_NULLS = frozenset(("NULL", "\\N"))


def sql_values(fields: list[str]) -> list[str]:
    """The row's values with SQL NULLs (``SQL_NULLS``) read as empty."""
    if SQL_NULLS.isdisjoint(fields):
        return fields
    return ["" if value in SQL_NULLS else value for value in fields]


def rows(lines: Iterable[str], delimiter: str = ",") -> Iterator[tuple[int, Header | Row | Reject]]:
    """(line number, header, row or reject) for every record; blank lines skipped. The
    first non-blank record is the header; a header again further down (``Header``)
    names the columns of the rows after it. ``delimiter``: the source's ("\t" for
    ``mysql -B`` output)."""
    header: list[str] = []
    width: list[int | None] = [None]
    for rec in records(lines, delimiter=delimiter, width=lambda: width[0]):
        if rec.fields is None:
            yield rec.line_no, Reject(rec.error, rec.raw)
            continue
        fields = rec.fields
        if not fields or fields == [""]:
            continue
        if not header or header_again(fields, header):
            # The first record; or a header again further down: exports joined with
            # `cat`, the next export after the table changed (a cdr_extra / extra_fields
            # column added): its columns from here on (before 2026-12-08 every row after
            # it was rejected, "N columns; the header has M").
            header = [name.strip() for name in fields]
            width[0] = len(header)
            yield rec.line_no, Header(header, rec.raw)
            continue
        if len(fields) != len(header):
            yield rec.line_no, Reject(f"{len(fields)} columns; the header has {len(header)}",
                                      rec.raw)  # fmt: skip
            continue
        values = dict(zip(header, sql_values(fields), strict=True))
        yield rec.line_no, Row(header, rec.raw, values)


def header_again(fields: list[str], header: list[str]) -> bool:
    """A header line further down: no empty name, at least half of them (two at least)
    the current header's (no row holds half its header's names as values)."""
    names = [f.strip() for f in fields]
    if not header or not all(names):
        return False
    return len(set(names) & set(header)) >= max(2, len(header) // 2)


def seconds(text: str, name: str) -> Decimal:
    """A non-negative number of seconds ("125", "125.000000", "4.5")."""
    try:
        value = Decimal(text)
    except (InvalidOperation, ValueError):
        raise RowError(f"{name} is not a number of seconds: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise RowError(f"{name} is not a number of seconds: {text!r}")
    return value


def whole_seconds(value: Decimal) -> int:
    """Seconds rounded half up, as chargingd rounds end - answer (normalise.py)."""
    return int(value + Decimal("0.5"))
