"""Files the switch is still writing when `chargingd mediate` reads them (docs/mediation.md,
"Files still being written"): an Asterisk Master.csv appended live, a csv export whose last
line is half written, a FreeSWITCH spool file half written. Real files, the real CLI, the
real ledger (Redis) and billing database (PostgreSQL).

Before: the half last line was read as it stood: rejected (exit 1, its reject removed by the
next run), or, cut after a whole column (talk time "6" of "65"), billed 6 s, the whole line a
duplicate of it later: billed short for ever."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import psycopg
import pytest
import redis.asyncio as aioredis

from chargingd.app.cli import main
from chargingd.core.redisconn import EmbeddedRedis
from chargingd.ledger import Ledger, Mode

T = 1_773_219_600  # 2026-03-11T09:00:00Z
TARIFF = """
[tariff]
id = "pbx"
currency = "USD"
timezone = "UTC"
decimals = 6
[destinations]
US = ["1"]
[rates.US]
rate = "0.60"
unit = "60s"
increment = "1s"
[plans.P]
[[plans.P.rates]]
destinations = ["US"]
rate = "US"
[[profiles]]
subject = "*any"
plan = "P"
from = 2020-01-01T00:00:00Z
"""
SOURCE = 'default_country = "US"\naccount_rule = "fixed"\naccount = "carol"\ncharge = "ledger"\n'


def _config(tmp_path: Path, redis_url: str, pg_url: str, settle: str = "") -> Path:
    tariff = tmp_path / "pbx.toml"
    tariff.write_text(TARIFF)
    config = tmp_path / "chargingd.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path / "var"}"\n[redis]\nurl = "{redis_url}"\n'
        f'[billing]\ndb_url = "{pg_url}"\n[rating]\nplans = {{ pbx = "{tariff}" }}\n'
        f"[mediation]\n{settle}"
        f'[mediation.sources.export]\nformat = "csv"\ntime_format = "epoch"\n{SOURCE}'
        'mapping = { call_id = "id", caller = "from", callee = "to", start = "start",'
        ' answer = "answer", end = "end", billsec = "talk" }\n'
        f'[mediation.sources.pbx]\nformat = "asterisk"\nusegmtime = true\n{SOURCE}'
        f'[mediation.sources.fs]\nformat = "freeswitch_json"\n{SOURCE}'
        f'[mediation.sources.gw]\nformat = "cisco_radius"\n{SOURCE}'
        '[mediation.sources.sbc]\nformat = "kamailio_cdrs"\ntime_zone = "UTC"\n'
        f'cdr_start = "confirmed"\n{SOURCE}'
    )
    return config


def _balance(redis_server: EmbeddedRedis, reset: bool = False) -> int:
    async def go() -> int:
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            ledger = Ledger(client)
            if reset:
                await client.flushall()
                await ledger.load_scripts()
                await ledger.create_account(
                    "carol", mode=Mode.PREPAID, currency="USD", tariff="pbx",
                    balance_micros=20_000_000, who="test",
                )  # fmt: skip
            return (await ledger.get_account("carol")).balance_micros
        finally:
            await client.aclose()

    return asyncio.run(go())


def _run(config: Path, source: str, *files: Path) -> int:
    argv = ["mediate", *map(str, files), "--source", source, "--config", str(config), "--quiet"]
    return main(argv)


def _writing(path: Path, more: str, every_s: float = 0.2) -> threading.Thread:
    """The switch appending ``more`` to ``path`` a character at a time (a slow writer)
    while mediate starts and watches it."""

    def write() -> None:
        for char in more:
            time.sleep(every_s)
            with path.open("a") as fh:
                fh.write(char)

    writer = threading.Thread(target=write)
    writer.start()
    return writer


def _csv_line(i: int, talk: int) -> str:
    start = T + 600 * i
    return f"c{i},+12125550000,+1212555{i:04d},{start},{start + 5},{start + 5 + talk},{talk}\n"


@pytest.mark.slow
def test_half_written_last_line_is_left_for_the_next_run_and_billed_once_whole(
    tmp_path: Path,
    redis_server: EmbeddedRedis,
    pg_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _balance(redis_server, reset=True)
    config = _config(tmp_path, redis_server.url, pg_url)
    path = tmp_path / "export.csv"
    whole = "id,from,to,start,answer,end,talk\n" + _csv_line(0, 60) + _csv_line(1, 65)
    cut = len(whole) - 12  # the exporter wrote "...,173..." of its last line so far
    path.write_text(whole[:cut])
    writer = _writing(path, whole[cut:], every_s=0.3)  # and still writes it
    assert _run(config, "export", path) == 0
    writer.join()
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == (
        "read 1, stored 1, duplicates 0, rejected 0, unanswered 0, debited 0.60 USD, unfinished 1"
    )
    assert out[0] == (
        f"{path}:3: last record has no end yet and the file is being written: left for the next run"
    )
    assert not (tmp_path / "export.csv.rejects.csv").exists()
    assert path.read_text() == whole  # the exporter finished the line
    assert _run(config, "export", path) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "read 2, stored 1, duplicates 1, rejected 0, unanswered 0, debited 0.65 USD"
    )
    assert _balance(redis_server) == 20_000_000 - 600_000 - 650_000
    with psycopg.connect(pg_url) as conn:
        talk = conn.execute(
            "SELECT billed_s FROM cdrs WHERE source = 'export' AND call_id = 'c1'"
        ).fetchone()
    assert talk == (65,)


@pytest.mark.slow
def test_asterisk_master_csv_appended_live_no_reject_no_double(
    tmp_path: Path,
    redis_server: EmbeddedRedis,
    pg_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """cdr_csv appends a line per call to Master.csv: read while a line is half written,
    that line was a reject (exit 1); it is left for the next run, then billed once."""
    _balance(redis_server, reset=True)
    config = _config(tmp_path, redis_server.url, pg_url)

    def line(i: int, talk: int) -> str:
        start = T + 600 * i
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(start))
        ans = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(start + 5))
        end = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(start + 5 + talk))
        return (
            f'"acc1","+12125550000","+1212555{i:04d}","from-internal","""Ext"" <1001>",'
            f'"SIP/1001-{i:08x}","SIP/trunk-{i:08x}","Dial","SIP/trunk/x","{stamp}","{ans}",'
            f'"{end}",{talk + 5},{talk},"ANSWERED","BILLING"\n'
        )

    path = tmp_path / "Master.csv"
    first, second = line(0, 60), line(1, 120)
    path.write_text(first + second[:70])
    writer = _writing(path, second[70:80], every_s=0.3)  # cdr_csv writing the line
    assert _run(config, "pbx", path) == 0
    writer.join()
    assert capsys.readouterr().out.splitlines()[-1] == (
        "read 1, stored 1, duplicates 0, rejected 0, unanswered 0, debited 0.60 USD, unfinished 1"
    )
    with path.open("a") as fh:
        fh.write(second[80:])
    assert _run(config, "pbx", path) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "read 2, stored 1, duplicates 1, rejected 0, unanswered 0, debited 1.20 USD"
    )
    assert _balance(redis_server) == 20_000_000 - 1_800_000


