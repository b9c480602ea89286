"""Calls that cross an hourly file rotation, through `chargingd mediate` on a real Redis
ledger and the real billing database: Kamailio acc writes a call's INVITE in one file
and its BYE in the next (a Cisco gateway its Start, then its Stop). Each half was
rejected, the call never billed; now the first half is kept until the other comes."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import pytest
import redis.asyncio as aioredis
from paths import FIXTURES

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
    paid = ", debited 0.1125, pending 1"
    assert mediate(config, "sbc", capsys, b) == (0, summary(2, 1, 0, 0, paid))
    paid = ", debited 0.08, pending 1"
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
    assert mediate(config, "sbc", capsys, d) == (1, summary(1, 1, 0, 1, ", debited 0.055"))
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
    assert mediate(config, "sbc", capsys, f) == (0, summary(1, 1, 0, 0, ", debited 0.55"))
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
    assert mediate(config, "gw", capsys, b) == (0, summary(1, 1, 0, 0, ", debited 0.1125"))
    # Both again: the Start is no longer kept (its call is stored), the Stop a duplicate.
    assert mediate(config, "gw", capsys, a, b) == (0, summary(2, 0, 2, 0))
    assert cdrs(pg_url, "gw") == [("3D6A4C2B1A2B11E08001D0C789A1B2C3", 125, 112_500, 112_500)]
