"""CSV records from physical lines, so that a damaged line never takes good ones with it.

Python's csv reader, given a line whose quoted field never closes (a truncated write,
a field with a stray quote), reads on into the next lines until a quote closes it:
one damaged line swallows the good records after it. Switches write one record per
line, and a quoted field may (rarely) hold a newline. So a record is one line, unless
its last field is left open *and* the next line cannot stand alone (it is open too,
or has the wrong number of columns): only then are the lines joined, up to
``MAX_LINES``. A line left open before a line that stands alone is rejected alone.

Every record keeps its raw text (the physical lines, joined by "\\n"): reject files
carry what the switch wrote.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

MAX_LINES = 8  # the most physical lines one record may span
BOM = "\ufeff"


@dataclass(slots=True)
class Record:
    line_no: int  # its first physical line (1-based)
    raw: str  # the physical line(s) as written, without the final newline
    fields: list[str] | None  # None: unreadable (``error`` says why)
    error: str = ""


def left_open(text: str, quote: str = '"', delimiter: str = ",") -> bool:
    """True when ``text`` ends inside a quoted field (RFC 4180 quoting, "" escapes)."""
    if text.count(quote) % 2 == 0:
        return False  # balanced: the fast, usual case
    inside = False
    at_field_start = True
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if inside:
            if ch == quote:
                if i + 1 < n and text[i + 1] == quote:
                    i += 1  # an escaped quote
                else:
                    inside = False
        elif ch == quote and at_field_start:
            inside = True
        at_field_start = not inside and ch == delimiter
        i += 1
    return inside


class _Feed:
    """One csv reader for the whole file, fed one record's text at a time (a reader per
    line costs more than the parse)."""

    def __init__(self, delimiter: str) -> None:
        self._next: str | None = None
        self.reader = csv.reader(self, delimiter=delimiter)

    def __iter__(self) -> _Feed:
        return self

    def __next__(self) -> str:
        text, self._next = self._next, None
        if text is None:
            raise StopIteration
        return text

    def split(self, text: str) -> list[str] | str:
        """The fields of one record's text, or why it cannot be read."""
        self._next = text
        try:
            row = next(self.reader)
        except StopIteration:
            return []
        except csv.Error as exc:
            self._next = None
            return f"unreadable CSV: {exc}"
        if self._next is not None:  # the reader wanted more: a field left open
            self._next = None
            return "damaged record: a quoted field never closes"
        return row


def records(
    lines: Iterable[str],
    *,
    delimiter: str = ",",
    width: Callable[[], int | None] = lambda: None,
    skip: Callable[[str], bool] = lambda text: False,
) -> Iterator[Record]:
    """The records of a CSV file's lines. ``width()``: the column count a record must
    have to stand alone (None: any). ``skip(text)``: lines that are no record
    (comments, blank lines) -- never joined to anything."""
    feed = _Feed(delimiter)
    pending: list[tuple[int, str]] = []
    for line_no, line in enumerate(lines, start=1):
        text = line.rstrip("\r\n")
        if text[:1] == BOM:
            text = text[1:]
        if skip(text):
            yield from _flush(pending)
            pending = []
            continue
        if pending:
            if _stands_alone(feed, text, delimiter, width()):
                yield from _flush(pending)  # the open line was damaged
                pending = []
            else:
                pending.append((line_no, text))
                joined = "\n".join(t for _, t in pending)
                if not left_open(joined, delimiter=delimiter) or len(pending) >= MAX_LINES:
                    yield _record(feed, pending[0][0], joined, delimiter)
                    pending = []
                continue
        if left_open(text, delimiter=delimiter):
            pending = [(line_no, text)]
            continue
        fields = feed.split(text)
        if isinstance(fields, str):
            yield Record(line_no, text, None, fields)
        else:
            yield Record(line_no, text, fields)
    yield from _flush(pending)


def _stands_alone(feed: _Feed, text: str, delimiter: str, width: int | None) -> bool:
    if left_open(text, delimiter=delimiter):
        return False
    fields = feed.split(text)
    return isinstance(fields, list) and (width is None or len(fields) == width)


def _flush(pending: list[tuple[int, str]]) -> Iterator[Record]:
    """Lines left open with nothing to close them: one damaged record."""
    if pending:
        raw = "\n".join(t for _, t in pending)
        yield Record(pending[0][0], raw, None, "damaged record: a quoted field never closes")


def _record(feed: _Feed, line_no: int, raw: str, delimiter: str) -> Record:
    if left_open(raw, delimiter=delimiter):
        return Record(line_no, raw, None, "damaged record: a quoted field never closes")
    fields = feed.split(raw)
    if isinstance(fields, str):
        return Record(line_no, raw, None, fields)
    return Record(line_no, raw, fields)
