"""kamailio_cdrs, opensips_db, freeswitch_json and freeswitch_xml through `chargingd
mediate` into the billing database (the embedded PostgreSQL): the shared samples and
the fixture spool directories give the README's calls C1-C4 exactly, damaged records go
to FILE.rejects.csv with their line and reason, a re-run adds nothing, and the summary
line says so."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import psycopg
import pytest
from paths import FIXTURES as ALL_FIXTURES
from paths import SHARED_DATA, needs_shared

from chargingd.app.cli import main

FIXTURES = ALL_FIXTURES / "cdr"
SHARED = SHARED_DATA / "cdr-samples"
# README of the shared samples: (caller, callee, start, answer, end, billsec, Q.850, status)
C1 = ("+4930123456", "+4989987654", 1552294800000, 1552294805000, 1552294930000, 125, 16, "normal")
C2 = ("+4930123456", "+4930111222", 1552338000000, 1552338003000, 1552338048000, 45, 16, "normal")
C3 = ("+4930555000", "+4989987654", 1552295400000, None, 1552295420000, 0, 17, "unanswered")
C4 = ("+4930555000", "+4915123456789", 1552296000000, None, 1552296030000, 0, 19, "unanswered")


def config(tmp_path: Path, db_url: str) -> Path:
    path = tmp_path / "chargingd.toml"
    # The samples' calls are from 2019, before the fixture tariff: stored unrated.
    common = (
        'account_rule = "fixed"\naccount = "sbc-customer"\ntenant = "chargingd.test"\n'
        f'plan = "{FIXTURES / "tariff_tp"}"\ncharge = "record_only"\nrate = false\n'
    )
    path.write_text(
        f'[server]\ndata_dir = "{tmp_path / "var"}"\n[billing]\ndb_url = "{db_url}"\n'
        f'[mediation.sources.kam]\nformat = "kamailio_cdrs"\ncdr_start = "confirmed"\n{common}'
        f'[mediation.sources.osips]\nformat = "opensips_db"\n{common}'
        f'[mediation.sources.fsj]\nformat = "freeswitch_json"\n{common}'
        f'[mediation.sources.fsx]\nformat = "freeswitch_xml"\n{common}'
    )
    return path


def stored(db_url: str, source: str) -> list[tuple[object, ...]]:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT caller, callee, (extract(epoch FROM start_time) * 1000)::bigint,"
            " (extract(epoch FROM answer_time) * 1000)::bigint,"
            " (extract(epoch FROM end_time) * 1000)::bigint, duration_s, disconnect_cause,"
            " status FROM cdrs WHERE source = %s ORDER BY start_time",
            (source,),
        ).fetchall()
    return [tuple(r) for r in rows]


def rejects(path: Path) -> list[tuple[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [(r["line"], r["reason"]) for r in csv.DictReader(fh)]


def mediate(capsys: pytest.CaptureFixture[str], cfg: Path, source: str, *files: Path) -> str:
    argv = ["mediate", *map(str, files), "--source", source, "--config", str(cfg), "--quiet"]
    code = main(argv)
    out = capsys.readouterr().out
    assert code == (1 if "rejected 0," not in out else 0), out
    return out


@needs_shared("cdr-samples")
def test_kamailio_acc_cdrs_sample(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path, pg_url)
    path = tmp_path / "acc_cdrs.csv"
    damaged = "2,2019-03-11 09:10:00,2019-03-11 09:1,20.000000,4930555000,4989987654,c3@x\n"
    path.write_text((SHARED / "kamailio_acc_cdrs.csv").read_text() + damaged)
    out = mediate(capsys, cfg, "kam", path)
    assert "read 2, stored 1, duplicates 0, rejected 1, unanswered 0" in out
    # cdr_start = "confirmed": start_time is the answer (acc_cdrs has no setup time).
    assert stored(pg_url, "kam") == [(*C1[:2], C1[3], *C1[3:])]
    assert rejects(Path(f"{path}.rejects.csv")) == [
        ("3", "end_time is not a time: '2019-03-11 09:1'")
    ]
    out = mediate(capsys, cfg, "kam", path)
    assert "read 2, stored 0, duplicates 1, rejected 1, unanswered 0" in out
    assert len(stored(pg_url, "kam")) == 1


@needs_shared("cdr-samples")
def test_opensips_sample(pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path, pg_url)
    # The sample has no extra columns: no number to bill. Rejected, saying what to add.
    bare = tmp_path / "acc.csv"
    shutil.copy(SHARED / "opensips_acc_db.csv", bare)
    out = mediate(capsys, cfg, "osips", bare)
    assert "read 2, stored 0, duplicates 0, rejected 2" in out  # the header line too
    (_, (line, reason)) = rejects(Path(f"{bare}.rejects.csv"))
    assert line == "2" and reason.startswith("the header has no callee column")
    # The same row with the extra_fields columns an operator adds (src_user, dst_user).
    lines = (SHARED / "opensips_acc_db.csv").read_text().splitlines()
    extended = tmp_path / "acc_extra.csv"
    extended.write_text(
        f"{lines[0]},src_user,dst_user\n{lines[1]},4930123456,4989987654\n"
        "2,INVITE,a,b,bad@x,200,OK,2019-03-11 09:30:00,x,0,2019-03-11 09:29:00,1,2\n"
    )
    out = mediate(capsys, cfg, "osips", extended)
    assert "read 2, stored 1, duplicates 0, rejected 1, unanswered 0" in out
    assert stored(pg_url, "osips") == [C1]  # created, time, time + duration: exactly C1
    assert rejects(Path(f"{extended}.rejects.csv")) == [("3", "duration is not an integer: 'x'")]
    out = mediate(capsys, cfg, "osips", extended)
    assert "read 2, stored 0, duplicates 1, rejected 1" in out


@pytest.mark.parametrize(("source", "fmt"), [("fsj", "freeswitch_json"), ("fsx", "freeswitch_xml")])
def test_freeswitch_spool_directory(
    pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str, fmt: str
) -> None:
    """A log-dir given as a directory: its *.cdr.json / *.cdr.xml files, in name order."""
    cfg = config(tmp_path, pg_url)
    spool = tmp_path / fmt
    shutil.copytree(FIXTURES / fmt, spool)
    damaged = 2 if fmt == "freeswitch_xml" else 1  # + the DOCTYPE file
    out = mediate(capsys, cfg, source, spool)
    # The B-leg of C1 is no call (its A-leg is): it is not counted as read.
    assert f"read {4 + damaged}, stored 4, duplicates 0, rejected {damaged}, unanswered 2" in out
    assert stored(pg_url, source) == [C1, C3, C4, C2]
    suffix = ".cdr.json" if fmt == "freeswitch_json" else ".cdr.xml"
    cut = spool / f"a_0b1d6f0e-4f7a-4c3e-9a51-2f3c1a7e0c99{suffix}.rejects.csv"
    ((line, reason),) = rejects(cut)
    assert line == "1" and reason.startswith("unreadable")
    assert f"{cut.name.removesuffix('.rejects.csv')}: 1 rejected -> {cut}" in out
    # A re-run adds nothing (the rejects files in the directory are not read as CDRs).
    out = mediate(capsys, cfg, source, spool)
    assert f"read {4 + damaged}, stored 0, duplicates 4, rejected {damaged}" in out
    assert len(stored(pg_url, source)) == 4


def test_a_directory_for_a_line_format_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = config(tmp_path, "postgresql://127.0.0.1:1/none")
    argv = ["mediate", str(tmp_path), "--source", "kam", "--config", str(cfg)]
    assert main(argv) == 2
    assert "is a directory (format 'kamailio_cdrs' reads files)" in capsys.readouterr().err


def test_opensips_multi_leg_rows_are_one_call(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """leg_fields: OpenSIPS writes a row per leg, differing only in the leg columns; the
    call is stored once and the other rows are duplicates (never charged twice)."""
    cfg = config(tmp_path, "postgresql://127.0.0.1:1/none")  # dry run: never opened
    path = tmp_path / "legs.csv"
    head = "id,method,from_tag,to_tag,callid,sip_code,sip_reason,time,duration,setuptime,"
    row = "INVITE,f1,t1,L1@x,200,OK,2026-07-01 10:00:07,60,7,2026-07-01 10:00:00,4930123,4989123"
    path.write_text(f"{head}created,src_user,dst_user,leg\n1,{row},gw1\n2,{row},gw2\n")
    argv = ["mediate", str(path), "--source", "osips", "--config", str(cfg), "--quiet"]
    assert main([*argv, "--dry-run"]) == 0
    assert "dry run: read 2, stored 1, duplicates 1, rejected 0" in capsys.readouterr().out
