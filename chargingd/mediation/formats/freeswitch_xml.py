"""FreeSWITCH mod_xml_cdr files: one XML document per call leg.

mod_xml_cdr writes ``<cdr core-uuid=...><channel_data/><variables><uuid>...</uuid>
...</variables><callflow><caller_profile>...</caller_profile></callflow></cdr>`` to
``<log-dir>/[a_]<uuid>.cdr.xml``, values URL-encoded with encode-values (the
default). fscdr.py reads the variables; a B-leg (an ``originator`` in its caller
profile) is skipped like in freeswitch_json.

Only what FreeSWITCH writes is accepted: a document with a DOCTYPE (and so any
entity declaration) is rejected before parsing, so no entity is ever expanded; the
standard library's expat fetches no external entity. A file holding several
documents (concatenated) is read document by document, each starting at a line
that starts with ``<?xml`` or ``<cdr``.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator

from chargingd.core.config.mediation import SourceConfig
from chargingd.mediation.formats.fscdr import Variables, raw_call
from chargingd.mediation.records import Parsed, Reject, RowError

_START = re.compile(r"^(?:<\?xml|<cdr\b)", re.MULTILINE)
_DTD = re.compile(r"<!(?:DOCTYPE|ENTITY)", re.IGNORECASE)


def documents(text: str) -> Iterator[tuple[int, str]]:
    """(first line, raw text) of each document of a file."""
    starts: list[int] = []
    for match in _START.finditer(text):
        at = match.start()
        # "<?xml ...?>" then "<cdr": one document.
        last = starts[-1] if starts else -1
        if last >= 0 and text.startswith("<?xml", last) and "</cdr>" not in text[last:at]:
            continue
        starts.append(at)
    head = text[: starts[0] if starts else len(text)]
    if head.strip():  # text before the first document: damaged, rejected whole
        yield 1, head.strip()
    line, counted = 1, 0  # the line number of offset ``counted``
    for i, at in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(text)
        line += text.count("\n", counted, at)
        counted = at
        yield line, text[at:end].rstrip()


def parse(lines: Iterable[str], source: SourceConfig) -> Iterator[Parsed]:
    """Yield the call of each A-leg document of a mod_xml_cdr file."""
    for line_no, raw in documents("".join(lines)):
        if _DTD.search(raw):
            yield line_no, Reject("DOCTYPE or ENTITY declaration: not a mod_xml_cdr file", raw)
            continue
        try:
            root = ET.fromstring(raw)
        except ET.ParseError as exc:
            yield line_no, Reject(f"unreadable XML: {exc}", raw)
            continue
        block = root.find("variables") if root.tag == "cdr" else None
        if block is None:
            yield line_no, Reject("no <cdr><variables>: not a mod_xml_cdr document", raw)
            continue
        variables = {child.tag: child.text or "" for child in block}
        if (
            variables.get("originating_leg_uuid")
            or root.find("callflow/caller_profile/originator") is not None
        ):
            continue  # a B-leg: its A-leg carries the call
        try:
            found = root.find("callflow/caller_profile")  # the first: the current one
            profile = (
                {child.tag: child.text or "" for child in found} if found is not None else None
            )
            yield line_no, raw_call(Variables(variables, source.encode_values), raw, profile)
        except RowError as exc:
            yield line_no, Reject(str(exc), raw)
