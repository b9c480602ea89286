"""One module per switch CDR format; ``parser_for`` picks the parser of a source.

A parser takes the file's lines (an iterable of str, newlines kept) and yields
``(line_no, RawCall | Reject)``; it never raises on bad rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import partial

from chargingd.core.config.mediation import SourceConfig
from chargingd.mediation.formats import (
    asterisk,
    cisco_radius,
    cucm,
    freeswitch,
    freeswitch_json,
    freeswitch_xml,
    generic,
    kamailio,
    kamailio_cdrs,
    opensips,
)
from chargingd.mediation.records import Parsed, Parser


def parser_for(source: SourceConfig, shared: dict[str, object] | None = None) -> Parser:
    """The parser of the source's format, bound to its settings. ``shared``: what the
    parser keeps across the files of one run (CUCM's call legs: a conference's bridge
    legs are read with the original and setup calls of earlier files)."""
    if source.format == "cucm":
        legs = (shared if shared is not None else {}).setdefault("cucm_legs", cucm.Legs())
        assert isinstance(legs, cucm.Legs)
        return partial(cucm.parse, legs=legs)
    parsers: dict[str, Parser] = {
        "asterisk": partial(asterisk.parse, source=source),
        "freeswitch": partial(freeswitch.parse, fields=source.fields, legs=source.legs),
        "kamailio": kamailio.parse_syslog,
        "kamailio_db": partial(kamailio.parse_db, delimiter=source.delimiter),
        "cisco_radius": partial(cisco_radius.parse, source=source),
        "csv": partial(generic.parse, source=source),
        "kamailio_cdrs": partial(kamailio_cdrs.parse, source=source),
        "opensips_db": partial(opensips.parse, source=source),
        "freeswitch_json": partial(freeswitch_json.parse, source=source),
        "freeswitch_xml": partial(freeswitch_xml.parse, source=source),
    }
    return parsers[source.format]


# Formats whose switch writes a file per call into a spool directory: a directory given
# to `chargingd mediate` stands for its files with this suffix.
SPOOL_SUFFIXES = {"freeswitch_json": ".cdr.json", "freeswitch_xml": ".cdr.xml"}


def numbered(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its newline) for every line."""
    for line_no, line in enumerate(lines, start=1):
        yield line_no, line.rstrip("\r\n")


__all__ = ["SPOOL_SUFFIXES", "Parsed", "Parser", "numbered", "parser_for"]
