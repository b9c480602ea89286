"""PBX CDRs: outside-line access codes and internal extensions (docs/mediation.md, "Access
codes and internal calls"). Real files in a temp dir, read by the real readers and the
number normalisation they share; the summary and exit status through `chargingd
mediate`; one import into the real ledger (Redis) and billing database (PostgreSQL).

A CUCM user dials 9 for an outside line (912125551234, 9011442079460000) and the CDR
keeps the 9 unless the route pattern discarded it; calls between extensions (4001 ->
4002) are in the same file. Before `access_codes` / `internal_max_digits` every such row
was rejected, or billed to the wrong country (912125551234 read as India)."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import redis.asyncio as aioredis

from chargingd.app.cli import main
from chargingd.core.config import ConfigError, config_from_dict
from chargingd.core.config.mediation import SourceConfig
from chargingd.core.redisconn import EmbeddedRedis
from chargingd.ledger import Ledger, Mode
from chargingd.mediation.normalise import Call
from chargingd.mediation.pipeline import normalised, open_cdr_file
from chargingd.mediation.records import Internal, Reject

START = 1_773_219_600  # 2026-03-11T09:00:00Z

# (caller, callee as the PBX wrote it, answered)
Row = tuple[str, str, bool]
NANP_ROWS: list[Row] = [
    ("4001", "912125551234", True),  # 9, then 1 212 555 1234
    ("4001", "9011442079460000", True),  # 9, then 011 44 20 7946 0000
    ("4001", "9095551234", True),  # a route that discarded the 9: area code 909
    ("4001", r"\+442079460000", True),  # CUCM's escaped plus: no access code
    ("4001", "4002", True),  # extension to extension
    ("4002", "4711", False),  # an internal call nobody answered
]
# callee -> (E.164, extra "dialled", extra "access_code"); None: internal
NANP_EXPECTED: list[tuple[str, str, str] | None] = [
    ("+12125551234", "912125551234", "9"),
    ("+442079460000", "9011442079460000", "9"),
    # Naively stripped, 095551234 (no number): the whole is the number.
    ("+19095551234", "", ""),
    ("+442079460000", "", ""),
    None,
    None,
]
NANP = {
    "default_country": "US",
    "trunk_prefix": "1",
    "international_prefix": "011",
    "unprefixed": "national",
    "account_rule": "fixed",
    "account": "carol",
}


# -- the formats' files, as their switches write them ------------------------------------


CUCM_HEADER = (
    '"cdrRecordType","globalCallID_callManagerId","globalCallID_callId",'
    '"origLegCallIdentifier","dateTimeOrigination","callingPartyNumber",'
    '"originalCalledPartyNumber","origCause_value","destLegIdentifier",'
    '"finalCalledPartyNumber","destCause_value","dateTimeConnect","dateTimeDisconnect",'
    '"duration"\n'
    "INTEGER,INTEGER,INTEGER,INTEGER,INTEGER,VARCHAR(50),VARCHAR(50),INTEGER,INTEGER,"
    "VARCHAR(50),INTEGER,INTEGER,INTEGER,INTEGER\n"
)


def _times(i: int, answered: bool) -> tuple[int, int, int, int]:
    """start, answer (0: none), end, talk seconds of the i-th call."""
    start = START + 600 * i
    talk = 60 + i if answered else 0
    answer = start + 5 if answered else 0
    return start, answer, (answer or start) + talk + (0 if answered else 20), talk


def _cucm(rows: list[Row]) -> str:
    lines = [CUCM_HEADER]
    for i, (caller, callee, answered) in enumerate(rows):
        start, answer, end, talk = _times(i, answered)
        lines.append(
            f'1,1,{7001 + i},{101 + 2 * i},{start},"{caller}","{callee}",0,{102 + 2 * i},'
            f'"{callee}",16,{answer},{end},{talk}\n'
        )
    return "".join(lines)


def _stamp(epoch: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S") if epoch else ""


def _asterisk(rows: list[Row]) -> str:
    """cdr_csv Master.csv, cdr.conf's defaults (16 columns), usegmtime."""
    out = io.StringIO()
    writer = csv.writer(out, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
    for i, (caller, callee, answered) in enumerate(rows):
        start, answer, end, talk = _times(i, answered)
        writer.writerow(
            ["acc1", caller, callee, "from-internal", f'"Ext" <{caller}>',
             f"SIP/{caller}-{i:08x}", f"SIP/trunk-{i:08x}", "Dial", f"SIP/trunk/{callee}",
             _stamp(start), _stamp(answer), _stamp(end), end - start, talk,
             "ANSWERED" if answered else "NO ANSWER", "BILLING"]
        )  # fmt: skip
    return out.getvalue()


def _freeswitch(rows: list[Row]) -> str:
    """mod_cdr_csv's `example` template (times UTC: the source's time_zone)."""
    lines = []
    for i, (caller, callee, answered) in enumerate(rows):
        start, answer, end, talk = _times(i, answered)
        values = ["Ext", caller, callee, "default", _stamp(start), _stamp(answer),
                  _stamp(end), str(end - start), str(talk),
                  "NORMAL_CLEARING" if answered else "NO_ANSWER",
                  f"5d0e3c1a-7f5b-4e2a-9c1d-{i:012d}", "", "acc1", "PCMA", "PCMA"]  # fmt: skip
        lines.append(",".join(f'"{v}"' for v in values) + "\n")
    return "".join(lines)


def _csv(rows: list[Row]) -> str:
    lines = ["id,from,to,start,answer,end,talk\n"]
    for i, (caller, callee, answered) in enumerate(rows):
        start, answer, end, talk = _times(i, answered)
        lines.append(f"c{i},{caller},{callee},{start},{answer or ''},{end},{talk}\n")
    return "".join(lines)


CSV_MAPPING: dict[str, str | int] = {
    "call_id": "id", "caller": "from", "callee": "to", "start": "start",
    "answer": "answer", "end": "end", "billsec": "talk",
}  # fmt: skip
WRITERS: dict[str, tuple[Callable[[list[Row]], str], dict[str, object]]] = {
    "cucm": (_cucm, {}),
    "asterisk": (_asterisk, {"usegmtime": True}),
    "freeswitch": (_freeswitch, {}),
    "csv": (_csv, {"mapping": CSV_MAPPING, "time_format": "epoch"}),
}


def _source(fmt: str, **options: object) -> SourceConfig:
    return SourceConfig(format=fmt, charge="ledger", **{**WRITERS[fmt][1], **options})  # type: ignore[arg-type]


def _read(tmp_path: Path, fmt: str, rows: list[Row], source: SourceConfig) -> list[Call | Reject]:
    """The file as the switch writes it, read back by the real reader and normaliser."""
    path = tmp_path / f"{fmt}.cdr"
    path.write_text(WRITERS[fmt][0](rows))
    with open_cdr_file(path) as fh:
        return [item for _, item in normalised(fh, "pbx", source)]


# -- access codes and extensions, every format that reads dialled numbers ----------------


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_access_code_stripped_and_extensions_skipped(tmp_path: Path, fmt: str) -> None:
    source = _source(fmt, access_codes=("9",), internal_max_digits=5, **NANP)
    items = _read(tmp_path, fmt, NANP_ROWS, source)
    assert len(items) == len(NANP_ROWS)
    for (_, callee, _), item, expected in zip(NANP_ROWS, items, NANP_EXPECTED, strict=True):
        if expected is None:
            assert isinstance(item, Internal), (callee, item)
            assert item.reason == (
                f"internal call: callee {callee!r} is an extension (internal_max_digits = 5)"
            )
            continue
        assert isinstance(item, Call), (callee, item)
        e164, dialled, code = expected
        assert item.callee == e164, callee
        assert item.extra.get("dialled", "") == dialled, callee
        assert item.extra.get("access_code", "") == code, callee
        assert item.extra["caller_raw"] == "4001"  # an extension pays nothing (rule fixed)


@pytest.mark.parametrize("fmt", sorted(WRITERS))
def test_without_the_options_nothing_changes(tmp_path: Path, fmt: str) -> None:
    """No option set: the 9-calls and the extensions are rejected as before (they are
    no possible numbers under North American rules), the rest read as before."""
    items = _read(tmp_path, fmt, NANP_ROWS, _source(fmt, **NANP))
    reasons = [i.reason if isinstance(i, Reject) else i.callee for i in items]  # type: ignore[union-attr]
    assert reasons == [
        "callee '912125551234' is not a possible E.164 number",
        "callee '9011442079460000' is not a telephone number",
        "+19095551234",
        "+442079460000",
        "callee '4002' is not a possible E.164 number",
        "callee '4711' is not a possible E.164 number",
    ]
    assert not any(isinstance(i, Internal) for i in items)
    assert all("dialled" not in i.extra for i in items if isinstance(i, Call))


def test_without_access_codes_a_9_call_reads_as_india(tmp_path: Path) -> None:
    """Why the code wins when both readings are possible: under the default rules
    (unprefixed international) 912125551234 is India's +91 212 555 1234, and is billed
    so without the option; with it, New York."""
    rows: list[Row] = [("4001", "912125551234", True)]
    fixed = {"account_rule": "fixed", "account": "carol"}
    (whole,) = _read(tmp_path, "cucm", rows, _source("cucm", **fixed))
    assert isinstance(whole, Call) and whole.callee == "+912125551234"
    (coded,) = _read(tmp_path, "cucm", rows, _source("cucm", access_codes=("9",), **fixed))
    assert isinstance(coded, Call) and coded.callee == "+12125551234"
    assert coded.extra["dialled"] == "912125551234"


def test_european_access_code_0_before_national_and_international(tmp_path: Path) -> None:
    """Germany: 0 for an outside line, then the national number (0 030 1234567 =
    00301234567, what the international prefix 00 looks like) or 00 + international
    (0 00 44...). 0 0201 234567 (Essen) read whole would be Egypt, +20 1234567."""
    rows: list[Row] = [
        ("2001", "00301234567", True),
        ("2001", "000442079460000", True),
        ("2001", "00201234567", True),
        # Click-to-dial of a stored +E.164 number puts the code before its plus.
        ("2001", "0+4989987654", True),
        ("2001", "2002", True),
    ]
    de = {"default_country": "DE", "account_rule": "fixed", "account": "carol"}
    for fmt in ("asterisk", "cucm"):
        source = _source(fmt, access_codes=("0",), internal_max_digits=4, **de)
        items = _read(tmp_path, fmt, rows, source)
        got = [
            (i.callee, i.extra.get("dialled", "")) if isinstance(i, Call) else type(i).__name__
            for i in items
        ]
        assert got == [
            ("+49301234567", "00301234567"),
            ("+442079460000", "000442079460000"),
            ("+49201234567", "00201234567"),
            ("+4989987654", "0+4989987654"),
            "Internal",
        ], fmt
        without = _read(tmp_path, fmt, rows[2:3], _source(fmt, **de))
        assert [i.callee for i in without if isinstance(i, Call)] == ["+201234567"]  # Egypt


def test_longest_access_code_first_then_shorter_then_none(tmp_path: Path) -> None:
    """Codes ["8", "81"] (a second trunk behind 81): 81 first where it matches; else 8;
    where no reading without a code is a number, the callee whole."""
    rows: list[Row] = [
        ("4001", "8112125551234", True),  # 81 + 1 212 555 1234 (8 + 112...: no number)
        ("4001", "8011442079460000", True),  # 8 + 011 44 20 7946 0000
        ("4001", "8185551234", True),  # a discarding route: area code 818
    ]
    source = _source("cucm", access_codes=("8", "81"), **NANP)
    got = [
        (i.callee, i.extra.get("access_code", "")) for i in _read(tmp_path, "cucm", rows, source)
    ]  # type: ignore[union-attr]
    assert got == [("+12125551234", "81"), ("+442079460000", "8"), ("+18185551234", "")]


# -- the run's summary and exit status -----------------------------------------------------


US_TARIFF = """
[tariff]
id = "pbx"
currency = "USD"
timezone = "UTC"
decimals = 6
[destinations]
US = ["1"]
UK = ["44"]
IN = ["91"]
[rates.US]
rate = "0.60"
unit = "60s"
increment = "1s"
[rates.UK]
rate = "1.20"
unit = "60s"
increment = "1s"
[rates.IN]
rate = "6.00"
unit = "60s"
increment = "1s"
[plans.P]
[[plans.P.rates]]
destinations = ["US"]
rate = "US"
[[plans.P.rates]]
destinations = ["UK"]
rate = "UK"
[[plans.P.rates]]
destinations = ["IN"]
rate = "IN"
[[profiles]]
subject = "*any"
plan = "P"
from = 2020-01-01T00:00:00Z
"""


def _config(tmp_path: Path, options: str) -> Path:
    tariff = tmp_path / "pbx.toml"
    tariff.write_text(US_TARIFF)
    path = tmp_path / "chargingd.toml"
    path.write_text(
        f'[server]\ndata_dir = "{tmp_path / "var"}"\n'
        '[mediation.sources.cucm]\nformat = "cucm"\ndefault_country = "US"\n'
        'trunk_prefix = "1"\ninternational_prefix = "011"\nunprefixed = "national"\n'
        'account_rule = "fixed"\naccount = "carol"\n'
        f'plan = "{tariff}"\ncurrency = "USD"\ncharge = "record_only"\n{options}'
    )
    return path


def _dry_run(tmp_path: Path, config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    path = tmp_path / "cdr_StandAloneCluster_01_202603110900_1"
    path.write_text(_cucm(NANP_ROWS))
    code = main(["mediate", str(path), "--source", "cucm", "--config", str(config),
                 "--dry-run", "--quiet"])  # fmt: skip
    return code, capsys.readouterr().out


def test_summary_counts_internal_calls_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, 'access_codes = ["9"]\ninternal_max_digits = 5\n')
    code, out = _dry_run(tmp_path, config, capsys)
    assert code == 0, out  # internal calls are no rejects: a cron job sees success
    assert out.splitlines()[-1] == (
        "dry run: read 6, stored 4, duplicates 0, rejected 0, internal 2, unanswered 0"
    )


def test_summary_without_the_options_is_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _dry_run(tmp_path, _config(tmp_path, ""), capsys)
    assert code == 1
    assert out.splitlines()[-1] == (
        "dry run: read 6, stored 2, duplicates 0, rejected 4, unanswered 0"
    )
    assert ":7: rejected: callee '4002' is not a possible E.164 number" in out


# -- bad configuration stops startup -------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"access_codes": ["9a"]}, "access_codes: '9a' is no access code (1 to 4 digits"),
        ({"access_codes": [""]}, "access_codes: '' is no access code"),
        ({"access_codes": ["+9"]}, "access_codes: '+9' is no access code"),
        ({"access_codes": ["٩"]}, "is no access code"),  # an Arabic-Indic nine
        ({"access_codes": ["90000"]}, "access_codes: '90000' is no access code"),
        ({"access_codes": ["9", "9"]}, "access_codes lists a code twice"),
        ({"access_codes": "9"}, "access_codes must be an array"),
        ({"access_codes": [9]}, "access_codes[0] must be str"),
        ({"internal_max_digits": -1}, "internal_max_digits must be between 0 (off) and 7"),
        ({"internal_max_digits": 8}, "internal_max_digits must be between 0 (off) and 7"),
        ({"internal_max_digits": "5"}, "internal_max_digits must be int"),
    ],
)
def test_bad_pbx_options_are_refused(options: dict[str, object], message: str) -> None:
    table = {"format": "cucm", "charge": "ledger", **options}
    with pytest.raises(ConfigError, match=r"my\.toml") as err:
        config_from_dict({"mediation": {"sources": {"pbx": table}}}, "my.toml")
    assert message in str(err.value)


