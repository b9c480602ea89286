"""Calls that cross an hourly file rotation, through `chargingd mediate` on a real Redis
ledger and the real billing database: Kamailio acc writes a call's INVITE in one file
and its BYE in the next (a Cisco gateway its Start, then its Stop). Each half was
rejected, the call never billed; now the first half is kept until the other comes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import redis.asyncio as aioredis
from paths import FIXTURES, REPO

from chargingd.app.cli import main
from chargingd.core.redisconn import EmbeddedRedis
from chargingd.ledger import Ledger, Mode

KAM = "Dec  5 10:00:00 sbc1 kamailio[2211]: NOTICE: acc [acc.c:284]: ACC: transaction answered: "
T = 1_796_464_800  # 2026-12-05T10:00:00Z


def acc(method: str, when: int, call_id: str, tags: tuple[str, str] = ("f", "t")) -> str:
    return (
        f"{KAM}timestamp={when};method={method};from_tag={tags[0]};to_tag={tags[1]};"
        f"call_id={call_id};code=200;reason=OK;src_user=4930123456;dst_user=4989987654\n"
    )


def cisco(status: str, origin: str, session: str, talk: int | None = None) -> str:
    lines = [
        "Sat Dec  5 10:02:10 2026",
        f'\tAcct-Session-Id = "{session}"',
        '\tCalling-Station-Id = "4930123456"',
        '\tCalled-Station-Id = "4989987654"',
        '\th323-setup-time = "h323-setup-time=*10:00:00.000 UTC Sat Dec 5 2026"',
        '\th323-conf-id = "h323-conf-id=3D6A4C2B 1A2B11E0 8001D0C7 89A1B2C3"',
        f'\th323-call-origin = "h323-call-origin={origin}"',
        f"\tAcct-Status-Type = {status}",
        "\tNAS-IP-Address = 192.0.2.1",
    ]
    if talk is not None:
        lines += [
            '\th323-connect-time = "h323-connect-time=*10:00:05.000 UTC Sat Dec 5 2026"',
            '\th323-disconnect-time = "h323-disconnect-time=*10:02:10.000 UTC Sat Dec 5 2026"',
            '\th323-disconnect-cause = "h323-disconnect-cause=10"',
            f"\tAcct-Session-Time = {talk}",
        ]
    return "\n".join(lines) + "\n\n"


@pytest.fixture
def config(tmp_path: Path, redis_server: EmbeddedRedis, pg_url: str) -> Path:
    async def setup() -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            await client.flushall()
            ledger = Ledger(client)
            await ledger.load_scripts()
            await ledger.create_account(
                "carol", mode=Mode.POSTPAID, currency="EUR", tariff="std",
                credit_limit_micros=10_000_000, who="test",
            )  # fmt: skip
        finally:
            await client.aclose()

    asyncio.run(setup())
    source = 'default_country = "DE"\ntenant = "chargingd.test"\ncharge = "ledger"\n'
    source += 'account_rule = "fixed"\naccount = "carol"\n'
    path = tmp_path / "c.toml"
    path.write_text(
        f'[server]\ndata_dir = "{tmp_path / "var"}"\n[redis]\nurl = "{redis_server.url}"\n'
        f'[billing]\ndb_url = "{pg_url}"\n'
        f'[rating]\nplans = {{ std = "{FIXTURES / "cdr" / "tariff_tp"}" }}\n'
        f'[mediation.sources.sbc]\nformat = "kamailio"\n{source}'
        f'[mediation.sources.gw]\nformat = "cisco_radius"\n{source}'
        f'[mediation.sources.fs]\nformat = "freeswitch"\nlegs = "ab"\n{source}'
        f'[mediation.sources.fsa]\nformat = "freeswitch"\n{source}'
    )
    return path


def summary(read: int, stored: int, duplicates: int, rejected: int, tail: str = "") -> str:
    return f"read {read}, stored {stored}, duplicates {duplicates}, rejected {rejected}, " + (
        f"unanswered 0{tail}"
    )


def mediate(
    config: Path, source: str, capsys: pytest.CaptureFixture[str], *files: Path
) -> tuple[int, str]:
    argv = ["mediate", *map(str, files), "--source", source, "--config", str(config)]
    code = main([*argv, "--quiet"])
    return code, capsys.readouterr().out.strip().splitlines()[-1]


def cdrs(pg_url: str, source: str) -> list[tuple[object, ...]]:
    with psycopg.connect(pg_url) as conn:
        return conn.execute(
            "SELECT call_id, duration_s, cost_micros, charged_micros FROM cdrs"
            " WHERE source = %s ORDER BY call_id",
            (source,),
        ).fetchall()


def test_kamailio_call_across_a_rotation_is_billed_once(
    tmp_path: Path, config: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b, c, d = (tmp_path / f"acc.log.{n}" for n in "abcd")
    a.write_text(acc("INVITE", T, "k1"))
    # k1's BYE (the callee hangs up: tags swapped); k2's BYE comes before its INVITE's
    # file is imported (files out of order).
    b.write_text(acc("BYE", T + 125, "k1", ("t", "f")) + acc("BYE", T + 3660, "k2"))
    c.write_text(acc("INVITE", T + 3600, "k2") + acc("INVITE", T + 3700, "k3"))
    assert mediate(config, "sbc", capsys, a) == (0, summary(1, 0, 0, 0, ", pending 1"))
    paid = ", debited 0.1125 EUR, pending 1"
    assert mediate(config, "sbc", capsys, b) == (0, summary(2, 1, 0, 0, paid))
    paid = ", debited 0.08 EUR, pending 1"
    assert mediate(config, "sbc", capsys, c) == (0, summary(2, 1, 0, 0, paid))
    # 125 s and 60 s to Munich: 0.05 + 0.03/min per second.
    billed = [("k1", 125, 112_500, 112_500), ("k2", 60, 80_000, 80_000)]
    assert cdrs(pg_url, "sbc") == billed
    # Every file again, in one run: nothing billed twice, nothing kept again.
    assert mediate(config, "sbc", capsys, a, b, c) == (0, summary(5, 0, 4, 0, ", pending 1"))
    assert cdrs(pg_url, "sbc") == billed
    # What is kept, listed.
    assert main(["mediate", "--pending", "--source", "sbc", "--config", str(config)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[-1] == "pending 1"
    assert listed[0].endswith(
        f" UTC  INVITE  k3  {c}:2  incomplete: INVITE without BYE at end of file"
    )
    # k3 waited past pending_max_age_s: the next run rejects it, saying why.
    with psycopg.connect(pg_url) as conn:
        conn.execute("UPDATE mediation_pending SET since = since - interval '1 day 1 second'")
    d.write_text(acc("INVITE", T + 7200, "k4") + acc("BYE", T + 7210, "k4"))
    assert mediate(config, "sbc", capsys, d) == (1, summary(1, 1, 0, 1, ", debited 0.055 EUR"))
    rejects = (tmp_path / "acc.log.d.rejects.csv").read_text()
    assert "incomplete: INVITE without BYE at end of file; kept since " in rejects
    assert f"(from {c}:2), its other half never came within pending_max_age_s = 86400" in rejects
    assert "call_id=k3" in rejects
    assert "k4" in str(cdrs(pg_url, "sbc"))
    # A session timer's re-INVITE (RFC 4028) in the next file, then the BYE: the call
    # began at the INVITE kept from the file before, not at the re-INVITE (1000 s).
    e, f = tmp_path / "acc.log.e", tmp_path / "acc.log.f"
    e.write_text(acc("INVITE", T + 8000, "k5"))
    f.write_text(acc("INVITE", T + 8900, "k5", ("t", "f")) + acc("BYE", T + 9000, "k5"))
    assert mediate(config, "sbc", capsys, e) == (0, summary(1, 0, 0, 0, ", pending 1"))
    assert mediate(config, "sbc", capsys, f) == (0, summary(1, 1, 0, 0, ", debited 0.55 EUR"))
    assert cdrs(pg_url, "sbc")[-1] == ("k5", 1000, 550_000, 550_000)
    assert balance(config) == -(112_500 + 80_000 + 55_000 + 550_000)  # each call once


def balance(config: Path) -> int:
    url = config.read_text().split('url = "')[1].split('"')[0]

    async def read() -> int:
        client = aioredis.Redis.from_url(url)
        try:
            return (await Ledger(client).get_account("carol")).balance_micros
        finally:
            await client.aclose()

    return asyncio.run(read())


def test_cisco_start_and_stop_in_two_files(
    tmp_path: Path, config: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "detail-10", tmp_path / "detail-11"
    a.write_text(cisco("Start", "answer", "2A") + cisco("Start", "originate", "2B"))
    b.write_text(cisco("Stop", "originate", "2B", 124) + cisco("Stop", "answer", "2A", 125))
    assert mediate(config, "gw", capsys, a) == (0, summary(1, 0, 0, 0, ", pending 1"))
    assert mediate(config, "gw", capsys, b) == (0, summary(1, 1, 0, 0, ", debited 0.1125 EUR"))
    # Both again: the Start is no longer kept (its call is stored), the Stop a duplicate.
    assert mediate(config, "gw", capsys, a, b) == (0, summary(2, 0, 2, 0))
    assert cdrs(pg_url, "gw") == [("3D6A4C2B1A2B11E08001D0C789A1B2C3", 125, 112_500, 112_500)]


def fs(uuid: str, start: str, end: str, billsec: int, bleg: str = "", name: str = "Al") -> str:
    """A mod_cdr_csv line of the example template (UTC stamps): answered billsec seconds
    before its end (unanswered when 0)."""
    day = "2026-12-05 "
    answer = "" if not billsec else f"{day}{_minus(end, billsec)}"
    values = [
        name, "4930123456", "4989987654", "default", day + start, answer, day + end,
        str(billsec + 5), str(billsec), "NORMAL_CLEARING" if billsec else "NO_ANSWER",
        uuid, bleg, "", "PCMA", "PCMA",
    ]  # fmt: skip
    return ",".join(f'"{v}"' for v in values) + "\n"


def _minus(clock: str, seconds: int) -> str:
    h, m, s = map(int, clock.split(":"))
    t = h * 3600 + m * 60 + s - seconds
    return f"{t // 3600:02d}:{t // 60 % 60:02d}:{t % 60:02d}"


def test_freeswitch_legs_ab_call_across_a_rotation_is_billed_once(
    tmp_path: Path, config: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """mod_cdr_csv with legs = "ab" writes each leg of a bridged call when it hangs up;
    `fsctl cdr_csv rotate` between the two hang-ups puts them in two files, in either
    order. Each B-leg's line, alone in its file, was billed as a call of its own (the
    call billed twice). Now: the call is billed once, from its A-leg, and the files
    imported again change nothing."""
    one, two = tmp_path / "Master.csv.1", tmp_path / "Master.csv.2"
    one.write_text(
        fs("a1", "10:00:00", "10:02:10", 125, bleg="b1")  # both legs in the file
        + fs("b1", "10:00:01", "10:02:10", 125)
        + fs("a2", "10:58:00", "10:59:59", 60, bleg="b2")  # A-leg first, B-leg next file
        + fs("b3", "10:57:01", "10:59:59", 60)  # B-leg first (the callee hung up)
        + fs("c6", "10:58:00", "10:59:30", 60, name="IVR")  # alone: a call of its own
    )
    two.write_text(
        fs("b2", "10:58:01", "11:00:00", 60)
        + fs("a3", "10:57:00", "11:00:00", 60, bleg="b3")
        + fs("c4", "11:05:00", "11:10:00", 60)  # alone, not at an end: billed at once
        + fs("c5", "11:29:00", "11:30:00", 0)  # unanswered: nothing to keep
    )
    paid = ", b-legs 1, unanswered 0, debited 0.1925 EUR, pending 2"
    assert mediate(config, "fs", capsys, one) == (
        0, f"read 5, stored 2, duplicates 0, rejected 0{paid}"
    )  # fmt: skip
    # b3 and c6 are kept: an A-leg of the next file may name them.
    assert main(["mediate", "--pending", "--source", "fs", "--config", str(config)]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[-1] == "pending 2" and f"  leg  b3  {one}:4  answered at the end" in listed[0]
    # b2 is a2's B-leg (a2 is stored), b3 a3's; c6 was no B-leg: billed, once no A-leg
    # of a later file could name it (the run read calls ending after it).
    paid = ", b-legs 2, unanswered 1, debited 0.24 EUR"
    assert mediate(config, "fs", capsys, two) == (
        0, f"read 4, stored 4, duplicates 0, rejected 0{paid}"
    )  # fmt: skip
    billed = [
        ("a1", 125, 112_500, 112_500), ("a2", 60, 80_000, 80_000), ("a3", 60, 80_000, 80_000),
        ("c4", 60, 80_000, 80_000), ("c5", 0, 0, 0), ("c6", 60, 80_000, 80_000),
    ]  # fmt: skip
    assert cdrs(pg_url, "fs") == billed
    # Both files again, in one run, then each alone, then in the other order: nothing
    # is billed again, nothing kept again.
    again = "duplicates 6, rejected 0, b-legs 3, unanswered 1"
    assert mediate(config, "fs", capsys, one, two) == (0, f"read 9, stored 0, {again}")
    assert mediate(config, "fs", capsys, one) == (
        0, "read 5, stored 0, duplicates 3, rejected 0, b-legs 2, unanswered 0"
    )  # fmt: skip
    assert mediate(config, "fs", capsys, two, one) == (0, f"read 9, stored 0, {again}")
    assert cdrs(pg_url, "fs") == billed
    assert balance(config) == -(112_500 + 4 * 80_000)


def test_freeswitch_legs_ab_line_kept_at_a_file_end_is_billed_after_the_bound(
    tmp_path: Path, config: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A line kept at the end of its file that no later file's A-leg names (no later
    file comes: the switch was shut down) is billed once it was kept longer than
    pending_max_age_s, never lost; the same files with legs = "a" (the default) are
    read as before: every line a call."""
    last = tmp_path / "Master.csv.9"
    last.write_text(fs("z1", "12:00:00", "12:01:00", 60))
    tail = "unanswered 0, pending 1"
    assert mediate(config, "fs", capsys, last) == (
        0,
        f"read 1, stored 0, duplicates 0, rejected 0, {tail}",
    )
    assert mediate(config, "fs", capsys, last) == (
        0,
        f"read 1, stored 0, duplicates 0, rejected 0, {tail}",
    )
    with psycopg.connect(pg_url) as conn:
        conn.execute("UPDATE mediation_pending SET since = since - interval '1 day 1 second'")
    assert mediate(config, "fs", capsys, last) == (
        0, "read 1, stored 1, duplicates 0, rejected 0, unanswered 0, debited 0.08 EUR"
    )  # fmt: skip
    assert cdrs(pg_url, "fs") == [("z1", 60, 80_000, 80_000)]
    # legs = "a": both legs of a call are billed (a file of A-legs has no B-leg to skip).
    one = tmp_path / "Master.csv.1"
    one.write_text(
        fs("a2", "10:58:00", "10:59:59", 60, bleg="b2") + fs("b3", "10:57:01", "10:59:59", 60)
    )
    assert mediate(config, "fsa", capsys, one) == (
        0, "read 2, stored 2, duplicates 0, rejected 0, unanswered 0, debited 0.16 EUR"
    )  # fmt: skip


