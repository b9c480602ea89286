"""Mediation normalisation as the vendors' own files need it (issue 9 finding 10): a UTF-8
byte-order mark in every format, a damaged Asterisk line that must not swallow the next,
CUCM's "\\+" numbers, the repeated hour of a fall-back night, Asterisk columns said by
the config, a dry run that writes nothing, rejects that carry the raw line, and a CDR
tariff named as live CDRs name it."""

from __future__ import annotations

import asyncio
import csv
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from paths import FIXTURES as ALL_FIXTURES

from chargingd.billing.db import BillingDB
from chargingd.core.config.mediation import SourceConfig
from chargingd.mediation.normalise import Call
from chargingd.mediation.pipeline import normalised
from chargingd.mediation.records import Reject

FIXTURES = ALL_FIXTURES / "cdr"
BIN = Path(sys.executable).parent / "chargingd"
BOM = "\ufeff"


def de(**kw: Any) -> SourceConfig:
    """A source dialling from Germany with a Berlin clock (as test_formats.py)."""
    return SourceConfig(default_country="DE", time_zone="Europe/Berlin", **kw)


GENERIC = de(
    format="csv",
    delimiter=";",
    time_format="%d.%m.%Y %H:%M:%S",
    mapping={
        "call_id": "CallRef", "caller": "From", "callee": "To", "start": "Begin",
        "answer": "Connected", "end": "Finished", "billsec": "Talk", "cause": "Cause",
        "account": "Customer", "gateway": "Trunk",
    },
)  # fmt: skip

# Every format, with the source settings its fixture is written for.
FORMATS: list[tuple[str, SourceConfig]] = [
    ("asterisk_Master.csv", de(format="asterisk", loguniqueid=True, loguserfield=True)),
    ("freeswitch_example.csv", de(format="freeswitch")),
    ("kamailio_acc.log", de(format="kamailio")),
    ("kamailio_acc_db.csv", de(format="kamailio_db")),
    ("cucm_cdr.csv", SourceConfig(format="cucm", default_country="DE")),
    ("cisco_radius_detail", de(format="cisco_radius")),
    ("generic_semicolon.csv", GENERIC),
    ("kamailio_acc_cdrs.csv", de(format="kamailio_cdrs", cdr_start="confirmed")),
    ("opensips_acc_cdr.csv", de(format="opensips_db")),
]


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def items(lines: list[str], source: SourceConfig) -> list[tuple[int, Call | Reject]]:
    return list(normalised(lines, "s", source))


def _summary(found: list[tuple[int, Call | Reject]]) -> list[tuple[int, str]]:
    return [(n, i.call_id if isinstance(i, Call) else f"reject:{i.reason}") for n, i in found]


@pytest.mark.parametrize(("name", "source"), FORMATS, ids=[f for f, _ in FORMATS])
def test_a_byte_order_mark_changes_nothing(name: str, source: SourceConfig) -> None:
    lines = (FIXTURES / name).read_text(encoding="utf-8").splitlines(keepends=True)
    plain = items(lines, source)
    assert any(isinstance(i, Call) for _, i in plain)
    marked = items([BOM + lines[0], *lines[1:]], source)
    assert _summary(marked) == _summary(plain)
    assert not any(BOM in i.call_id for _, i in marked if isinstance(i, Call))
    # Two files concatenated (cat a.csv b.csv) carry the second mark into the middle.
    if name.endswith((".csv", ".log")) and name not in ("cucm_cdr.csv",):
        headed = ("kamailio_acc_db.csv", "generic_semicolon.csv", "kamailio_acc_cdrs.csv",
                  "opensips_acc_cdr.csv")  # fmt: skip
        header = 1 if name in headed else 0
        body = lines[header:]
        joined = items([BOM + lines[0], *lines[1:], BOM + body[0], *body[1:]], source)
        assert len(joined) >= len(plain)