def test_bad_access_code_stops_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, 'access_codes = ["9", "x"]\n')
    path = tmp_path / "cdrs"
    path.write_text(_cucm(NANP_ROWS))
    assert main(["mediate", str(path), "--source", "cucm", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "[mediation.sources.cucm] access_codes: 'x' is no access code" in err
    assert not (tmp_path / "cdrs.rejects.csv").exists()  # nothing read


# -- into the ledger and the billing database ------------------------------------------------


@pytest.mark.slow
def test_cucm_file_into_the_ledger_and_billing_database(
    tmp_path: Path,
    redis_server: EmbeddedRedis,
    pg_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`chargingd mediate` with charge = "ledger": the 9-calls are debited at the right
    country's rate, stored with the digits as dialled; the internal calls move nothing
    and are not stored; the same file again charges nothing twice."""

    async def setup() -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            await client.flushall()
            ledger = Ledger(client)
            await ledger.load_scripts()
            await ledger.create_account(
                "carol", mode=Mode.PREPAID, currency="USD", tariff="pbx",
                balance_micros=20_000_000, who="test",
            )  # fmt: skip
        finally:
            await client.aclose()

    async def balance() -> int:
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            return (await Ledger(client).get_account("carol")).balance_micros
        finally:
            await client.aclose()

    asyncio.run(setup())
    tariff = tmp_path / "pbx.toml"
    tariff.write_text(US_TARIFF)
    config = tmp_path / "chargingd.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path / "var"}"\n[redis]\nurl = "{redis_server.url}"\n'
        f'[billing]\ndb_url = "{pg_url}"\n[rating]\nplans = {{ pbx = "{tariff}" }}\n'
        '[mediation.sources.cucm-nyc]\nformat = "cucm"\ndefault_country = "US"\n'
        'trunk_prefix = "1"\ninternational_prefix = "011"\nunprefixed = "national"\n'
        'account_rule = "fixed"\naccount = "carol"\ncharge = "ledger"\n'
        'access_codes = ["9"]\ninternal_max_digits = 5\n'
    )
    path = tmp_path / "cdr_StandAloneCluster_01_202603110900_1"
    path.write_text(_cucm(NANP_ROWS))
    argv = ["mediate", str(path), "--source", "cucm-nyc", "--config", str(config), "--quiet"]
    assert main(argv) == 0
    # 60 s + 62 s to the US at 0.60/min, 61 s + 63 s to the UK at 1.20/min.
    assert capsys.readouterr().out.splitlines()[-1] == (
        "read 6, stored 4, duplicates 0, rejected 0, internal 2, unanswered 0, debited 3.70 USD"
    )
    assert asyncio.run(balance()) == 20_000_000 - 3_700_000
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT call_id, callee, cost_micros, charged_micros, extra->>'dialled'"
            " FROM cdrs WHERE source = 'cucm-nyc' ORDER BY call_id"
        ).fetchall()
    assert rows == [
        ("1-7001", "+12125551234", 600_000, 600_000, "912125551234"),
        ("1-7002", "+442079460000", 1_220_000, 1_220_000, "9011442079460000"),
        ("1-7003", "+19095551234", 620_000, 620_000, None),
        ("1-7004", "+442079460000", 1_260_000, 1_260_000, None),
    ]
    assert main(argv) == 0  # again: duplicates, the internal calls skipped again
    assert capsys.readouterr().out.splitlines()[-1] == (
        "read 6, stored 0, duplicates 4, rejected 0, internal 2, unanswered 0"
    )
    assert asyncio.run(balance()) == 20_000_000 - 3_700_000


def test_internal_call_split_by_a_rotation_is_skipped_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Kamailio acc log rotated during an extension-to-extension call: its INVITE and
    BYE, in two files, are paired (docs "Calls across a file rotation") and the pair is
    one internal call, neither rejected nor kept pending."""
    kam = "Dec  5 10:00:00 pbx kamailio[2211]: NOTICE: acc [acc.c:284]: ACC: transaction answered: "

    def acc(method: str, when: int, call_id: str, callee: str) -> str:
        return (
            f"{kam}timestamp={when};method={method};from_tag=f;to_tag=t;call_id={call_id};"
            f"code=200;reason=OK;src_user=4001;dst_user={callee}\n"
        )

    tariff = tmp_path / "pbx.toml"
    tariff.write_text(US_TARIFF)
    config = tmp_path / "chargingd.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path / "var"}"\n[mediation.sources.sbc]\n'
        'format = "kamailio"\ndefault_country = "US"\ntrunk_prefix = "1"\n'
        'international_prefix = "011"\nunprefixed = "national"\naccount_rule = "fixed"\n'
        f'account = "carol"\nplan = "{tariff}"\ncurrency = "USD"\ncharge = "record_only"\n'
        'access_codes = ["9"]\ninternal_max_digits = 5\n'
    )
    first, second = tmp_path / "acc.log.1", tmp_path / "acc.log"
    first.write_text(
        acc("INVITE", START, "k1", "4002") + acc("INVITE", START + 5, "k2", "912125551234")
    )
    second.write_text(
        acc("BYE", START + 65, "k1", "4002") + acc("BYE", START + 70, "k2", "912125551234")
    )
    argv = ["mediate", str(first), str(second), "--source", "sbc", "--config", str(config)]
    assert main([*argv, "--dry-run", "--quiet"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == (
        "dry run: read 4, stored 1, duplicates 0, rejected 0, internal 1, unanswered 0"
    )