def _waiting_on_advisory_locks(pg_url: str) -> int:
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchone()
        return int(row[0]) if row else 0


def _until(what: Callable[[], bool], seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not what():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_freeswitch_legs_ab_two_imports_at_once_bill_the_call_once(
    tmp_path: Path, config: Path, pg_url: str
) -> None:
    """Two `chargingd mediate` runs of one legs = "ab" source at once (a cron run still
    going when the next starts), of adjacent files: the A-leg ends the earlier file, its
    B-leg starts the later one. The later file's import read the B-leg before the other
    stored its A-leg and billed it as a call of its own: the call billed twice. The
    interleaving is made every time: the test holds the lock the first import takes to
    keep the answered line that ends its file (t9), so it stops after deciding its
    A-leg and before storing it, and the second import starts then. Now the second
    waits for the first (saying so), then skips the B-leg: one call, the A-leg's. An
    import of another source is not held up meanwhile."""
    one, two = tmp_path / "Master.csv.1", tmp_path / "Master.csv.2"
    one.write_text(
        fs("a2", "10:58:00", "10:59:58", 60, bleg="b2")  # its B-leg is in the next file
        + fs("t9", "10:58:30", "10:59:59", 60, name="IVR")  # kept: an A-leg may name it
    )
    two.write_text(
        fs("b2", "10:58:01", "11:00:00", 59)  # the B-leg, first line of the later file
        + fs("c5", "11:29:00", "11:30:00", 0)
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def start(path: Path, source: str = "fs") -> subprocess.Popen[str]:
        argv = ["mediate", str(path), "--source", source, "--config", str(config), "--quiet"]
        return subprocess.Popen(
            [sys.executable, "-m", "chargingd", *argv],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    with psycopg.connect(pg_url, autocommit=True) as hold:
        hold.execute("SELECT pg_advisory_lock(hashtextextended('fs/t9', 0))")
        first = start(one)
        _until(lambda: _waiting_on_advisory_locks(pg_url) == 1)  # held before its store
        # Another source's import meanwhile is not held up (legs = "a": both lines billed).
        other = start(two, "fsa")
        assert other.communicate(timeout=60)[0].startswith("read 2, stored 2")
        second = start(two)
        # The second import ends (it billed the B-leg), or waits for the first.
        _until(lambda: second.poll() is not None or _waiting_on_advisory_locks(pg_url) == 2)
        hold.execute("SELECT pg_advisory_unlock_all()")
        out1, err1 = first.communicate(timeout=60)
        out2, err2 = second.communicate(timeout=60)
    assert (first.returncode, second.returncode) == (0, 0), (err1, err2)
    # a2 billed once, at its own figures (not b2's 59 s); t9, kept at the end of the
    # earlier file, billed as a call of its own once the later file came without naming it.
    assert cdrs(pg_url, "fs") == [
        ("a2", 60, 80_000, 80_000), ("c5", 0, 0, 0), ("t9", 60, 80_000, 80_000)
    ]  # fmt: skip
    assert balance(config) == -(2 * 80_000 + 79_500)  # and fsa's b2
    assert "pending 1" in out1 and "b-legs 1" in out2, (out1, out2)
    assert "waiting for another import of source fs" in err2, err2