@pytest.mark.slow
def test_a_settled_file_is_read_to_its_end_without_a_newline(
    tmp_path: Path,
    redis_server: EmbeddedRedis,
    pg_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A file that does not change while watched is complete: a last line without a
    newline (some exporters end so; a file copied in for a one-off import a moment ago)
    is read at once, never left waiting for a next run; so is a file unchanged for
    settle_s, and every file of a config with settle_s = 0."""
    _balance(redis_server, reset=True)
    config = _config(tmp_path, redis_server.url, pg_url, "settle_s = 30\n")
    path = tmp_path / "export.csv"
    path.write_text("id,from,to,start,answer,end,talk\n" + _csv_line(0, 60).rstrip("\n"))
    assert _run(config, "export", path) == 0  # just written, and no writer at it
    assert capsys.readouterr().out.splitlines()[-1] == (
        "read 1, stored 1, duplicates 0, rejected 0, unanswered 0, debited 0.60 USD"
    )
    past = time.time() - 31
    os.utime(path, (past, past))
    assert _run(config, "export", path) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "read 1, stored 0, duplicates 1, rejected 0, unanswered 0"
    )
    config = _config(tmp_path, redis_server.url, pg_url, "settle_s = 0\n")
    path.write_text(path.read_text() + "\n" + _csv_line(1, 60).rstrip("\n"))
    assert _run(config, "export", path) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "read 2, stored 1, duplicates 1, rejected 0, unanswered 0, debited 0.60 USD"
    )


@pytest.mark.slow
def test_spool_files_still_being_written_are_left_for_the_next_run(
    tmp_path: Path,
    redis_server: EmbeddedRedis,
    pg_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """mod_json_cdr writes a file per call into its log-dir; one that changes while
    mediate watches the directory's recent files is half written (a half document was a
    reject): it is left for the next run, said so, and read whole by it; a file written
    whole a moment ago is read at once."""
    _balance(redis_server, reset=True)
    config = _config(tmp_path, redis_server.url, pg_url)
    spool = tmp_path / "json_cdr"
    spool.mkdir()

    def doc(i: int, talk: int) -> str:
        start = (T + 600 * i) * 1_000_000
        end = start + (5 + talk) * 1_000_000
        return (
            f'{{"variables": {{"uuid": "u{i}", "caller_id_number": "+12125550000",'
            f' "destination_number": "+1212555{i:04d}", "start_uepoch": "{start}",'
            f' "answer_uepoch": "{start + 5_000_000}", "end_uepoch": "{end}",'
            f' "billsec": "{talk}", "hangup_cause": "NORMAL_CLEARING"}}}}\n'
        )

    done = spool / "a_u0.cdr.json"
    done.write_text(doc(0, 60))  # written whole a moment ago
    fresh = spool / "a_u1.cdr.json"
    text = doc(1, 120)
    fresh.write_text(text[:40])
    writer = _writing(fresh, text[40:60])  # mod_json_cdr still writing it
    assert _run(config, "fs", spool) == 0
    writer.join()
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{spool}: 1 file(s) being written: left for the next run"
    assert out[-1] == (
        "read 1, stored 1, duplicates 0, rejected 0, unanswered 0, debited 0.60 USD, unfinished 1"
    )
    fresh.write_text(text)
    assert _run(config, "fs", spool) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "read 2, stored 1, duplicates 1, rejected 0, unanswered 0, debited 1.20 USD"
    )
    assert _balance(redis_server) == 20_000_000 - 1_800_000


@pytest.mark.slow
def test_acc_cdrs_export_continues_with_a_new_column_after_its_new_header(
    tmp_path: Path,
    redis_server: EmbeddedRedis,
    pg_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Kamailio's acc_cdrs table gained a cdr_extra column (src_ip) between two exports
    the operator joined with `cat` (or a nightly export appended to one file): the second
    export's header names the columns from there on. Before, that header line and every
    row after it were rejected ("8 columns; the header has 7"): the calls never billed."""
    _balance(redis_server, reset=True)
    config = _config(tmp_path, redis_server.url, pg_url)
    path = tmp_path / "acc_cdrs.csv"
    path.write_text(
        "id,start_time,end_time,duration,src_user,dst_user,callid\n"
        "1,2026-03-11 09:00:05,2026-03-11 09:01:05,60.000000,+12125550000,+12125550001,c1@x\n"
        "id,start_time,end_time,duration,src_user,dst_user,src_ip,callid\n"
        "2,2026-03-11 09:10:05,2026-03-11 09:12:05,120.000000,+12125550000,+12125550002,"
        "192.0.2.1,c2@x\n"
    )
    assert _run(config, "sbc", path) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "read 2, stored 2, duplicates 0, rejected 0, unanswered 0, debited 1.80 USD"
    )
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT call_id, gateway, billed_s FROM cdrs WHERE source = 'sbc' ORDER BY call_id"
        ).fetchall()
    assert rows == [("c1@x", "", 60), ("c2@x", "192.0.2.1", 120)]