def test_cucm_file_with_a_byte_order_mark_loses_no_call(tmp_path: Path) -> None:
    """Through `chargingd mediate --dry-run`: the header behind the mark is read."""
    path = tmp_path / "cdr_StandAloneCluster_01_201907011000_1234"
    path.write_bytes(BOM.encode() + (FIXTURES / "cucm_cdr.csv").read_bytes())
    config = tmp_path / "c.toml"
    config.write_text(
        '[mediation.sources.cucm]\nformat = "cucm"\ndefault_country = "DE"\n'
        'charge = "record_only"\nrate = false\naccount_rule = "fixed"\naccount = "x"\n'
        f'plan = "{FIXTURES / "tariff_tp"}"\n[server]\ndata_dir = "{tmp_path}"\n'
    )
    done = subprocess.run(
        [str(BIN), "mediate", str(path), "--source", "cucm", "--config", str(config),
         "--dry-run", "--quiet"], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    plain = items((FIXTURES / "cucm_cdr.csv").read_text().splitlines(True), FORMATS[4][1])
    calls = sum(1 for _, i in plain if isinstance(i, Call))
    assert f"stored {calls}," in done.stdout, done.stdout + done.stderr
    assert "header lacks" not in done.stdout


# -- Asterisk: a damaged line ----------------------------------------------------------------

_ROW = (
    '"acc1","03012345678","0891234567{n}","from-internal","""Carol"" <03012345678>",'
    '"SIP/carol-0000000{n}","SIP/provider-0000001{n}","Dial","SIP/provider/0891234567{n},60",'
    '"2026-07-01 10:0{n}:00","2026-07-01 10:0{n}:05","2026-07-01 10:0{n}:35",35,30,'
    '"ANSWERED","BILLING","178289280{n}.1","{user}"'
)
ASTERISK = de(format="asterisk", loguniqueid=True, loguserfield=True)


def _row(n: int, user: str = "") -> str:
    return _ROW.format(n=n, user=user)


def test_a_damaged_asterisk_line_never_swallows_the_next() -> None:
    truncated = _row(2)[:120]  # a write cut short inside a quoted field
    stray = _row(4).replace('"Dial"', '"Di"al"')  # a quote Asterisk would have doubled
    lines = [_row(1), truncated, _row(3), stray, _row(5), _row(6, user="two\nlines")]
    found = items([line + "\n" for line in "\n".join(lines).split("\n")], ASTERISK)
    calls = {i.call_id: i for _, i in found if isinstance(i, Call)}
    rejects = {n: i for n, i in found if isinstance(i, Reject)}
    # The stray quote leaves the line's columns intact: it is read (lastapp garbled).
    assert sorted(calls) == [f"178289280{n}.1" for n in (1, 3, 4, 5, 6)]
    assert list(rejects) == [2]
    assert rejects[2].raw == truncated  # the raw line, as written
    assert rejects[2].reason.startswith("damaged record")
    assert calls["1782892806.1"].extra["userfield"] == "two\nlines"  # a legit newline


@pytest.mark.slow
def test_rejects_file_carries_the_raw_lines_and_dry_run_writes_nothing(
    pg_url: str, tmp_path: Path
) -> None:
    """Through the real `chargingd mediate`, with the billing database."""
    truncated = _row(2)[:100]
    bad_time = _row(3).replace("2026-07-01 10:03:00", "2026-13-01 10:03:00")
    path = tmp_path / "Master.csv"
    path.write_text(f"{_row(1)}\n{truncated}\n{bad_time}\n{_row(4)}\n")
    config = tmp_path / "c.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path / "var"}"\n[billing]\ndb_url = "{pg_url}"\n'
        '[mediation.sources.pbx]\nformat = "asterisk"\ntime_zone = "Europe/Berlin"\n'
        'default_country = "DE"\ncharge = "record_only"\nrate = false\n'
        'account_rule = "fixed"\naccount = "x"\nloguniqueid = true\nloguserfield = true\n'
        f'plan = "{FIXTURES / "tariff_tp"}"\n'
    )
    rejects = tmp_path / "Master.csv.rejects.csv"
    argv = [str(BIN), "mediate", str(path), "--source", "pbx", "--config", str(config), "--quiet"]

    dry = subprocess.run([*argv, "--dry-run"], capture_output=True, text=True, timeout=60)
    assert dry.returncode == 1 and "dry run: read 4, stored 2" in dry.stdout
    assert f"{path}:2: rejected: damaged record" in dry.stdout
    assert not rejects.exists() and _count(pg_url) == 0  # nothing written, anywhere
    rejects.write_text("line,reason,raw\n9,an earlier run,x\n")
    dry = subprocess.run([*argv, "--dry-run"], capture_output=True, text=True, timeout=60)
    assert rejects.read_text() == "line,reason,raw\n9,an earlier run,x\n"  # not even removed

    real = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert real.returncode == 1 and "stored 2" in real.stdout, real.stdout + real.stderr
    with open(rejects, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["line"], r["raw"]) for r in rows] == [("2", truncated), ("3", bad_time)]
    assert _count(pg_url) == 2


def _count(pg_url: str) -> int:
    async def count() -> int:
        db = await BillingDB.open(pg_url)
        try:
            return await db.count_cdrs()
        finally:
            await db.close()

    return asyncio.run(count())


