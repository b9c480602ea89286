"""Vendor files written from the vendors' documentation by the acceptance audit of
issue 5 (each test failed before its fix)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import psycopg
import redis.asyncio as aioredis

from chargingd.app.cli import main
from chargingd.billing.db import BillingDB
from chargingd.core.config.mediation import SourceConfig
from chargingd.core.redisconn import EmbeddedRedis
from chargingd.ledger import Ledger, Mode
from chargingd.mediation.cli import EXIT_REJECTS
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


def test_opensips_acc_log_missed_call_reads_the_same_extras_as_its_cdr_line() -> None:
    # OpenSIPS acc module, log backend: one extra_fields list ("log: caller->caller;
    # callee->callee") is written on every line, the CDR line of an answered call
    # (do_accounting("log", "cdr")) and the "call missed" line of a failed one. The
    # CDR line was read; the missed call beside it was rejected ("callee ''").
    lines = [
        "Jun  1 10:02:13 sbc2 /usr/sbin/opensips[3001]: ACC: call ended: created=1780308000;"
        "call_start_time=1780308008;duration=125;ms_duration=124600;setuptime=8;"
        "method=INVITE;from_tag=of1;to_tag=ot1;call_id=ol1@h;code=200;reason=OK;"
        "caller=+4930111222;callee=0612345678\n",
        "Jun  1 10:03:00 sbc2 /usr/sbin/opensips[3001]: ACC: call missed: timestamp=1780308180;"
        "method=INVITE;from_tag=of2;to_tag=;call_id=ol2@h;code=486;reason=Busy Here;"
        "caller=+4930111222;callee=0612345678\n",
    ]
    source = SourceConfig(format="kamailio", default_country="DE", charge="record_only")
    answered, missed = calls_of(lines, source)
    assert (answered.caller, answered.callee, answered.duration_s) == (
        "+4930111222",
        "+49612345678",
        125,
    )
    assert (missed.call_id, missed.caller, missed.callee) == (
        "ol2@h",
        "+4930111222",
        "+49612345678",
    )
    assert (missed.status, missed.cause, missed.end_ms) == ("unanswered", 17, 1780308180000)


def test_kamailio_acc_table_with_from_and_to_user_extras() -> None:
    # acc table exported with its db_extra columns named after the pseudo-variables
    # ("from_user=$fU;to_user=$tU;source_ip=$si"), names kamailio_cdrs and opensips_db
    # already read: the INVITE/BYE pair was rejected for want of src_user/dst_user.
    lines = [
        "id,method,from_tag,to_tag,callid,sip_code,sip_reason,time,from_user,to_user,source_ip\n",
        "1,INVITE,ft1,tt1,c1@h,200,OK,2026-06-01 12:00:05,+4930111222,0612345678,192.0.2.7\n",
        "2,BYE,tt1,ft1,c1@h,200,OK,2026-06-01 12:02:05,0612345678,+4930111222,192.0.2.9\n",
    ]
    source = SourceConfig(
        format="kamailio_db", time_zone="Europe/Berlin", default_country="DE", charge="record_only"
    )
    (call,) = calls_of(lines, source)
    assert (call.caller, call.callee, call.gateway) == ("+4930111222", "+49612345678", "192.0.2.7")
    assert (call.start_ms, call.end_ms, call.duration_s) == (1780308005000, 1780308125000, 120)


# Asterisk cdr_csv (cdr.conf [csv] defaults: 16 columns): accountcode is the switch's
# free text, set by the dialplan (Set(CDR(accountcode)=Sales Dept)) or the peer's
# accountcode; the first row's code is no ledger account id, the second's is.
ASTERISK_ACCOUNTCODES = (
    '"Sales Dept","+4930111222","0612345678","from-internal","","SIP/1001-00000a01",'
    '"SIP/trunk-00000a02","Dial","SIP/trunk/0612345678","2026-06-01 12:00:00",'
    '"2026-06-01 12:00:05","2026-06-01 12:00:45",45,40,"ANSWERED","DOCUMENTATION"\n'
    '"acc1","+4930111222","0612345678","from-internal","","SIP/1001-00000a03",'
    '"SIP/trunk-00000a04","Dial","SIP/trunk/0612345678","2026-06-01 12:01:00",'
    '"2026-06-01 12:01:05","2026-06-01 12:02:05",65,60,"ANSWERED","DOCUMENTATION"\n'
)


def _config(tmp_path: Path, redis_server: EmbeddedRedis, pg_url: str) -> Path:
    """A config with source pbx: Asterisk, account codes (acc1 = acme), charged to the
    ledger at 0.60 a minute for German numbers."""
    tariff = tmp_path / "de.toml"
    tariff.write_text(
        '[tariff]\nid = "de"\ncurrency = "EUR"\ntimezone = "UTC"\n[destinations]\nDE = ["49"]\n'
        '[rates.R]\nrate = "0.60"\nunit = "60s"\nincrement = "1s"\n'
        '[plans.P]\n[[plans.P.rates]]\ndestinations = ["DE"]\nrate = "R"\n'
        '[[profiles]]\nsubject = "*any"\nplan = "P"\nfrom = 2020-01-01T00:00:00Z\n'
    )
    config = tmp_path / "chargingd.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path / "var"}"\n[redis]\nurl = "{redis_server.url}"\n'
        f'[billing]\ndb_url = "{pg_url}"\n'
        f'[mediation.sources.pbx]\nformat = "asterisk"\ntime_zone = "Europe/Berlin"\n'
        f'default_country = "DE"\naccount_rule = "accountcode"\n'
        f'account_map = {{ acc1 = "acme" }}\nplan = "{tariff}"\ncharge = "ledger"\n'
    )
    return config


async def test_an_account_code_that_is_no_account_id_is_a_reject_not_a_failed_run(
    tmp_path: Path, redis_server: EmbeddedRedis, redis: aioredis.Redis, pg_url: str
) -> None:
    # It ended the run (exit 70, "failed: bad account id 'Sales Dept'") at that row:
    # the rows after it were never read.
    led = await _acme(redis)
    config = _config(tmp_path, redis_server, pg_url)
    master = tmp_path / "Master.csv"
    master.write_text(ASTERISK_ACCOUNTCODES)
    argv = ["mediate", str(master), "--source", "pbx", "--config", str(config), "--quiet"]
    assert await asyncio.to_thread(main, argv) == EXIT_REJECTS
    rejects = (tmp_path / "Master.csv.rejects.csv").read_text()
    assert "1,account 'Sales Dept' is no account id" in rejects
    account = await led.get_account("acme")
    assert account.balance_micros == 10_000_000 - 600_000  # the second call, 60 s at 0.60
    # Run again: the good call is a duplicate, the bad row a reject again, nothing moves.
    assert await asyncio.to_thread(main, argv) == EXIT_REJECTS
    assert (await led.get_account("acme")).balance_micros == 10_000_000 - 600_000


async def _acme(redis: aioredis.Redis) -> Ledger:
    """The ledger with account acme: prepaid, 10.00 EUR."""
    led = Ledger(redis)
    await led.load_scripts()
    await led.create_account(
        "acme", mode=Mode.PREPAID, currency="EUR", balance_micros=10_000_000, who="t"
    )
    return led


def _asterisk_row(n: int, talk_s: int, gateway: str = "SIP/trunk") -> str:
    """A 16-column cdr_csv row of call n (answered at 12:0n:05 local, talk_s long)."""
    return (
        f'"acc1","+4930111222","0612345678","from-internal","","SIP/1001-0000{n:04x}",'
        f'"{gateway}-0000{n:04x}","Dial","x","2026-06-01 12:0{n}:00","2026-06-01 12:0{n}:05",'
        f'"2026-06-01 12:0{n}:{5 + talk_s:02d}",{5 + talk_s},{talk_s},"ANSWERED","DOCUMENTATION"\n'
    )


async def test_nul_bytes_of_a_damaged_file_reject_their_record_only(
    tmp_path: Path, redis_server: EmbeddedRedis, redis: aioredis.Redis, pg_url: str
) -> None:
    # A Master.csv after a power loss: the blocks of the last writes read back as NUL
    # bytes. Line 2: record 2 cut short by them, the switch's next record appended after
    # them (both rejected: the line is one damaged record). Line 3: the padding ended
    # at a line's end, the record after it is whole (read). Line 4: a NUL byte inside a
    # record. Such a record was sent to PostgreSQL, which refuses NUL in text: the run
    # failed (exit 70) and the good records of its batch were lost with it.
    led = await _acme(redis)
    config = _config(tmp_path, redis_server, pg_url)
    master = tmp_path / "Master.csv"
    master.write_text(
        _asterisk_row(1, 10)
        + _asterisk_row(2, 20)[:60]
        + "\x00" * 100
        + _asterisk_row(3, 30)
        + "\x00" * 512
        + _asterisk_row(4, 40)
        + _asterisk_row(5, 45, gateway="SIP/tr\x00unk")
        + _asterisk_row(6, 50)
    )
    argv = ["mediate", str(master), "--source", "pbx", "--config", str(config), "--quiet"]
    assert await asyncio.to_thread(main, argv) == EXIT_REJECTS
    rejects = (tmp_path / "Master.csv.rejects.csv").read_text()
    assert rejects.count("\n") == 3, rejects  # the header, lines 2 and 4
    assert '\n2,"damaged record: a NUL byte in it' in rejects
    assert "\n4,damaged record: a NUL byte in it" in rejects
    # calls 1, 4 and 6 billed: 100 s at 0.60 a minute
    assert (await led.get_account("acme")).balance_micros == 10_000_000 - 1_000_000
    assert await asyncio.to_thread(main, argv) == EXIT_REJECTS  # again: nothing moves
    assert (await led.get_account("acme")).balance_micros == 10_000_000 - 1_000_000


def _acc_line(ts: int, method: str, tag: str, call_id: str) -> str:
    """A Kamailio acc syslog line (acc_log_request, acc_time_mode 0) + log_extra."""
    return (
        f"Jun  1 10:00:05 sbc1 /usr/sbin/kamailio[2101]: NOTICE: acc [acc.c:277]: ACC:"
        f" transaction answered: timestamp={ts};method={method};from_tag=f{tag};"
        f"to_tag=t{tag};call_id={call_id};code=200;reason=OK;src_user=+4930111222;"
        f"dst_user=0612345678\n"
    )


async def test_a_corrupt_time_making_a_call_of_centuries_is_rejected_before_it_is_debited(
    tmp_path: Path, redis_server: EmbeddedRedis, redis: aioredis.Redis, pg_url: str
) -> None:
    # A BYE whose timestamp is corrupt but inside 1970-3000 (2999-12-31) made a call of
    # 974 years: it was rated and debited (25.6 million EUR at 0.05 a minute; here
    # 0.60), then its duration, no PostgreSQL integer, failed the store: exit 70, the
    # debit without a CDR, the good call of the batch lost. A 3-day call is billed.
    led = await _acme(redis)
    config = _config(tmp_path, redis_server, pg_url)
    config.write_text(
        config.read_text().replace('format = "asterisk"', 'format = "kamailio"')
        .replace('account_rule = "accountcode"', 'account_rule = "fixed"\naccount = "acme"')
    )  # fmt: skip
    acc = tmp_path / "acc.log"
    start = 1_780_308_005  # 2026-06-01T10:00:05Z
    acc.write_text(
        _acc_line(start, "INVITE", "1", "c1@h")
        + _acc_line(32_503_679_000, "BYE", "1", "c1@h")
        + _acc_line(start, "INVITE", "2", "c2@h")
        + _acc_line(start + 60, "BYE", "2", "c2@h")
        + _acc_line(start, "INVITE", "3", "c3@h")
        + _acc_line(start + 3 * 86_400, "BYE", "3", "c3@h")
    )
    argv = ["mediate", str(acc), "--source", "pbx", "--config", str(config), "--quiet"]
    assert await asyncio.to_thread(main, argv) == EXIT_REJECTS
    rejects = (tmp_path / "acc.log.rejects.csv").read_text()
    assert "\n1,call of 30723370995 s (2026-06-01T10:00:05+00:00 to 2999-12-31" in rejects
    assert "is longer than a year" in rejects
    # 60 s + 3 days at 0.60 a minute: 0.60 + 2592.00
    spent = 600_000 + 2_592_000_000
    assert (await led.get_account("acme")).balance_micros == 10_000_000 - spent


async def test_a_lone_surrogate_in_a_json_cdr_is_no_failed_run(
    tmp_path: Path, redis_server: EmbeddedRedis, redis: aioredis.Redis, pg_url: str
) -> None:
    # mod_json_cdr spool files; JSON escapes a character as \uXXXX, and a display name
    # cut inside an emoji leaves half of its UTF-16 pair ("\ud83d"): no UTF-8, which
    # PostgreSQL refused (jsonb), failing the whole batch (exit 70) after its calls were
    # debited. A display name is never a reason to lose the call (U+FFFD in its place);
    # a uuid holding one is a damaged record.
    led = await _acme(redis)
    config = _config(tmp_path, redis_server, pg_url)
    config.write_text(
        config.read_text().replace('format = "asterisk"', 'format = "freeswitch_json"')
        .replace('account_rule = "accountcode"', 'account_rule = "fixed"\naccount = "acme"')
    )  # fmt: skip
    spool = tmp_path / "json_cdr"
    spool.mkdir()
    for uuid, name in (
        ("a1111111-2222-4333-8444-555555555555", "\\ud83d"),  # cut emoji: kept, U+FFFD
        ("a2222222-2222-4333-8444-555555555555", "Alice"),
        ("a3333333-\\ud83d", "Bob"),  # a uuid no text can hold: rejected
    ):
        doc = (
            f'{{"variables":{{"uuid":"{uuid}","caller_id_name":"{name}",'
            '"caller_id_number":"%2B4930111222","destination_number":"0612345678",'
            '"start_epoch":"1780308000","answer_epoch":"1780308005",'
            '"end_epoch":"1780308065","billsec":"60","hangup_cause":"NORMAL_CLEARING"}}\n'
        )
        (spool / f"{uuid[:8]}.cdr.json").write_text(doc)
    argv = ["mediate", str(spool), "--source", "pbx", "--config", str(config), "--quiet"]
    assert await asyncio.to_thread(main, argv) == EXIT_REJECTS
    rejects = (spool / "a3333333.cdr.json.rejects.csv").read_text()
    assert "damaged record: 'a3333333-\\ud83d' is no text PostgreSQL can hold" in rejects
    assert (await led.get_account("acme")).balance_micros == 10_000_000 - 1_200_000
    db = await BillingDB.open(pg_url)
    try:
        assert await db.count_cdrs() == 2
    finally:
        await db.close()


async def test_a_cause_column_holding_no_q850_value(
    tmp_path: Path, redis_server: EmbeddedRedis, redis: aioredis.Redis, pg_url: str
) -> None:
    # A billing export's "Cause" column holding the SIP response (486) was stored as
    # Q.850 cause 486; a corrupt one past PostgreSQL's integer (99999999999) failed the
    # run (exit 70) after its calls were debited, the batch not stored.
    led = await _acme(redis)
    config = _config(tmp_path, redis_server, pg_url)
    config.write_text(
        config.read_text().replace(
            'format = "asterisk"',
            'format = "csv"\ndelimiter = ";"\ntime_format = "%d.%m.%Y %H:%M:%S"\n'
            'mapping = { call_id = "CallRef", caller = "From", callee = "To", start = "Begin",'
            ' answer = "Connected", end = "Finished", billsec = "Talk", cause = "Cause",'
            ' account = "Customer" }',
        )
    )
    export = tmp_path / "export.csv"
    export.write_text(
        "CallRef;From;To;Begin;Connected;Finished;Talk;Cause;Customer\n"
        "Q1;+4930111222;0612345678;01.06.2026 12:00:00;01.06.2026 12:00:05;"
        "01.06.2026 12:01:05;60;99999999999;acc1\n"
        "Q2;+4930111222;0612345678;01.06.2026 12:00:00;;01.06.2026 12:00:20;0;486;acc1\n"
        "Q3;+4930111222;0612345678;01.06.2026 12:00:00;01.06.2026 12:00:05;"
        "01.06.2026 12:01:05;60;16;acc1\n"
    )
    argv = ["mediate", str(export), "--source", "pbx", "--config", str(config), "--quiet"]
    assert await asyncio.to_thread(main, argv) == 0
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT call_id, disconnect_cause FROM cdrs ORDER BY call_id")
        assert rows.fetchall() == [("Q1", 0), ("Q2", 17), ("Q3", 16)]
    assert (await led.get_account("acme")).balance_micros == 10_000_000 - 1_200_000


async def test_a_tariff_in_another_currency_than_the_account_is_a_reject(
    tmp_path: Path, redis_server: EmbeddedRedis, redis: aioredis.Redis, pg_url: str
) -> None:
    # The source's plan prices in USD, the account holds EUR: live credit control
    # refuses such a call ("tariff currency mismatch"); mediation debited the USD
    # amount from the EUR balance (0.40 USD taken as 0.40 EUR).
    led = await _acme(redis)
    config = _config(tmp_path, redis_server, pg_url)
    tariff = tmp_path / "de.toml"
    tariff.write_text(tariff.read_text().replace('currency = "EUR"', 'currency = "USD"'))
    master = tmp_path / "Master.csv"
    master.write_text(_asterisk_row(1, 40))
    argv = ["mediate", str(master), "--source", "pbx", "--config", str(config), "--quiet"]
    assert await asyncio.to_thread(main, argv) == EXIT_REJECTS
    rejects = (tmp_path / "Master.csv.rejects.csv").read_text()
    assert "currency mismatch: tariff" in rejects
    assert "prices in USD, account acme holds EUR" in rejects
    assert (await led.get_account("acme")).balance_micros == 10_000_000
