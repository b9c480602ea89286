"""Second-round vendor audit of mediation (issue 5): files and configs written the way
the switches' own documentation writes them."""

from __future__ import annotations

from chargingd.core.config import config_from_dict
from chargingd.core.config.mediation import SourceConfig
from chargingd.mediation.pipeline import normalised
from chargingd.mediation.normalise import Call


def calls_of(lines: list[str], source: SourceConfig) -> list[Call]:
    items = [item for _, item in normalised(lines, "s", source)]
    assert all(isinstance(i, Call) for i in items), items
    return [i for i in items if isinstance(i, Call)]


def _source(**table: object) -> SourceConfig:
    cfg = config_from_dict({"mediation": {"sources": {"s": {"charge": "ledger", **table}}}}, "<t>")
    return cfg.mediation.sources["s"]


def test_fields_copied_from_the_switch_config_as_variables() -> None:
    """cdr_csv.conf.xml writes a template as "${caller_id_number}","${uuid}",...; Asterisk's
    cdr_custom.conf as ${CSV_QUOTE(${CDR(src)})},${CDR(start,u)}. A `fields` pasted from
    there was refused ("fields (a custom template) needs one of uuid, call_uuid")."""
    fs = _source(
        format="freeswitch",
        default_country="GB",
        fields=["${caller_id_number}", "${destination_number}", "${start_epoch}",
                "${answer_epoch}", "${end_epoch}", "${billsec}", "${uuid}"],
    )  # fmt: skip
    assert fs.fields[0] == "caller_id_number"
    (call,) = calls_of(
        ['"+447700900123","+442079460000","1796112000","1796112005","1796112065","60","u-1"\n'],
        fs,
    )
    assert (call.call_id, call.caller, call.callee, call.duration_s) == (
        "u-1", "+447700900123", "+442079460000", 60
    )  # fmt: skip
    ast = _source(
        format="asterisk",
        default_country="DE",
        fields=["${CSV_QUOTE(${CDR(src)})}", "${CSV_QUOTE(${CDR(dst)})}", "${CDR(start)}",
                "${CDR(answer)}", "${CDR(end)}", "${CDR(billsec,f)}",
                "${CSV_QUOTE(${CDR(disposition)})}", "${CDR(uniqueid)}"],
    )  # fmt: skip
    assert ast.fields == ("src", "dst", "start", "answer", "end", "billsec", "disposition",
                          "uniqueid")  # fmt: skip
    (call,) = calls_of(
        ['"+4930111111","004989987654",2026-12-01 10:00:00,2026-12-01 10:00:05,'
         '2026-12-01 10:01:05,60.000000,"ANSWERED",1764583200.7\n'],
        ast,
    )  # fmt: skip
    assert (call.call_id, call.callee, call.duration_s) == ("1764583200.7", "+4989987654", 60)
