"""Every documented variant of each vendor's CDR files, through `chargingd mediate` into
the real ledger (Redis) and billing database (PostgreSQL).

Each fixture in tests/fixtures/cdr/variants/ was written from the vendor's own
documentation (README.md there names it) and holds the same two calls, plus what the
variant adds (a record that is no call, a malformed record):

* V1 +4930123456 -> +4989987654, set up 2026-12-07 12:00:00 UTC, answered 12:00:05,
  ended 12:02:10: 125 s billed, normal clearing (Q.850 16);
* V2 +4930555000 -> +4989987654, set up 12:10:00, busy (17) at 12:10:20: unanswered.

A run stores and debits V1 (125 s at 0.60 EUR a minute: 1.25), stores V2 unanswered,
and rejects the malformed record with its reason in FILE.rejects.csv.
"""

from __future__ import annotations

import asyncio
import csv
import shutil
from pathlib import Path

import psycopg
import pytest
import redis.asyncio as aioredis
from paths import FIXTURES

from chargingd.app.cli import main
from chargingd.core.config import ConfigError, config_from_dict
from chargingd.core.config.mediation import SourceConfig
from chargingd.core.redisconn import EmbeddedRedis
from chargingd.ledger import Ledger, Mode
from chargingd.mediation.formats.freeswitch import EXAMPLE
from chargingd.mediation.pipeline import normalised
from chargingd.mediation.records import Reject

VARIANTS = FIXTURES / "cdr" / "variants"
BALANCE = 100_000_000
V1 = ("+4930123456", "+4989987654", 1796644800000, 1796644805000, 1796644930000, 125, 16, "normal")
V2 = ("+4930555000", "+4989987654", 1796645400000, None, 1796645420000, 0, 17, "unanswered")
TARIFF = """
[tariff]
id = "de"
currency = "EUR"
timezone = "UTC"
decimals = 6
[destinations]
DE = ["49"]
[rates.DE]
rate = "0.60"
unit = "60s"
increment = "1s"
[plans.P]
[[plans.P.rates]]
destinations = ["DE"]
rate = "DE"
[[profiles]]
subject = "*any"
plan = "P"
from = 2020-01-01T00:00:00Z
"""


async def _ledger(url: str, account: str | None = None) -> int:
    """Open the account (``account`` given, on an emptied ledger) or read its balance."""
    client = aioredis.Redis.from_url(url)
    try:
        ledger = Ledger(client)
        if account is None:
            return (await ledger.get_account("acme")).balance_micros
        await client.flushall()
        await ledger.load_scripts()
        await ledger.create_account(
            account, mode=Mode.PREPAID, currency="EUR", tariff="de",
            balance_micros=BALANCE, who="test",
        )  # fmt: skip
        return BALANCE
    finally:
        await client.aclose()


def mediate(
    tmp_path: Path,
    redis_server: EmbeddedRedis,
    pg_url: str,
    fixture: str,
    options: str,
    capsys: pytest.CaptureFixture[str],
) -> tuple[int, str, list[tuple[object, ...]], list[tuple[str, str]], int]:
    """`chargingd mediate` a copy of the fixture with a source of ``options``:
    (exit status, summary line, stored calls, rejects (line, reason), debited micros)."""
    asyncio.run(_ledger(redis_server.url, "acme"))
    tariff = tmp_path / "de.toml"
    tariff.write_text(TARIFF)
    config = tmp_path / "chargingd.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path / "var"}"\n[redis]\nurl = "{redis_server.url}"\n'
        f'[billing]\ndb_url = "{pg_url}"\n[rating]\nplans = {{ de = "{tariff}" }}\n'
        '[mediation.sources.sw]\ndefault_country = "DE"\naccount_rule = "fixed"\n'
        f'account = "acme"\ncharge = "ledger"\n{options}\n'
    )
    source = VARIANTS / fixture
    path = tmp_path / source.name
    if source.is_dir():
        shutil.copytree(source, path)
    else:
        shutil.copy(source, path)
    code = main(["mediate", str(path), "--source", "sw", "--config", str(config), "--quiet"])
    summary = capsys.readouterr().out.splitlines()[-1]
    with psycopg.connect(pg_url) as conn:
        stored = conn.execute(
            "SELECT caller, callee, (extract(epoch FROM start_time) * 1000)::bigint,"
            " (extract(epoch FROM answer_time) * 1000)::bigint,"
            " (extract(epoch FROM end_time) * 1000)::bigint, duration_s, disconnect_cause,"
            " status FROM cdrs WHERE source = 'sw' ORDER BY start_time"
        ).fetchall()
    # A spool directory's rejects are beside each file: "NAME:LINE" then.
    rejects: list[tuple[str, str]] = []
    for found in sorted(tmp_path.rglob("*.rejects.csv")):
        where = f"{found.name.removesuffix('.rejects.csv')}:" if source.is_dir() else ""
        with open(found, newline="", encoding="utf-8") as fh:
            rejects += [(where + r["line"], r["reason"]) for r in csv.DictReader(fh)]
    debited = BALANCE - asyncio.run(_ledger(redis_server.url))
    return code, summary, [tuple(r) for r in stored], rejects, debited


