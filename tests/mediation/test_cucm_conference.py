"""CUCM conference CDRs through `chargingd mediate`, into the real ledger (Redis) and
billing database (PostgreSQL). Files written from the CDR guide's examples ("Conference
Calls", "Meet-Me Conferences"): every participant's time on the bridge is a record *into*
the bridge port (finalCalledPartyNumber ``b0029901001``), whatever its direction; the
original and setup calls tell who called whom, by their leg identifiers.

Before: every bridge leg was rejected (``b0029901001`` is no number): reject noise, and
the PSTN participant's time on the bridge, which the controller's trunk carried, was
never billed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
import pytest
import redis.asyncio as aioredis

from chargingd.app.cli import main
from chargingd.core.redisconn import EmbeddedRedis
from chargingd.ledger import Ledger, Mode

T = 1_773_219_600  # 2026-03-11T09:00:00Z
HEADER = (
    '"cdrRecordType","globalCallID_callManagerId","globalCallID_callId",'
    '"origLegCallIdentifier","dateTimeOrigination","callingPartyNumber",'
    '"originalCalledPartyNumber","origCause_value","destLegIdentifier",'
    '"finalCalledPartyNumber","destCause_value","dateTimeConnect","dateTimeDisconnect",'
    '"duration","joinOnBehalfOf","comment"\n'
    "INTEGER,INTEGER,INTEGER,INTEGER,INTEGER,VARCHAR(50),VARCHAR(50),INTEGER,INTEGER,"
    "VARCHAR(50),INTEGER,INTEGER,INTEGER,INTEGER,INTEGER,VARCHAR(2048)\n"
)
CONTROLLER = (
    "ConfControllerDN=2001;ConfControllerDeviceName=SEP0003E333FEBD;ConfDeviceName=CFB_2;"
    "ConfRequestorDN=2001;ConfRequestorDeviceName=SEP0003E333FEBD"
)
BRIDGE = "b0029901001"


def rec(
    call_id: int, orig_leg: int, dest_leg: int, caller: str, called: str, start: int,
    connect: int, end: int, join: int = 0, comment: str = "", original: str = "",
) -> str:  # fmt: skip
    """One end-of-call record (cdrRecordType 1), as CUCM writes it."""
    talk = end - connect if connect else 0
    return (
        f'1,1,{call_id},{orig_leg},{start},"{caller}","{original or called}",0,{dest_leg},'
        f'"{called}",16,{connect},{end},{talk},{join},"{comment}"\n'
    )


# The guide's "Conference Calls" example, its PSTN party dialled with the access code 9:
# 2001 calls 2309 (60 s); 2001 presses conference and dials the PSTN (setup call, 20 s);
# the conference talks 360 s; the PSTN party hangs up, 2001 and 2309 are joined directly
# (55 s). CUCM writes the original and setup calls when the conference is made, the
# bridge legs and the final two parties' record when it ends.
SETUP_FILE = HEADER + (
    rec(1001, 101, 102, "2001", "2309", T, T + 2, T + 62)  # original call
    + rec(1002, 105, 106, "2001", "912125551234", T + 62, T + 65, T + 85)  # setup call
)
BRIDGE_FILE = HEADER + (
    rec(1001, 101, 103, "2001", BRIDGE, T + 85, T + 85, T + 445, 4, CONTROLLER)
    + rec(1001, 102, 104, "2309", BRIDGE, T + 85, T + 85, T + 445, 4, CONTROLLER)
    # the PSTN party's leg: its number as the gateway presents it, no access code
    + rec(1001, 106, 107, "12125551234", BRIDGE, T + 85, T + 85, T + 445, 4, CONTROLLER)
    + rec(1001, 101, 102, "2001", "2309", T + 445, T + 445, T + 500, 4, CONTROLLER)  # final two
)
# An inbound PSTN caller's call to 2001, conferenced with 4002 by 2001; a Meet-Me
# conference (the guide: 2002 dials 5001, forwarded to a bridge port).
INBOUND_FILE = HEADER + (
    rec(2001, 201, 202, "2125559876", "2001", T, T + 3, T + 30)
    + rec(2002, 205, 206, "2001", "4002", T + 30, T + 32, T + 40)
    + rec(2001, 201, 207, "2125559876", BRIDGE, T + 40, T + 40, T + 400, 4, CONTROLLER)
    + rec(2001, 202, 208, "2001", BRIDGE, T + 40, T + 40, T + 400, 4, CONTROLLER)
    + rec(2001, 206, 209, "4002", BRIDGE, T + 40, T + 40, T + 400, 4, CONTROLLER)
    + rec(3001, 301, 302, "2002", "b0019901001", T, T + 1, T + 65, original="5001")
)

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


def _config(tmp_path: Path, redis_url: str, pg_url: str) -> Path:
    tariff = tmp_path / "pbx.toml"
    tariff.write_text(TARIFF)
    config = tmp_path / "chargingd.toml"
    source = (
        'format = "cucm"\ndefault_country = "US"\ntrunk_prefix = "1"\n'
        'international_prefix = "011"\nunprefixed = "national"\naccount_rule = "fixed"\n'
        'account = "carol"\ncharge = "ledger"\naccess_codes = ["9"]\ninternal_max_digits = 5\n'
    )
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path / "var"}"\n[redis]\nurl = "{redis_url}"\n'
        f'[billing]\ndb_url = "{pg_url}"\n[rating]\nplans = {{ pbx = "{tariff}" }}\n'
        f"[mediation.sources.cucm]\n{source}[mediation.sources.cucm2]\n{source}"
    )
    return config


def _ledger(redis_server: EmbeddedRedis, balance: int | None = None) -> int:
    async def go() -> int:
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            ledger = Ledger(client)
            if balance is not None:
                await client.flushall()
                await ledger.load_scripts()
                await ledger.create_account(
                    "carol", mode=Mode.PREPAID, currency="USD", tariff="pbx",
                    balance_micros=balance, who="test",
                )  # fmt: skip
            return (await ledger.get_account("carol")).balance_micros
        finally:
            await client.aclose()

    return asyncio.run(go())


def _mediate(config: Path, source: str, *files: Path) -> tuple[int, str]:
    argv = ["mediate", *map(str, files), "--source", source, "--config", str(config), "--quiet"]
    return main(argv), ""


@pytest.mark.slow
def test_conference_bridge_legs_billed_to_who_called_the_participant(
    tmp_path: Path,
    redis_server: EmbeddedRedis,
    pg_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The PSTN participant's 360 s on the bridge is billed to 2001, who dialled it (the
    setup call's called leg is the bridge leg's origLegCallIdentifier), as 2001 ->
    +12125551234, on top of the setup call's 20 s; the controller's own leg moves
    nothing (`conference`); 2309's leg and the final record are internal. Across two
    files of one run (the setup call ends when the conference is made, its bridge legs
    when it ends: a file later). Again: duplicates, nothing debited twice."""
    _ledger(redis_server, 20_000_000)
    config = _config(tmp_path, redis_server.url, pg_url)
    first = tmp_path / "cdr_StandAloneCluster_01_202603110900_1"
    second = tmp_path / "cdr_StandAloneCluster_01_202603110907_2"
    first.write_text(SETUP_FILE)
    second.write_text(BRIDGE_FILE)
    code, _ = _mediate(config, "cucm", first, second)
    out, err = capsys.readouterr()
    assert code == 0, out + err
    # 20 s + 360 s to the US at 0.60/min = 3.80 USD
    assert out.splitlines()[-1] == (
        "read 6, stored 2, duplicates 0, rejected 0, internal 3, conference 1, unanswered 0,"
        " debited 3.80 USD"
    )
    assert _ledger(redis_server) == 20_000_000 - 3_800_000
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT call_id, caller, callee, billed_s, charged_micros, extra->>'conference',"
            " extra->>'participant', extra->>'conference_call'"
            " FROM cdrs WHERE source = 'cucm' ORDER BY call_id"
        ).fetchall()
    assert rows == [
        ("1-1001#106-107", "", "+12125551234", 360, 3_600_000, "ad hoc", "12125551234", "1-1002"),
        ("1-1002", "", "+12125551234", 20, 200_000, None, None, None),
    ]
    code, _ = _mediate(config, "cucm", first, second)
    assert code == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "read 6, stored 0, duplicates 2, rejected 0, internal 3, conference 1, unanswered 0"
    )
    assert _ledger(redis_server) == 20_000_000 - 3_800_000


