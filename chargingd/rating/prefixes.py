"""Destinations: named sets of number prefixes, longest prefix wins.

One dict keyed by the prefix string (a hash probe per candidate length, so a
lookup costs time proportional to the number's length); values are shared,
interned tuples of destination ids, so a 1,000,000-prefix deck costs one string
per prefix and nothing more.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Iterator
from pathlib import Path

from chargingd.core.chain import chained

ANY_DESTINATION = "*any"


class PrefixError(ValueError):
    """A prefix that is not digits, or a deck line that is not "prefix,destination"."""


def normalize_number(number: str) -> str:
    """Strip the leading + of an already normalised number."""
    return number[1:] if number.startswith("+") else number


class PrefixIndex:
    """Prefix -> destination ids, longest match first; and whole numbers matched only
    exactly (a tariff's ``[numbers]``: short codes and extensions, "+494711", which as
    a prefix would also match every longer number starting so: +49 471 1...)."""

    __slots__ = ("_ids", "_map", "_max_len", "_whole")

    def __init__(self) -> None:
        self._map: dict[str, tuple[str, ...]] = {}
        self._ids: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._max_len = 0
        self._whole: dict[str, tuple[str, ...]] = {}

    def __len__(self) -> int:
        return len(self._map) + len(self._whole)

    def add_whole(self, number: str, destination_id: str) -> None:
        """Add one whole number (E.164 digits, a "+" allowed) to a destination: it
        matches that number only, before any prefix of it."""
        digits = normalize_number(number.strip())
        if not (1 <= len(digits) <= 15 and digits.isdigit() and digits.isascii()):
            raise PrefixError(f"number {number!r} is not 1-15 digits (E.164, country code first)")
        old = self._whole.get(digits)
        if old is not None and destination_id in old:
            return
        ids = (*old, destination_id) if old else (destination_id,)
        self._whole[digits] = self._ids.setdefault(ids, ids)

    def add(self, prefix: str, destination_id: str, *, digits_only: bool = True) -> None:
        """Add one prefix to a destination (a prefix may belong to several).

        `digits_only=False` admits CGRateS' free-text prefixes ("voicemail").
        """
        prefix = normalize_number(prefix.strip())
        if not prefix or (digits_only and (not prefix.isdigit() or not prefix.isascii())):
            raise PrefixError(f"prefix {prefix!r} is not digits")
        old = self._map.get(prefix)
        if old is not None and destination_id in old:
            return
        ids = (*old, destination_id) if old else (destination_id,)
        self._map[prefix] = self._ids.setdefault(ids, ids)
        self._max_len = max(self._max_len, len(prefix))

    def add_many(self, destination_id: str, prefixes: Iterable[str]) -> None:
        """Add several prefixes to one destination."""
        for prefix in prefixes:
            self.add(prefix, destination_id)

    def load_deck(self, path: str | Path) -> int:
        """Load a "prefix,destination_id" file (one a line, # comments); returns lines read.

        Errors name the file and line. A clean deck (digits, one comma, no duplicates)
        loads in bulk with C-level loops: 10**6 lines in well under a second.
        """
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        lines = text.splitlines()
        first = 0
        if lines and not lines[0].partition(",")[0].isdigit():
            first = 1  # a header (or a comment/odd line: the slow path judges it)
        loaded = self._bulk(lines[first:])
        if loaded is not None:
            if first:
                self._deck_line(path, 1, lines[0])
            return loaded
        return sum(self._deck_line(path, n, line) for n, line in enumerate(lines, 1))

    def _bulk(self, lines: list[str]) -> int | None:
        """Add clean lines all at once; None (nothing added) if any line needs care."""
        body = "\n".join(lines)
        if body.count(",") != len(lines) or any(c in body for c in " \t\r#+"):
            return None
        parts = body.replace(",", "\n").split("\n") if lines else []
        keys, values = parts[0::2], parts[1::2]
        joined = "".join(keys)
        if not (all(keys) and all(values) and joined.isdigit() and joined.isascii()):
            return None
        interned = self._ids
        by_dest = {d: interned.setdefault((d,), (d,)) for d in set(values)}
        fresh = dict(zip(keys, map(by_dest.__getitem__, values), strict=True))
        if len(fresh) != len(keys) or not self._map.keys().isdisjoint(fresh):
            return None  # a prefix listed twice: the slow path merges destinations
        if self._map:
            self._map.update(fresh)
        else:
            self._map = fresh
        self._max_len = max(self._max_len, max(map(len, keys), default=0))
        return len(keys)

    def _deck_line(self, path: str | Path, lineno: int, line: str) -> int:
        """The slow path of load_deck: blanks, comments, header, +prefixes, errors."""
        prefix, sep, dest = line.partition(",")
        if not sep:
            if not line.strip() or line.lstrip().startswith("#"):
                return 0
            raise PrefixError(f"{path}:{lineno}: expected 'prefix,destination'")
        dest = dest.strip()
        if not dest:
            raise PrefixError(f"{path}:{lineno}: empty destination id")
        try:
            self.add(prefix, dest)
        except PrefixError as exc:
            if lineno == 1 and not prefix.strip().lstrip("+").isdigit():
                return 0  # a header line such as "prefix,destination"
            raise chained(PrefixError(f"{path}:{lineno}: {exc}"), None) from None
        return 1

    def significant(self, number: str) -> str:
        """The leading digits of a number that decide its matches (no prefix is longer);
        a whole number of ``[numbers]`` is itself, marked ("=494711": not the key of the
        longer numbers it begins)."""
        number = normalize_number(number)
        if self._whole and number in self._whole:
            return "=" + number
        return number[: self._max_len]

    def matches(self, number: str) -> Iterator[tuple[str, tuple[str, ...]]]:
        """Yield (prefix, destination ids) for the number itself when it is a whole
        number of the index, then every prefix of number, longest first."""
        number = normalize_number(number)
        if self._whole:
            whole = self._whole.get(number)
            if whole is not None:
                yield number, whole
        get = self._map.get
        for length in range(min(len(number), self._max_len), 0, -1):
            ids = get(number[:length])
            if ids is not None:
                yield number[:length], ids

    def longest_in(self, number: str, wanted: Container[str]) -> tuple[str, tuple[str, ...]] | None:
        """The longest prefix of number with a destination in `wanted`, and those ids."""
        if number.startswith("+"):
            number = number[1:]
        if self._whole:
            whole = self._whole.get(number)
            if whole is not None:
                found = tuple(d for d in whole if d in wanted)
                if found:
                    return number, found
        get = self._map.get
        for length in range(min(len(number), self._max_len), 0, -1):
            ids = get(number[:length])
            if ids is not None:
                found = tuple(d for d in ids if d in wanted) if len(ids) > 1 else ids
                if found and found[0] in wanted:
                    return number[:length], found
        return None

    def destination_ids(self) -> set[str]:
        """Every destination id that has at least one prefix."""
        return {d for ids in self._ids for d in ids}  # ids of prefixes and whole numbers
