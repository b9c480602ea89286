"""Vendor files written from the vendors' documentation by the acceptance audit of
issue 5 (each test failed before its fix)."""

from __future__ import annotations

import json

from chargingd.core.config.mediation import SourceConfig
from chargingd.mediation.normalise import Call
from chargingd.mediation.pipeline import normalised


def calls_of(lines: list[str], source: SourceConfig) -> list[Call]:
    items = [item for _, item in normalised(lines, "s", source)]
    assert all(isinstance(i, Call) for i in items), items
    return [i for i in items if isinstance(i, Call)]


def _json_leg(uuid: str, cause: str, q850: str, sip: str) -> str:
    """A mod_json_cdr document of an unanswered leg (values URL-encoded, the default)."""
    return json.dumps(
        {
            "core-uuid": "0c6a3b4e-1111-4a3b-9c2d-aaaaaaaaaaaa",
            "variables": {
                "uuid": uuid,
                "caller_id_number": "%2B4930111222",
                "destination_number": "%2B33612345678",
                "start_uepoch": "1780308000000000",
                "answer_uepoch": "0",
                "end_uepoch": "1780308025000000",
                "billsec": "0",
                "hangup_cause": cause,
                "hangup_cause_q850": q850,
                "sip_term_status": sip,
            },
        }
    )


def test_freeswitch_only_cause_numbers_are_no_q850_causes() -> None:
    # FreeSWITCH's "Hangup Cause Code Table" lists its own causes in the column "ITU-T
    # Q.850 Code" (ORIGINATOR_CANCEL 487, GATEWAY_DOWN 809, DECLINE 816: switch_types.h
    # numbers, "non-standard codes above 127"). A hangup_cause_q850 holding one was
    # stored as the CDR's Q.850 cause (487), a value Q.850 does not have.
    source = SourceConfig(format="freeswitch_json", charge="record_only")
    legs = [
        _json_leg("a0000000-0000-4000-8000-000000000001", "ORIGINATOR_CANCEL", "487", "487"),
        _json_leg("a0000000-0000-4000-8000-000000000002", "GATEWAY_DOWN", "809", ""),
        _json_leg("a0000000-0000-4000-8000-000000000003", "", "816", ""),
        _json_leg("a0000000-0000-4000-8000-000000000004", "USER_BUSY", "17", "486"),
    ]
    causes = [call.cause for call in calls_of([leg + "\n" for leg in legs], source)]
    # ORIGINATOR_CANCEL: the caller hung up (normal clearing); GATEWAY_DOWN: network
    # out of order; 816 alone (DECLINE, SIP 603): call rejected; a Q.850 value stays.
    assert causes == [16, 38, 21, 17]


def test_freeswitch_cdr_csv_template_with_a_freeswitch_only_cause_number() -> None:
    source = SourceConfig(
        format="freeswitch",
        charge="record_only",
        fields=(
            "uuid",
            "caller_id_number",
            "destination_number",
            "start_epoch",
            "answer_epoch",
            "end_epoch",
            "billsec",
            "hangup_cause",
            "hangup_cause_q850",
        ),
    )
    line = (
        '"b0000000-0000-4000-8000-000000000003","+4930111222","+33612345678",'
        '"1780308000","0","1780308030","0","ORIGINATOR_CANCEL","487"\n'
    )
    (call,) = calls_of([line], source)
    assert call.cause == 16
    assert call.status == "unanswered"
