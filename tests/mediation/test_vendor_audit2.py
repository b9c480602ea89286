"""Second-round vendor audit of mediation (issue 5): files and configs written the way
the switches' own documentation writes them."""

from __future__ import annotations

import json

from chargingd.core.config import config_from_dict
from chargingd.core.config.mediation import SourceConfig
from chargingd.mediation.normalise import Call
from chargingd.mediation.pipeline import normalised


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


def _fs_variables() -> dict[str, str]:
    """A leg's variables as mod_json_cdr / mod_xml_cdr dump the channel's variable hash:
    caller_id_number and destination_number are caller profile fields, not variables
    (FusionPBX's importer reads them from the callflow too)."""
    return {
        "direction": "inbound",
        "uuid": "5e0c1a2b-0000-4000-8000-00000000fc01",
        "sip_from_user": "+4930111111",
        "sip_to_user": "900442079460000",
        "sip_req_user": "900442079460000",
        "sip_network_ip": "192.0.2.10",
        "hangup_cause": "NORMAL_CLEARING",
        "hangup_cause_q850": "16",
        "start_uepoch": "1796637600000000",
        "answer_uepoch": "1796637605000000",
        "end_uepoch": "1796637665000000",
        "billsec": "60",
        "duration": "65",
    }


# The dialplan stripped the access code 9 and transferred: the current profile (first
# callflow) routes +442079460000, the one it replaced had what the phone sent.
_PROFILES = [
    {"caller_id_number": "+4930111111", "destination_number": "+442079460000"},
    {"caller_id_number": "1000", "destination_number": "900442079460000"},
]


def test_freeswitch_json_and_xml_numbers_from_the_callflow_caller_profile() -> None:
    """The numbers were read from sip_from_user / sip_to_user when the variables had no
    caller_id_number / destination_number (as in every real mod_json_cdr file): the
    call was billed to 900442079460000 (+90: Turkey)."""
    doc = {
        "variables": _fs_variables(),
        "callflow": [{"profile_index": "2", "caller_profile": _PROFILES[0]},
                     {"profile_index": "1", "caller_profile": _PROFILES[1]}],
    }  # fmt: skip
    source = SourceConfig(format="freeswitch_json", default_country="DE")
    (call,) = calls_of([json.dumps(doc) + "\n"], source)
    assert (call.caller, call.callee, call.duration_s) == ("+4930111111", "+442079460000", 60)

    def flow(profile: dict[str, str]) -> str:
        fields = "".join(f"<{k}>{v}</{k}>" for k, v in profile.items())
        return f"<callflow><caller_profile>{fields}</caller_profile></callflow>"

    variables = "".join(f"<{k}>{v}</{k}>" for k, v in _fs_variables().items())
    xml = (
        f'<?xml version="1.0"?>\n<cdr core-uuid="c1"><variables>{variables}</variables>'
        f"{flow(_PROFILES[0])}{flow(_PROFILES[1])}</cdr>\n"
    )
    (call,) = calls_of([xml], SourceConfig(format="freeswitch_xml", default_country="DE"))
    assert (call.caller, call.callee, call.duration_s) == ("+4930111111", "+442079460000", 60)