@pytest.mark.slow
def test_bridge_leg_without_its_setup_call_is_rejected_saying_why(
    tmp_path: Path,
    redis_server: EmbeddedRedis,
    pg_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The bridge file alone: who called the PSTN participant is unknown, so its leg is
    rejected with a reason that says which file to mediate with it (never billed to a
    guessed payer); the controller's leg (its comment's ConfControllerDN) and the
    internal extension's leg are skipped. Mediated again with the setup call's file, it
    is billed."""
    _ledger(redis_server, 20_000_000)
    config = _config(tmp_path, redis_server.url, pg_url)
    first = tmp_path / "cdr_1"
    second = tmp_path / "cdr_2"
    first.write_text(SETUP_FILE)
    second.write_text(BRIDGE_FILE)
    code, _ = _mediate(config, "cucm2", second)
    out = capsys.readouterr().out
    assert code == 1
    assert out.splitlines()[-1] == (
        "read 4, stored 0, duplicates 0, rejected 1, internal 2, conference 1, unanswered 0"
    )
    rejects = (tmp_path / "cdr_2.rejects.csv").read_text()
    assert "conference bridge leg of 12125551234 (leg 106, to b0029901001)" in rejects
    assert "no record of this run nor stored call had leg 106" in rejects
    assert "mediate the file that holds that call together with this one" in rejects
    assert _ledger(redis_server) == 20_000_000
    code, _ = _mediate(config, "cucm2", first, second)
    assert code == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "read 6, stored 2, duplicates 0, rejected 0, internal 3, conference 1, unanswered 0,"
        " debited 3.80 USD"
    )


@pytest.mark.slow
def test_bridge_legs_a_run_after_their_setup_call_are_billed_from_the_stored_call(
    tmp_path: Path,
    redis_server: EmbeddedRedis,
    pg_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """CUCM's CDR Repository writes a file a minute; a cron run imports each new one:
    the setup call (ended when the conference was made) is stored by one run, its bridge
    legs read by a later one. The PSTN participant's leg is decided with the stored
    setup call (its called leg): billed to who dialled it, as in one run; again, a
    duplicate."""
    _ledger(redis_server, 20_000_000)
    config = _config(tmp_path, redis_server.url, pg_url)
    first = tmp_path / "cdr_StandAloneCluster_01_202603110900_1"
    second = tmp_path / "cdr_StandAloneCluster_01_202603110907_2"
    first.write_text(SETUP_FILE)
    second.write_text(BRIDGE_FILE)
    assert _mediate(config, "cucm", first)[0] == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "read 2, stored 1, duplicates 0, rejected 0, internal 1, unanswered 0, debited 0.20 USD"
    )
    for stored, duplicates, debited in ((1, 0, ", debited 3.60 USD"), (0, 1, "")):
        code, _ = _mediate(config, "cucm", second)
        out = capsys.readouterr().out
        assert code == 0, out
        assert out.splitlines()[-1] == (
            f"read 4, stored {stored}, duplicates {duplicates}, rejected 0, internal 2,"
            f" conference 1, unanswered 0{debited}"
        )
    assert _ledger(redis_server) == 20_000_000 - 3_800_000
    with psycopg.connect(pg_url) as conn:
        row = conn.execute(
            "SELECT caller, callee, billed_s, extra->>'conference_call', extra->>'caller_raw',"
            " extra->>'dialled' FROM cdrs WHERE source = 'cucm' AND call_id = '1-1001#106-107'"
        ).fetchone()
    assert row == ("", "+12125551234", 360, "1-1002", "2001", "912125551234")


@pytest.mark.slow
def test_inbound_caller_in_a_conference_and_meet_me_bill_nothing(
    tmp_path: Path,
    redis_server: EmbeddedRedis,
    pg_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An inbound PSTN caller conferenced by the extension it called placed its own call:
    its bridge leg bills the PBX nothing (`conference`); the extension's leg is the
    inbound call (internal), 4002's the setup call to it (internal); a Meet-Me
    participant's leg is a call to the number dialled (5001: internal). Nothing is
    rejected, nothing debited."""
    _ledger(redis_server, 20_000_000)
    config = _config(tmp_path, redis_server.url, pg_url)
    path = tmp_path / "cdr_inbound"
    path.write_text(INBOUND_FILE)
    code, _ = _mediate(config, "cucm", path)
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert out.splitlines()[-1] == (
        "read 6, stored 0, duplicates 0, rejected 0, internal 5, conference 1, unanswered 0"
    )
    assert _ledger(redis_server) == 20_000_000