# -- Cisco Unified CM ------------------------------------------------------------------------


@pytest.mark.slow
def test_cucm_cdr_file(
    tmp_path: Path, redis_server: EmbeddedRedis, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """CDR guide: names line, types line, records; E.164 numbers written \\+49...,
    partitions in their own columns, dateTimeConnect 0 when unanswered, the cause on the
    side that cleared (the other 0); a CMR (cdrRecordType 2) is no call."""
    code, summary, stored, rejects, debited = mediate(
        tmp_path, redis_server, pg_url, "cdr_StandAloneCluster_01_202612071200_1",
        'format = "cucm"', capsys,
    )  # fmt: skip
    assert (code, summary) == (
        1, "read 3, stored 2, duplicates 0, rejected 1, unanswered 1, debited 1.25 EUR"
    )  # fmt: skip
    assert stored == [V1, V2]
    assert rejects == [("6", "dateTimeDisconnect is not an integer: '17966460x0'")]
    assert debited == 1_250_000


@pytest.mark.slow
def test_cucm_cmr_file_is_no_calls(
    tmp_path: Path, redis_server: EmbeddedRedis, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """CUCM writes its call management records (voice quality) to cmr_* files beside
    the cdr_* ones, same layout (CDR guide, "CMR field descriptions"). A collector that
    picks up the directory's files gives them to mediate too: nothing in them is a call,
    nothing is rejected (was: every line rejected, "header lacks dateTimeOrigination,
    ...", exit 1 on every run)."""
    code, summary, stored, rejects, debited = mediate(
        tmp_path, redis_server, pg_url, "cmr_StandAloneCluster_01_202612071200_1",
        'format = "cucm"', capsys,
    )  # fmt: skip
    assert (code, summary) == (0, "read 0, stored 0, duplicates 0, rejected 0, unanswered 0")
    assert (stored, rejects, debited) == ([], [], 0)


# -- Cisco IOS gateway RADIUS accounting -------------------------------------------------


CISCO_REJECT = "h323-disconnect-time is not a Cisco time: '12:20:35.000 UTC Mon Dec 32 2026'"


@pytest.mark.slow
def test_cisco_detail_file_stop_only(
    tmp_path: Path, redis_server: EmbeddedRedis, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """FreeRADIUS detail file of `aaa accounting connection h323 stop-only`: the answer
    leg's Stop alone; times with the `*` (not authoritative) and `.` (sync lost) markers;
    V2's voice VSAs packed into Cisco-AVPair; causes hex (10 = 16, 11 = 17)."""
    code, summary, stored, rejects, debited = mediate(
        tmp_path, redis_server, pg_url, "cisco_radius_detail_stop_only",
        'format = "cisco_radius"', capsys,
    )  # fmt: skip
    assert (code, summary) == (
        1, "read 3, stored 2, duplicates 0, rejected 1, unanswered 1, debited 1.25 EUR"
    )  # fmt: skip
    assert stored == [V1, V2]
    assert rejects == [("34", CISCO_REJECT)]
    assert debited == 1_250_000


@pytest.mark.slow
def test_cisco_radclient_input_file(
    tmp_path: Path, redis_server: EmbeddedRedis, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same Stops in radclient's input syntax (`Name = value,` lines, records apart
    by a blank line, no timestamp line; the shared samples hold one): was read as no
    record at all, every line a 'timestamp' of an empty block: 'read 0', exit 0, the
    calls silently gone."""
    code, summary, stored, rejects, debited = mediate(
        tmp_path, redis_server, pg_url, "cisco_radius.radclient", 'format = "cisco_radius"',
        capsys,
    )  # fmt: skip
    assert (code, summary) == (
        1, "read 3, stored 2, duplicates 0, rejected 1, unanswered 1, debited 1.25 EUR"
    )  # fmt: skip
    assert stored == [V1, V2]
    assert rejects == [("32", CISCO_REJECT)]
    assert debited == 1_250_000


# -- Asterisk cdr_csv and cdr_custom -----------------------------------------------------


def _unanswered(callee: str, start_s: int, ring_s: int, cause: int) -> tuple[object, ...]:
    return ("+4930555000", callee, start_s * 1000, None, (start_s + ring_s) * 1000, 0, cause,
            "unanswered")  # fmt: skip


TWO_CALLS = "read 3, stored 2, duplicates 0, rejected 1, unanswered 1, debited 1.25 EUR"
BERLIN = 'time_zone = "Europe/Berlin"'
LOCAL_END = "end is not a time: '2026-12-07 13:5'"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fixture", "options", "summary", "more", "rejects"),
    [
        pytest.param(
            # cdr.conf [csv] defaults: 16 columns, local time; every disposition of
            # ast_cdr_disp2str (NO ANSWER 19, FAILED 41, CONGESTION 34 after V1, V2).
            "asterisk_cdr_csv_defaults.csv",
            BERLIN,
            "read 6, stored 5, duplicates 0, rejected 1, unanswered 4, debited 1.25 EUR",
            [
                _unanswered("+4915123456789", 1796646000, 30, 19),
                _unanswered("+4915123456789", 1796646600, 1, 41),
                _unanswered("+4915123456789", 1796647200, 2, 34),
            ],
            [("6", LOCAL_END)],
            id="cdr_csv-defaults",
        ),
        pytest.param(
            # loguniqueid=yes alone (17): the source says so; a row of another count is
            # rejected with the layout it was read with, never guessed.
            "asterisk_cdr_csv_loguniqueid.csv",
            f"{BERLIN}\nloguniqueid = true",
            TWO_CALLS,
            [],
            [
                (
                    "3",
                    "16 columns; the source's Master.csv has 17 (loguniqueid=yes,"
                    " loguserfield=no, newcdrcolumns=no)",
                )
            ],
            id="cdr_csv-loguniqueid",
        ),
        pytest.param(
            # loguniqueid, loguserfield, newcdrcolumns (21) with usegmtime=yes: UTC.
            "asterisk_cdr_csv_all_columns_gmt.csv",
            "usegmtime = true",
            TWO_CALLS,
            [],
            [("3", "end is not a time: '2026-12-07 12:5'")],
            id="cdr_csv-all-columns-usegmtime",
        ),
        pytest.param(
            # cdr_custom.conf.sample's Master.csv mapping (19 columns, all quoted).
            "asterisk_cdr_custom_sample.csv",
            BERLIN,
            TWO_CALLS,
            [],
            [("3", LOCAL_END)],
            id="cdr_custom-sample",
        ),
        pytest.param(
            # The sample mapping with the operator's own ${CDR(callid)},${CDR(rtcpinfo)}
            # appended (21 columns): was read as cdr_csv with all three options (lastdata
            # as the start, answer as the end...), every call rejected or misread.
            "asterisk_cdr_custom_own_columns.csv",
            BERLIN,
            TWO_CALLS,
            [],
            [("3", LOCAL_END)],
            id="cdr_custom-sample-and-own-columns",
        ),
        pytest.param(
            # A mapping of the operator's own, named in fields: uniqueid, src, dst,
            # ${CDR(start,u)} epoch times (unset 0.000000), ${CDR(billsec,f)}, disposition,
            # accountcode (was: fields refused for asterisk, the file read as cdr_csv).
            "asterisk_cdr_custom_own_mapping.csv",
            'fields = ["uniqueid", "src", "dst", "start", "answer", "end", "billsec",'
            ' "disposition", "accountcode"]',
            TWO_CALLS,
            [],
            [("3", "end is not a time: '1796646x00.000000'")],
            id="cdr_custom-own-mapping",
        ),
    ],
)
def test_asterisk(
    tmp_path: Path,
    redis_server: EmbeddedRedis,
    pg_url: str,
    capsys: pytest.CaptureFixture[str],
    fixture: str,
    options: str,
    summary: str,
    more: list[tuple[object, ...]],
    rejects: list[tuple[str, str]],
) -> None:
    code, said, stored, rejected, debited = mediate(
        tmp_path, redis_server, pg_url, fixture, f'format = "asterisk"\n{options}', capsys
    )
    assert (code, said) == (1, summary)
    assert stored == [V1, V2, *more]
    assert rejected == rejects
    assert debited == 1_250_000


@pytest.mark.slow
def test_asterisk_accountlogs_file_repeats_master_csv_calls(
    tmp_path: Path, redis_server: EmbeddedRedis, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """cdr.conf [csv] accountlogs=yes (the default) writes a call with an accountcode to
    cdr-csv/<accountcode>.csv too, the same record as in Master.csv: a collector that
    picks up both stores and debits the call once (the id is the same: channel@start)."""
    code, summary, _, _, debited = mediate(
        tmp_path,
        redis_server,
        pg_url,
        "asterisk_cdr_csv_defaults.csv",
        f'format = "asterisk"\n{BERLIN}',
        capsys,
    )
    assert (code, debited) == (1, 1_250_000) and summary.startswith("read 6, stored 5,")
    master = (VARIANTS / "asterisk_cdr_csv_defaults.csv").read_text().splitlines(keepends=True)
    per_account = tmp_path / "1001.csv"
    per_account.write_text("".join(line for line in master if line.startswith('"1001"')))
    argv = ["mediate", str(per_account), "--source", "sw", "--config",
            str(tmp_path / "chargingd.toml"), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "read 1, stored 0, duplicates 1, rejected 0, unanswered 0"
    )
    assert BALANCE - asyncio.run(_ledger(redis_server.url)) == 1_250_000


def test_asterisk_fields_must_name_the_callee_and_the_end() -> None:
    """A cdr_custom mapping without dst or end would reject every row: refused at load."""
    table = {"format": "asterisk", "charge": "ledger", "fields": ["src", "start", "billsec"]}
    with pytest.raises(ConfigError, match=r"fields \(a cdr_custom mapping's CDR names\) needs"
                       r" dst, end"):  # fmt: skip
        config_from_dict({"mediation": {"sources": {"pbx": table}}}, "my.toml")


# -- OpenSIPS and Kamailio acc ----------------------------------------------------------


@pytest.mark.slow
def test_opensips_acc_table_in_cdr_mode(
    tmp_path: Path, redis_server: EmbeddedRedis, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, summary, stored, rejects, debited = mediate(
        tmp_path, redis_server, pg_url, "opensips_acc_cdr_mode.csv",
        f'format = "opensips_db"\n{BERLIN}', capsys,
    )  # fmt: skip
    assert (code, summary) == (1, TWO_CALLS)
    assert stored == [V1, V2]
    assert rejects == [("4", "time is not a time: '2026-12-07 13:5'")]
    assert debited == 1_250_000


@pytest.mark.slow
def test_opensips_missed_calls_table(
    tmp_path: Path, redis_server: EmbeddedRedis, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`do_accounting("db", "cdr|missed")` writes the failed calls to missed_calls, the
    acc columns without duration (OpenSIPS DB schema): its rows are unanswered calls
    (was: every row rejected, 'the header has no duration column: not an acc table in
    CDR mode'); a 200 in it is no missed call and is rejected."""
    code, summary, stored, rejects, debited = mediate(
        tmp_path, redis_server, pg_url, "opensips_missed_calls.csv",
        f'format = "opensips_db"\n{BERLIN}', capsys,
    )  # fmt: skip
    assert (code, summary) == (1, "read 2, stored 1, duplicates 0, rejected 1, unanswered 1")
    assert stored == [V2]
    assert rejects == [("3", "sip_code 200 in a missed_calls table (a failed call's is >= 300)")]
    assert debited == 0


# Kamailio's acc module logs the answered INVITE (at the 200 OK) and the BYE: the call
# starts at its answer (the INVITE's time); a missed call at its failure.
K1 = (*V1[:2], V1[3], *V1[3:])
K2 = (*V2[:2], V2[4], *V2[3:])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fixture", "options", "stored", "reject"),
    [
        pytest.param(
            # acc_log_request() lines as syslog writes them, with the acc docs' log_extra
            # (src_user, src_domain, src_ip, dst_ouser, dst_user, dst_domain); the BYE
            # from the callee (tags the other way round), the ACK, another log line.
            "kamailio_acc_syslog_doc_extras.log",
            'format = "kamailio"',
            [K1, K2],
            ("6", "timestamp is not an epoch: '17966x7005'"),
            id="acc-syslog",
        ),
        pytest.param(
            # The acc table with the docs' db_extra columns, local DATETIME.
            "kamailio_acc_db_doc_extras.csv",
            f'format = "kamailio_db"\n{BERLIN}',
            [K1, K2],
            ("5", "time is not a time: '2026-12-07 13:5'"),
            id="acc-db",
        ),
        pytest.param(
            # acc_cdrs of the dialog module's CDRs (cdr_start_on_confirmed, cdr_on_failed
            # with sip_code in cdr_extra), local DATETIME.
            "kamailio_acc_cdrs.csv",
            f'format = "kamailio_cdrs"\ncdr_start = "confirmed"\n{BERLIN}',
            [K1, K2],
            ("4", "end_time is not a time: '2026-12-07 13:5'"),
            id="acc-cdrs",
        ),
    ],
)
def test_kamailio_acc(
    tmp_path: Path,
    redis_server: EmbeddedRedis,
    pg_url: str,
    capsys: pytest.CaptureFixture[str],
    fixture: str,
    options: str,
    stored: list[tuple[object, ...]],
    reject: tuple[str, str],
) -> None:
    code, summary, found, rejects, debited = mediate(
        tmp_path, redis_server, pg_url, fixture, options, capsys
    )
    assert (code, summary) == (1, TWO_CALLS)
    assert found == stored
    assert rejects == [reject]
    assert debited == 1_250_000


# -- FreeSWITCH --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fixture", "options", "reject"),
    [
        pytest.param(
            # mod_cdr_csv's built-in default template (cdr_csv.conf naming no
            # default-template): the 13 values, a space before accountcode's quote.
            "freeswitch_cdr_csv_default_template.csv",
            f'format = "freeswitch"\n{BERLIN}',
            ("3", "end_stamp is not a time: '2026-12-07 13:5'"),
            id="cdr_csv-default-template",
        ),
        pytest.param(
            # mod_json_cdr spool: a_<uuid>.cdr.json A-legs (URL-encoded values, +E.164
            # caller, *_uepoch, billusec), the B-leg (originator: skipped), a file cut short.
            "freeswitch_json_cdr",
            'format = "freeswitch_json"',
            (
                "a_e3d2c7f1-d1f1-11f1-9d2a-0242ac120002.cdr.json:1",
                "unreadable JSON: Expecting ':' delimiter at line 2",
            ),
            id="json_cdr",
        ),
        pytest.param(
            # mod_xml_cdr spool: the same legs as <cdr><variables> documents.
            "freeswitch_xml_cdr",
            'format = "freeswitch_xml"',
            (
                "a_e3d2c7f1-d1f1-11f1-9d2a-0242ac120002.cdr.xml:1",
                "unreadable XML: no element found: line 4, column 587",
            ),
            id="xml_cdr",
        ),
    ],
)
def test_freeswitch(
    tmp_path: Path,
    redis_server: EmbeddedRedis,
    pg_url: str,
    capsys: pytest.CaptureFixture[str],
    fixture: str,
    options: str,
    reject: tuple[str, str],
) -> None:
    code, summary, stored, rejects, debited = mediate(
        tmp_path, redis_server, pg_url, fixture, options, capsys
    )
    assert (code, summary) == (1, TWO_CALLS)
    assert stored == [V1, V2]
    assert rejects == [reject]
    assert debited == 1_250_000


# mod_cdr_csv.c my_on_reporting: legs = "a" (the default) skips a channel with an
# originator caller profile (a B-leg); legs = "ab" writes every channel, with the same
# template, to the same Master.csv. The A-leg of a bridged call names its B-leg in
# ${bleg_uuid}; the B-leg repeats the call. Before 2026-12-07 both lines were billed.
EXAMPLE_AND_ORIGIN = (
    'fields = ["caller_id_name", "caller_id_number", "destination_number", "context",'
    ' "start_stamp", "answer_stamp", "end_stamp", "duration", "billsec", "hangup_cause",'
    ' "uuid", "bleg_uuid", "accountcode", "read_codec", "write_codec",'
    ' "originating_leg_uuid"]'
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fixture", "options", "summary", "stored"),
    [
        pytest.param(
            # The example template: V1's B-leg (written first: the callee hung up) is
            # the line whose uuid V1's A-leg names as bleg_uuid. V2's B-leg, an
            # originate that failed (busy: no bridge, nothing names it), cannot be told
            # from a call with this template: stored unanswered, nothing debited.
            "freeswitch_cdr_csv_legs_ab.csv",
            f'format = "freeswitch"\nlegs = "ab"\n{BERLIN}',
            "read 4, stored 3, duplicates 0, rejected 0, b-legs 1, unanswered 2, debited 1.25 EUR",
            [V1, V2, V2],
            id="example-template",
        ),
        pytest.param(
            # The example template with ${originating_leg_uuid}, which originate sets on
            # the channel it makes: both B-legs are skipped, the failed one too.
            "freeswitch_cdr_csv_legs_ab_originating_leg.csv",
            f'format = "freeswitch"\nlegs = "ab"\n{BERLIN}\n{EXAMPLE_AND_ORIGIN}',
            "read 4, stored 2, duplicates 0, rejected 0, b-legs 2, unanswered 1, debited 1.25 EUR",
            [V1, V2],
            id="originating_leg_uuid",
        ),
    ],
)
def test_freeswitch_cdr_csv_legs_ab_bills_a_bridged_call_once(
    tmp_path: Path,
    redis_server: EmbeddedRedis,
    pg_url: str,
    capsys: pytest.CaptureFixture[str],
    fixture: str,
    options: str,
    summary: str,
    stored: list[tuple[object, ...]],
) -> None:
    code, line, found, rejects, debited = mediate(
        tmp_path, redis_server, pg_url, fixture, options, capsys
    )
    assert (code, line) == (0, summary)
    assert found == stored
    assert rejects == []
    assert debited == 1_250_000  # V1 once (125 s at 0.60 a minute), not twice


def test_freeswitch_b_leg_lines_apart_from_their_a_leg() -> None:
    """Other calls' lines between a call's two legs, the B-leg before or after its A-leg:
    each B-leg is known as one (a BLeg, not a call), in the file's order."""
    rows = (VARIANTS / "freeswitch_cdr_csv_legs_ab.csv").read_text().splitlines(keepends=True)
    b1, a1, a2, _ = rows
    between = [a2.replace("d2c1b6e0", f"{n:08x}") for n in range(50)]
    source = SourceConfig(format="freeswitch", time_zone="Europe/Berlin", legs="ab")
    for lines in ([b1, *between, a1], [a1, *between, b1]):
        items = list(normalised(lines, "s", source))
        assert [n for n, _ in items] == list(range(1, len(lines) + 1))
        kinds = [type(item).__name__ for _, item in items]
        b_at = lines.index(b1)
        assert kinds[b_at] == "BLeg" and kinds.count("BLeg") == 1
        assert "6b1a5c3e-d1f0-11f1-9d2a-0242ac120002" in items[b_at][1].reason


def test_freeswitch_lines_whose_other_leg_is_in_another_file() -> None:
    """legs = "ab": what the file says of each call line's other leg (RawCall.leg): an
    A-leg whose B-leg is not in the file is DANGLING, a line nothing names LONE, and
    TAIL when it ended within TAIL_S of the file's last line; a pair in the file is
    settled ("")."""
    b1, a1, a2, b2 = (VARIANTS / "freeswitch_cdr_csv_legs_ab.csv").read_text().splitlines()
    b_uuid = "6b1a6f7a-d1f0-11f1-9d2a-0242ac120002"
    lone = a1.replace("6b1a5c3e", "0000aaaa").replace(b_uuid, "").replace("13:02:10", "13:05:00")
    dangling = a1.replace("6b1a5c3e", "0000bbbb").replace("6b1a6f7a", "ffff0000")
    source = SourceConfig(format="freeswitch", time_zone="Europe/Berlin", legs="ab")
    lines = [f"{row}\n" for row in (b1, dangling, a1, lone, a2, b2)]
    legs = [getattr(item, "leg", "BLeg") for _, item in normalised(lines, "s", source)]
    # lone ended 13:05:00, five minutes before the file's last line (13:10:20).
    assert legs == ["BLeg", "dangling", "", "lone", "tail", "tail"]
    plain = SourceConfig(format="freeswitch", time_zone="Europe/Berlin")
    assert {getattr(item, "leg", "?") for _, item in normalised(lines, "s", plain)} == {""}


def test_freeswitch_bleg_uuid_pairing_only_where_the_source_says_legs_ab() -> None:
    """legs = "a" (cdr_csv.conf's default, the source's too): every line is an A-leg's
    and billed, even one another line's bleg_uuid names (two inbound calls bridged to
    each other are two calls); originating_leg_uuid still marks an originated channel.
    A legs value cdr_csv.conf has no use for here is refused."""
    rows = (VARIANTS / "freeswitch_cdr_csv_legs_ab.csv").read_text().splitlines(keepends=True)
    plain = SourceConfig(format="freeswitch", time_zone="Europe/Berlin")
    kinds = [type(item).__name__ for _, item in normalised(rows, "s", plain)]
    assert "BLeg" not in kinds and len(kinds) == len(rows)
    paired = SourceConfig(format="freeswitch", time_zone="Europe/Berlin", legs="ab")
    kinds = [type(item).__name__ for _, item in normalised(rows, "s", paired)]
    assert kinds.count("BLeg") == 1
    origin = VARIANTS / "freeswitch_cdr_csv_legs_ab_originating_leg.csv"
    fields = (*EXAMPLE, "originating_leg_uuid")
    with_origin = SourceConfig(format="freeswitch", time_zone="Europe/Berlin", fields=fields)
    lines = origin.read_text().splitlines(keepends=True)
    kinds = [type(item).__name__ for _, item in normalised(lines, "s", with_origin)]
    assert kinds.count("BLeg") == 2
    with pytest.raises(ValueError, match="legs must be"):
        SourceConfig(format="freeswitch", legs="b", charge="ledger").validate()


def test_asterisk_epoch_times_are_only_func_cdr_raw_values() -> None:
    """${CDR(start,u)} writes "%ld.%06ld"; a cdr_csv time cut short to digits ("2",
    "2026") is still a reject, never an epoch in 1970."""
    row = (VARIANTS / "asterisk_cdr_csv_defaults.csv").read_text().splitlines()[0]
    for cut in ("2", "2026", "1796644800.5"):
        bad = row.replace('"2026-12-07 13:00:00"', f'"{cut}"') + "\n"
        source = SourceConfig(format="asterisk", time_zone="Europe/Berlin")
        ((_, item),) = list(normalised([bad], "s", source))
        assert isinstance(item, Reject) and item.reason == f"start is not a time: {cut!r}"