@pytest.mark.parametrize(
    ("name", "source", "broken"),
    [
        ("freeswitch_example.csv", de(format="freeswitch"), '"Carol","0301'),
        ("kamailio_acc_db.csv", de(format="kamailio_db"), "99,INVITE,x"),
        ("generic_semicolon.csv", GENERIC, "R-9;03;bad"),
        ("cucm_cdr.csv", SourceConfig(format="cucm", default_country="DE"), '1,2,9999,"open'),
    ],
)
def test_every_format_rejects_with_the_raw_line(
    name: str, source: SourceConfig, broken: str
) -> None:
    lines = (FIXTURES / name).read_text(encoding="utf-8").splitlines(keepends=True)
    header = 2 if name == "cucm_cdr.csv" else 1 if name != "freeswitch_example.csv" else 0
    lines.insert(header, broken + "\n")
    found = items(lines, source)
    raws = [i.raw for n, i in found if isinstance(i, Reject) and n == header + 1]
    assert raws == [broken]
    good = sum(1 for _, i in found if isinstance(i, Call))
    assert good == sum(1 for _, i in items(lines[:header] + lines[header + 1 :], source)
                       if isinstance(i, Call))  # fmt: skip


def test_freeswitch_value_with_a_quote_is_read_not_rejected() -> None:
    line = (
        '"Al "the" Pal","03012345678","08912345678","default","2026-07-01 10:00:00",'
        '"2026-07-01 10:00:07","2026-07-01 10:05:07","307","300","NORMAL_CLEARING",'
        '"5d0e3c1a-0000-0000-0000-000000000009","","acc1","PCMA","PCMA"\n'
    )
    ((_, call),) = items([line], de(format="freeswitch"))
    assert isinstance(call, Call) and call.duration_s == 300
    assert call.extra["caller_id_name"] == 'Al "the" Pal'


# -- CUCM "\+" numbers -------------------------------------------------------------------------