@pytest.mark.slow
def test_abandoned_calls_are_stored_unanswered_not_rejected(
    tmp_path: Path,
    redis_server: EmbeddedRedis,
    pg_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The guide's "Abandoned Calls" (CdrLogCallsWithZeroDurationFlag on): 2001 goes off
    hook and on hook without dialling (originalCalledPartyNumber and
    finalCalledPartyNumber empty, dateTimeConnect 0). Nothing to bill: stored
    unanswered, no callee. Before, each was a reject ("callee '' is not a telephone
    number"): exit 1 on every import of a normal day. An answered record without a
    callee is still rejected."""
    _ledger(redis_server, 20_000_000)
    config = _config(tmp_path, redis_server.url, pg_url)
    path = tmp_path / "cdr_abandoned"
    path.write_text(
        HEADER
        + rec(4001, 401, 0, "2001", "", T, 0, T + 3)
        + rec(4002, 403, 404, "2001", "912125551234", T + 10, 0, T + 25)  # rang, not answered
        + rec(4003, 405, 406, "2001", "", T + 30, T + 32, T + 90)  # answered, no callee
    )
    code, _ = _mediate(config, "cucm", path)
    out = capsys.readouterr().out
    assert code == 1, out
    assert out.splitlines()[-1] == ("read 3, stored 2, duplicates 0, rejected 1, unanswered 2")
    assert (
        "callee '' is not a telephone number"
        in (tmp_path / "cdr_abandoned.rejects.csv").read_text()
    )
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT call_id, callee, status, charged_micros FROM cdrs WHERE source = 'cucm'"
            " ORDER BY call_id"
        ).fetchall()
    assert rows == [("1-4001", "", "unanswered", 0), ("1-4002", "+12125551234", "unanswered", 0)]
    assert _ledger(redis_server) == 20_000_000


def test_a_joined_bridge_leg_is_no_meet_me_call_whatever_its_original_called_number() -> None:
    """Only a call forwarded to the bridge (no join) is a Meet-Me participant's: an ad
    hoc bridge leg (joinOnBehalfOf 4) whose originalCalledPartyNumber names a party, its
    setup call not in the run, is left for the stored calls (leg BRIDGE), never billed
    as a call from the PSTN participant to that number (or skipped as internal)."""
    from chargingd.core.config.mediation import SourceConfig
    from chargingd.mediation.normalise import Call
    from chargingd.mediation.pipeline import normalised

    source = SourceConfig(
        format="cucm", charge="ledger", default_country="US", trunk_prefix="1",
        international_prefix="011", unprefixed="national", account_rule="fixed",
        account="carol", internal_max_digits=5,
    )  # fmt: skip
    pstn = rec(1001, 106, 107, "12125551234", BRIDGE, T, T, T + 360, 4, CONTROLLER, "2001")
    meet = rec(3001, 301, 302, "12125550000", "b0019901001", T, T + 1, T + 65, original="5001")
    items = [item for _, item in normalised([*HEADER.splitlines(True), pstn, meet], "c", source)]
    assert isinstance(items[0], Call)
    assert (items[0].leg, items[0].callee) == ("bridge", "+12125551234")
    assert type(items[1]).__name__ == "Internal"  # 12125550000 dialled 5001: internal