@pytest.mark.slow
def test_csv_export_with_a_column_added_mid_file(
    tmp_path: Path,
    redis_server: EmbeddedRedis,
    pg_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A billing export joined with `cat` after its columns changed (a `via` column
    added before `to`): the second header maps the columns from there on. A row of the
    new layout without its header has its values shifted: rejected, never billed to the
    `via` number as callee (before, +1310... was billed at the row's 120 s)."""
    _balance(redis_server, reset=True)
    config = _config(tmp_path, redis_server.url, pg_url)
    path = tmp_path / "export.csv"
    new_row = f"c2,+12125550000,+13105550000,+12125550002,{T},{T + 5},{T + 125},120\n"
    path.write_text(
        "id,from,to,start,answer,end,talk\n"
        + _csv_line(0, 60)
        + f"c9,+12125550000,+13105550000,+12125550009,{T},{T + 5},{T + 125},120\n"
        + "id,from,via,to,start,answer,end,talk\n"
        + new_row
    )
    assert _run(config, "export", path) == 1
    assert capsys.readouterr().out.splitlines()[-1] == (
        "read 3, stored 2, duplicates 0, rejected 1, unanswered 0, debited 1.80 USD"
    )
    rejects = (tmp_path / "export.csv.rejects.csv").read_text()
    assert "3,8 columns; the header has 7," in rejects
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT call_id, callee, billed_s FROM cdrs WHERE source = 'export' ORDER BY call_id"
        ).fetchall()
    assert rows == [("c0", "+12125550000", 60), ("c2", "+12125550002", 120)]


def _lines_later(path: Path, lines: list[str], every_s: float = 0.4) -> threading.Thread:
    """FreeRADIUS writing a detail record's attribute lines, one at a time."""

    def write() -> None:
        for line in lines:
            time.sleep(every_s)
            with path.open("a") as fh:
                fh.write(line)

    writer = threading.Thread(target=write)
    writer.start()
    return writer


@pytest.mark.slow
def test_detail_record_being_written_is_left_for_the_next_run(
    tmp_path: Path,
    redis_server: EmbeddedRedis,
    pg_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A FreeRADIUS detail file (a record ends with a blank line) whose last record is
    being written when mediate reads it: it changes while watched, so that record is
    left for the next run, which bills it once, whole."""
    _balance(redis_server, reset=True)
    config = _config(tmp_path, redis_server.url, pg_url)
    head = (
        "Wed Mar 11 09:00:00 2026\n"
        "\tAcct-Status-Type = Stop\n"
        "\tNAS-IP-Address = 192.0.2.50\n"
        '\tAcct-Session-Id = "00000B01"\n'
        '\tCalling-Station-Id = "12125550000"\n'
        '\tCalled-Station-Id = "12125550001"\n'
        '\th323-conf-id = "h323-conf-id=AAAAAAAA BBBBBBBB CCCCCCCC DDDDDDDD"\n'
        '\th323-call-origin = "h323-call-origin=answer"\n'
        '\th323-setup-time = "h323-setup-time=09:00:00.000 UTC Wed Mar 11 2026"\n'
        '\th323-connect-time = "h323-connect-time=09:00:05.000 UTC Wed Mar 11 2026"\n'
    )
    rest = [
        '\th323-disconnect-time = "h323-disconnect-time=09:01:05.000 UTC Wed Mar 11 2026"\n',
        '\th323-disconnect-cause = "h323-disconnect-cause=10"\n',
        "\tAcct-Session-Time = 60\n",
        "\tAcct-Delay-Time = 0\n",
        '\tCisco-AVPair = "h323-ivr-out=Tariff:Unknown"\n',
        '\tCisco-AVPair = "h323-voice-quality=0"\n',
        "\tTimestamp = 1773219665\n",
        "\tAcct-Input-Octets = 0\n",
    ]
    path = tmp_path / "detail-20260311"
    path.write_text(head)
    writer = _lines_later(path, rest)
    assert _run(config, "gw", path) == 0
    writer.join()
    out = capsys.readouterr().out.splitlines()
    assert out[0] == (
        f"{path}:1: last record has no end yet and the file is being written: left for the next run"
    )
    assert out[-1] == "read 0, stored 0, duplicates 0, rejected 0, unanswered 0, unfinished 1"
    with path.open("a") as fh:
        fh.write("\n")  # the blank line that ends the record
    assert _run(config, "gw", path) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "read 1, stored 1, duplicates 0, rejected 0, unanswered 0, debited 0.60 USD"
    )
    assert _balance(redis_server) == 20_000_000 - 600_000