def test_cucm_escaped_plus_numbers_are_e164() -> None:
    lines = (FIXTURES / "cucm_cdr.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    record = lines[2].replace('"03012345678"', '"\\+4930123456"', 1)
    record = record.replace('"08912345678","08912345678"', '"\\+442079460000","\\+442079460000"')
    ((_, call),) = [x for x in items([*lines[:2], record], FORMATS[4][1]) if x[0] == 3]
    assert isinstance(call, Call)
    assert (call.caller, call.callee) == ("+4930123456", "+442079460000")


# -- the repeated hour of a fall-back night (Europe/Berlin, 2026-10-25 03:00 CEST -> 02:00 CET)


def _fs(uuid: str, start: str, answer: str, end: str, duration: int, billsec: int) -> str:
    return (
        f'"Carol","03012345678","08912345678","default","2026-10-25 {start}",'
        f'"2026-10-25 {answer}","2026-10-25 {end}","{duration}","{billsec}","NORMAL_CLEARING",'
        f'"{uuid}","","acc1","PCMA","PCMA"\n'
    )


def test_fall_back_hour_is_read_from_the_rows_own_evidence() -> None:
    rows = [
        # 01:50 CEST to 02:10 CET: 80 minutes, not 20 (billsec says 4800).
        _fs("long", "01:50:00", "01:50:05", "02:10:05", 4805, 4800),
        # 02:50 CEST to 02:10 CET: 20 minutes, though the clock went "backwards".
        _fs("back", "02:50:00", "02:50:05", "02:10:05", 1205, 1200),
        # 02:10 to 02:30, once: CEST or CET, nothing tells: the first occurrence (default).
        _fs("same", "02:10:00", "02:10:05", "02:30:05", 1205, 1200),
        # 01:30 CEST to 02:20: the first 02:20 (CEST) makes 50 minutes, the second (CET)
        # 110: billsec decides, either way.
        _fs("short", "01:30:00", "01:30:05", "02:20:05", 3005, 3000),
        _fs("longer", "01:30:00", "01:30:05", "02:20:05", 6605, 6600),
    ]
    calls = {i.call_id: i for _, i in items(rows, de(format="freeswitch")) if isinstance(i, Call)}
    assert (calls["long"].answer_ms, calls["long"].end_ms) == (
        ms("2026-10-24 23:50:05"), ms("2026-10-25 01:10:05"),
    )  # fmt: skip
    assert (calls["back"].start_ms, calls["back"].end_ms) == (
        ms("2026-10-25 00:50:00"), ms("2026-10-25 01:10:05"),
    )  # fmt: skip
    assert calls["same"].start_ms == ms("2026-10-25 00:10:00")  # CEST: the first 02:10
    assert calls["short"].end_ms == ms("2026-10-25 00:20:05")  # the first 02:20 (CEST)
    assert calls["longer"].end_ms == ms("2026-10-25 01:20:05")  # the second (CET)
    for call in calls.values():
        assert (call.end_ms - call.answer_ms) // 1000 == call.duration_s


def test_asterisk_fall_back_hour_uses_billsec() -> None:
    row = _row(1).replace("2026-07-01 10:01:00", "2026-10-25 01:50:00")
    row = row.replace("2026-07-01 10:01:05", "2026-10-25 01:50:05")
    row = row.replace("2026-07-01 10:01:35", "2026-10-25 02:10:05").replace(
        ",35,30,", ",4805,4800,"
    )
    ((_, call),) = items([row + "\n"], ASTERISK)
    assert isinstance(call, Call) and call.end_ms - call.answer_ms == 4_800_000


def test_kamailio_db_fall_back_hour_keeps_invite_before_bye() -> None:
    lines = [
        "id,method,from_tag,to_tag,callid,sip_code,sip_reason,time,src_user,dst_user\n",
        "1,INVITE,f1,t1,dst@h,200,OK,2026-10-25 02:50:00,03012345678,08912345678\n",
        "2,BYE,f1,t1,dst@h,200,OK,2026-10-25 02:10:00,03012345678,08912345678\n",
    ]
    ((_, call),) = items(lines, de(format="kamailio_db"))
    assert isinstance(call, Call)
    assert (call.start_ms, call.end_ms) == (ms("2026-10-25 00:50:00"), ms("2026-10-25 01:10:00"))


def _cisco(conf: str, setup: str, connect: str, disconnect: str, talk: int) -> str:
    stamp = "Sun Oct 25 2026"
    return (
        "Sun Oct 25 03:00:00 2026\n"
        "\tAcct-Status-Type = Stop\n\tNAS-IP-Address = 192.0.2.50\n"
        '\tAcct-Session-Id = "00000A01"\n\tCalling-Station-Id = "03012345678"\n'
        '\tCalled-Station-Id = "08912345678"\n'
        f'\th323-conf-id = "h323-conf-id={conf}"\n'
        '\th323-call-origin = "h323-call-origin=answer"\n'
        f'\th323-setup-time = "h323-setup-time={setup} {stamp}"\n'
        f'\th323-connect-time = "h323-connect-time={connect} {stamp}"\n'
        f'\th323-disconnect-time = "h323-disconnect-time={disconnect} {stamp}"\n'
        '\th323-disconnect-cause = "h323-disconnect-cause=10"\n'
        f"\tAcct-Session-Time = {talk}\n\n"
    )


def test_cisco_zone_labels_say_which_hour() -> None:
    text = _cisco("A1", "*02:10:00.000 CEST", "*02:10:05.000 CEST", "*02:30:05.000 CET", 4800)
    text += _cisco("A2", "02:10:00.000 MEZ", "02:10:05.000 MEZ", "02:30:05.000 MEZ", 1200)
    text += _cisco("A3", "02:10:00.000 PST", "02:10:05.000 PST", "02:30:05.000 PST", 1200)
    source = de(format="cisco_radius", zone_labels={"MEZ": "+01:00"})
    found = {i.call_id if isinstance(i, Call) else "reject": i
             for _, i in items(text.splitlines(keepends=True), source)}  # fmt: skip
    a1, a2 = found["A1"], found["A2"]
    assert isinstance(a1, Call) and isinstance(a2, Call)
    # CEST 02:10 is 00:10 UTC; CET 02:30 is 01:30 UTC: 80 minutes, as the label says.
    assert (a1.answer_ms, a1.end_ms) == (ms("2026-10-25 00:10:05"), ms("2026-10-25 01:30:05"))
    assert a2.start_ms == ms("2026-10-25 01:10:00")  # MEZ = +01:00 from zone_labels
    reject = found["reject"]
    assert isinstance(reject, Reject) and "zone label 'PST'" in reject.reason


# -- the tariff, named as live CDRs name it -----------------------------------------------------


def test_mediated_tariff_is_the_plan_id_like_a_live_cdr(tmp_path: Path) -> None:
    from chargingd.mediation.payers import Payer
    from chargingd.mediation.rate import Rater

    plan = str(FIXTURES / "tariff_tp")
    source = de(format="asterisk", tenant="chargingd.test", charge="ledger")
    rater = Rater(source, plans={"std": plan}, default_plan=plan)
    ((_, call),) = items([_row(1).replace("0891234567", "0891234567") + "\n"], ASTERISK)
    assert isinstance(call, Call)
    for tariff, named in (("std", "std"), ("", "default"), ("default", "default")):
        cdr = rater.cdr(call, Payer("acc", tariff, "EUR", from_ledger=True))
        assert cdr.tariff == named and cdr.cost_micros > 0
    with pytest.raises(Exception, match="no tariff plan for tariff 'gold'"):
        rater.cdr(call, Payer("acc", "gold", "EUR", from_ledger=True))
