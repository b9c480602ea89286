"""freeswitch_json (mod_json_cdr) and freeswitch_xml (mod_xml_cdr): one document per
call leg, URL-encoded values (encode-values, the default), B-legs skipped so a call is
billed once, times from *_uepoch / *_epoch / local *_stamp, damaged documents rejected
with their line, and no XML entity ever expanded.

The fixture directories hold the shared samples' calls C1-C4 as the modules write them
(a_<uuid>.cdr.json with prefix-a-leg; the B-leg of C1; a file cut short; for XML a
file with a DOCTYPE declaring entities)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from paths import FIXTURES as ALL_FIXTURES

from chargingd.core.config.mediation import SourceConfig
from chargingd.mediation.normalise import Call
from chargingd.mediation.pipeline import normalised
from chargingd.mediation.records import Reject

FIXTURES = ALL_FIXTURES / "cdr"
# The shared samples' README: (caller, callee, start, answer, end, billsec, Q.850).
C1 = ("+4930123456", "+4989987654", 1552294800000, 1552294805000, 1552294930000, 125, 16)
C2 = ("+4930123456", "+4930111222", 1552338000000, 1552338003000, 1552338048000, 45, 16)
C3 = ("+4930555000", "+4989987654", 1552295400000, 0, 1552295420000, 0, 17)
C4 = ("+4930555000", "+4915123456789", 1552296000000, 0, 1552296030000, 0, 19)


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def read_dir(fmt: str, **kw: Any) -> tuple[list[Call], dict[str, str]]:
    source = SourceConfig(format=fmt, charge="ledger", **kw)
    calls: list[Call] = []
    rejects: dict[str, str] = {}
    for path in sorted((FIXTURES / fmt).iterdir()):
        with open(path, encoding="utf-8", newline="") as fh:
            for _, item in normalised(fh, "fs", source):
                if isinstance(item, Reject):
                    rejects[path.name] = item.reason
                else:
                    calls.append(item)
    return calls, rejects


def row(c: Call) -> tuple[object, ...]:
    return (c.caller, c.callee, c.start_ms, c.answer_ms, c.end_ms, c.duration_s, c.cause)


@pytest.mark.parametrize("fmt", ["freeswitch_json", "freeswitch_xml"])
def test_fixture_directory_gives_c1_to_c4_once(fmt: str) -> None:
    calls, rejects = read_dir(fmt)
    assert [row(c) for c in calls] == [C1, C2, C3, C4]  # the B-leg of C1 is skipped
    assert [c.status for c in calls] == ["normal", "normal", "unanswered", "unanswered"]
    first = calls[0]
    # URL-encoded values decoded: the caller name's quotes and spaces.
    assert first.extra["caller_id_name"] == 'Berlin Office "Main"'
    assert (first.account, first.gateway) == ("acme-01", "192.0.2.10")
    suffix = ".cdr.json" if fmt == "freeswitch_json" else ".cdr.xml"
    assert rejects.keys() >= {f"a_0b1d6f0e-4f7a-4c3e-9a51-2f3c1a7e0c99{suffix}"}
    if fmt == "freeswitch_json":
        assert next(iter(rejects.values())) == (
            "unreadable JSON: Invalid control character at line 1"  # not "at at line 1"
        )
    else:
        assert rejects["a_0b1d6f0e-4f7a-4c3e-9a51-2f3c1a7e0c99.cdr.xml"].startswith(
            "unreadable XML:"
        )
        assert rejects["a_0b1d6f0e-4f7a-4c3e-9a51-2f3c1a7e0c98.cdr.xml"] == (
            "DOCTYPE or ENTITY declaration: not a mod_xml_cdr file"
        )


def _doc(**variables: str) -> dict[str, Any]:
    base = {"uuid": "u-1", "caller_id_number": "03012345678", "destination_number":
            "08912345678", "hangup_cause": "NORMAL_CLEARING", "billsec": "300"}  # fmt: skip
    base.update(variables)
    return {"variables": {k: quote(v, safe="") for k, v in base.items()}}


def _json_items(docs: list[dict[str, Any]], **kw: Any) -> list[tuple[int, Call | Reject]]:
    text = "".join(json.dumps(d) + "\n" for d in docs)
    source = SourceConfig(format="freeswitch_json", charge="ledger", default_country="DE",
                          time_zone="Europe/Berlin", **kw)  # fmt: skip
    return list(normalised(text.splitlines(keepends=True), "fs", source))


def test_local_stamps_and_microsecond_epochs() -> None:
    """*_stamp are the switch's local time (URL-encoded "2026-07-01%2010%3A00%3A00");
    *_uepoch, when present, win, to the millisecond."""
    stamps = _doc(start_stamp="2026-07-01 10:00:00", answer_stamp="2026-07-01 10:00:07",
                  end_stamp="2026-07-01 10:05:07")  # fmt: skip
    uepoch = _doc(uuid="u-2", start_stamp="1999-01-01 00:00:00",
                  start_uepoch="1782892800250000", answer_uepoch="1782892807250000",
                  end_uepoch="1782893107750000", billsec="")  # fmt: skip
    (_, a), (_, b) = _json_items([stamps, uepoch])
    assert isinstance(a, Call) and isinstance(b, Call)
    assert (a.start_ms, a.answer_ms, a.end_ms, a.duration_s) == (
        ms("2026-07-01 08:00:00"),
        ms("2026-07-01 08:00:07"),
        ms("2026-07-01 08:05:07"),
        300,
    )
    assert (a.caller, a.callee) == ("+493012345678", "+498912345678")
    # No billsec: end - answer, 300.5 s rounded.
    assert (b.start_ms, b.answer_ms, b.duration_s) == (1782892800250, 1782892807250, 301)


def test_several_documents_in_one_file_and_a_damaged_one_between() -> None:
    text = (json.dumps(_doc(uuid="u-1", end_epoch="1782893107")) + "\n"
            + '{"variables": {"uuid": "u-2", "destination\n'
            + json.dumps(_doc(uuid="u-3", end_epoch="1782893107"), indent=2) + "\n")  # fmt: skip
    source = SourceConfig(format="freeswitch_json", charge="ledger", default_country="DE")
    found = list(normalised(text.splitlines(keepends=True), "fs", source))
    summary = [(n, i.call_id if isinstance(i, Call) else "reject") for n, i in found]
    assert summary == [(1, "u-1"), (2, "reject"), (3, "u-3")]
    damaged = found[1][1]
    assert (
        isinstance(damaged, Reject) and damaged.raw == '{"variables": {"uuid": "u-2", "destination'
    )


def test_plus_is_kept_and_encode_values_false_reads_values_as_they_are() -> None:
    plus = _doc(caller_id_number="+41441234567", end_epoch="1782893107")
    ((_, call),) = _json_items([plus])
    assert isinstance(call, Call) and call.caller == "+41441234567"  # %2B decoded
    raw = {"variables": {"uuid": "u-9", "caller_id_number": "03012345678", "destination_number":
                         "08912345678", "caller_id_name": "100%25 sure", "end_epoch":
                         "1782893107"}}  # fmt: skip
    ((_, kept),) = _json_items([raw], encode_values=False)
    assert isinstance(kept, Call) and kept.extra["caller_id_name"] == "100%25 sure"
    ((_, decoded),) = _json_items([raw])
    assert isinstance(decoded, Call) and decoded.extra["caller_id_name"] == "100% sure"


def test_b_leg_is_skipped_by_originating_leg_uuid_too() -> None:
    b_leg = _doc(uuid="u-b", originating_leg_uuid="u-a", end_epoch="1782893107")
    assert _json_items([b_leg]) == []


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"channel_data": {}}, "no variables object: not a mod_json_cdr document"),
        (_doc(uuid="", end_epoch="1"), "no uuid variable"),
        (_doc(billsec="12x", end_epoch="1782893107"), "billsec is not an integer: '12x'"),
        ({"variables": {"uuid": "u", "caller_id_number": "%FF"}}, "not URL-encoded UTF-8"),
    ],
)
def test_json_rejects(doc: dict[str, Any], reason: str) -> None:
    ((line_no, item),) = _json_items([doc])
    assert line_no == 1 and isinstance(item, Reject) and reason in item.reason


def test_xml_entities_are_never_expanded(tmp_path: Path) -> None:
    """A billion-laughs document is rejected before expat sees it, and so is an external
    entity; a plain <cdr> is read."""
    source = SourceConfig(format="freeswitch_xml", charge="ledger", default_country="DE")
    ext = ('<?xml version="1.0"?>\n<!DOCTYPE cdr [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n'
           "<cdr><variables><uuid>&x;</uuid></variables></cdr>\n")  # fmt: skip
    ((_, item),) = list(normalised(ext.splitlines(keepends=True), "fs", source))
    assert isinstance(item, Reject) and "DOCTYPE" in item.reason
    two = (
        "<cdr><variables><uuid>x-1</uuid><destination_number>08912345678</destination_number>"
        "<end_epoch>1782893107</end_epoch></variables></cdr>\n"
        "<cdr><variables><uuid>x-2</uuid><destination_number>08912345678</destination_number>"
        "<end_epoch>1782893107</end_epoch></variables></cdr>\n"
        '<?xml version="1.0" encoding="ISO-8859-1"?>\n'
        "<cdr><variables><uuid>x-3</uuid><destination_number>08912345678</destination_number>"
        "<end_epoch>1782893107</end_epoch></variables></cdr>\n"
    )
    found = list(normalised(two.splitlines(keepends=True), "fs", source))
    calls = [(n, i.call_id) for n, i in found if isinstance(i, Call)]
    assert calls == [(1, "x-1"), (2, "x-2"), (3, "x-3")]
