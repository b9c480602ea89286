"""Vendor files written the way each vendor documents them (each failed before its fix)."""

from __future__ import annotations

from chargingd.core.config.mediation import SourceConfig
from chargingd.mediation.normalise import Call
from chargingd.mediation.pipeline import normalised


def calls_of(lines: list[str], source: SourceConfig) -> list[Call]:
    items = [item for _, item in normalised(lines, "s", source)]
    assert all(isinstance(i, Call) for i in items), items
    return [i for i in items if isinstance(i, Call)]


# CUCM CDR Administration Guide, "CDR field descriptions": the flat file's header line
# names the destination leg "destLegIdentifier" (origLegCallIdentifier for the origin).
CUCM_HEADER = (
    '"cdrRecordType","globalCallID_callManagerId","globalCallID_callId",'
    '"origLegCallIdentifier","dateTimeOrigination","origIpAddr","callingPartyNumber",'
    '"origCause_value","destLegIdentifier","destIpAddr","finalCalledPartyNumber",'
    '"destCause_value","dateTimeConnect","dateTimeDisconnect","duration","joinOnBehalfOf"\r\n'
    "INTEGER,INTEGER,INTEGER,INTEGER,INTEGER,INTEGER,VARCHAR(50),INTEGER,INTEGER,INTEGER,"
    "VARCHAR(50),INTEGER,INTEGER,INTEGER,INTEGER,INTEGER\r\n"
)


def test_cucm_joined_records_in_separate_files_keep_their_destination_legs() -> None:
    """CUCM guide, transfer: A stays on a call its peer transfers twice (A -> B, then to
    C, then to D); each join writes a CDR with A's origLegCallIdentifier, its own
    destLegIdentifier and joinOnBehalfOf 10, often in different per-minute files. Both
    are calls of their own (was: the destination leg was read only as
    "destLegCallIdentifier", both became 1-5001#101- and the second a duplicate)."""
    a = '1,1,5001,101,1773219600,0,"\\+4930111111",0,'
    to_c = a + '104,0,"4989111111",16,1773219730,1773219790,60,10\r\n'
    to_d = a + '106,0,"4989222222",16,1773219800,1773219900,100,10'  # no final newline
    first = calls_of([*CUCM_HEADER.splitlines(keepends=True), to_c], SourceConfig(format="cucm"))
    second = calls_of([*CUCM_HEADER.splitlines(keepends=True), to_d], SourceConfig(format="cucm"))
    assert [(c.call_id, c.callee, c.duration_s) for c in first + second] == [
        ("1-5001#101-104", "+4989111111", 60),
        ("1-5001#101-106", "+4989222222", 100),
    ]
