"""FreeSWITCH mod_json_cdr files: one JSON document per call leg.

mod_json_cdr writes each leg's CDR (cJSON_PrintUnformatted: one line) to
``<log-dir>/[a_]<uuid>.cdr.json``; its ``variables`` object holds the channel
variables, URL-encoded with encode-values (the default; the source's
``encode_values`` says otherwise). fscdr.py reads them. A file holding several
documents (files concatenated, one per line, or pretty-printed ones) is read
document by document; a document that does not parse is rejected with its line,
and reading goes on at the next line starting with "{".
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from chargingd.core.config.mediation import SourceConfig
from chargingd.mediation.formats.fscdr import Variables, raw_call
from chargingd.mediation.records import Parsed, Reject, RowError

_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"\s*")


def documents(text: str) -> Iterator[tuple[int, str, Any]]:
    """(first line, raw text, parsed document or a JSONDecodeError) for each document."""
    pos, n = 0, len(text)
    line, counted = 1, 0  # the line number of offset ``counted``
    while True:
        pos = _SPACE.match(text, pos).end()  # type: ignore[union-attr]  # always matches
        if pos >= n:
            return
        line += text.count("\n", counted, pos)
        counted = pos
        try:
            doc, end = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            following = text.find("\n{", pos + 1)
            end = n if following < 0 else following + 1
            yield line, text[pos:end].rstrip("\r\n"), exc
        else:
            yield line, text[pos:end], doc
        pos = end


def b_leg(doc: Mapping[str, Any], variables: Mapping[str, Any]) -> bool:
    """A B-leg: its channel was originated by another (switch_ivr_generate_json_cdr
    writes an ``originator`` into the caller profile; originate sets
    originating_leg_uuid on the peer channel)."""
    if variables.get("originating_leg_uuid"):
        return True
    flows = doc.get("callflow")
    for flow in flows if isinstance(flows, list) else [flows]:
        profile = flow.get("caller_profile") if isinstance(flow, dict) else None
        if isinstance(profile, dict) and "originator" in profile:
            return True
    return False


def caller_profile(doc: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The leg's current caller profile: the first callflow's (switch_ivr_generate_json_cdr
    writes the channel's profile first, then the ones a transfer replaced)."""
    flows = doc.get("callflow")
    flow = (flows[0] if flows else None) if isinstance(flows, list) else flows
    profile = flow.get("caller_profile") if isinstance(flow, dict) else None
    return profile if isinstance(profile, dict) else None


def _what(err: json.JSONDecodeError) -> str:
    """The parser's message without its own trailing "at" ("Invalid control character
    at"): the reject adds "at line N" and said "at at line 1"."""
    return err.msg.removesuffix(" at")


def parse(lines: Iterable[str], source: SourceConfig) -> Iterator[Parsed]:
    """Yield the call of each A-leg document of a mod_json_cdr file."""
    for line_no, raw, doc in documents("".join(lines)):
        if isinstance(doc, json.JSONDecodeError):
            yield line_no, Reject(f"unreadable JSON: {_what(doc)} at line {doc.lineno}", raw)
            continue
        variables = doc.get("variables") if isinstance(doc, dict) else None
        if not isinstance(variables, dict):
            yield line_no, Reject("no variables object: not a mod_json_cdr document", raw)
            continue
        if b_leg(doc, variables):
            continue
        try:
            yield (
                line_no,
                raw_call(Variables(variables, source.encode_values), raw, caller_profile(doc)),
            )
        except RowError as exc:
            yield line_no, Reject(str(exc), raw)
