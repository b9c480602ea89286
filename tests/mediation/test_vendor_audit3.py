"""Third-round vendor audit of mediation: files written as the switches document them,
run through the Mediator on a real Redis ledger and the real billing database."""

from __future__ import annotations

import bz2
import lzma
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from paths import FIXTURES

from chargingd.app.cli import main
from chargingd.billing.db import BillingDB
from chargingd.core.config.mediation import SourceConfig
from chargingd.ledger import Ledger, Mode
from chargingd.mediation.charge import Charger
from chargingd.mediation.payers import Payers
from chargingd.mediation.pipeline import Mediator
from chargingd.mediation.rate import Rater
from chargingd.mediation.store import CdrStore, DbStore, MemoryStore

TARIFF = str(FIXTURES / "cdr" / "tariff_tp")

# Kamailio's acc table and its missed_calls table (db_flag, db_missed_flag), exported
# as CSV. Serial forking: the first branch timed out (408, logged to missed_calls since
# failure_route set db_missed_flag again, as the acc docs say to log every attempt),
# the second answered: the same Call-ID in both tables, 600 s of talk.
HEAD = "id,method,from_tag,to_tag,callid,sip_code,sip_reason,time,src_user,dst_user\n"
MISSED = HEAD + (
    "1,INVITE,ft1,tt-b1,fork-1@10.0.0.1,408,Request Timeout,2026-11-03 10:00:30,"
    "4930111222,4989987654\n"
)
ACC = HEAD + (
    "7,INVITE,ft1,tt-b2,fork-1@10.0.0.1,200,OK,2026-11-03 10:00:35,4930111222,4989987654\n"
    "8,BYE,ft1,tt-b2,fork-1@10.0.0.1,200,OK,2026-11-03 10:10:35,4930111222,4989987654\n"
)
# DST_DE_MUC: connect fee 0.05 + 0.03 a minute per second: 600 s = 0.35.
COST = 350_000

SOURCE = SourceConfig(
    format="kamailio_db",
    time_zone="UTC",
    default_country="DE",
    account_rule="ani",
    plan=TARIFF,
    tenant="chargingd.test",
    charge="ledger",
)


@pytest.fixture
async def ledger(redis: aioredis.Redis) -> AsyncIterator[Ledger]:
    led = Ledger(redis)
    await led.load_scripts()
    await led.create_account(
        "carol",
        mode=Mode.PREPAID,
        currency="EUR",
        balance_micros=10_000_000,
        identities=("ani:+4930111222",),
        who="test",
    )
    yield led


def _mediator(store: CdrStore, ledger: Ledger) -> Mediator:
    return Mediator(
        "kdb",
        SOURCE,
        payers=Payers(SOURCE, ledger),
        rater=Rater(SOURCE),
        store=store,
        charger=Charger("kdb", SOURCE, store, ledger),
    )


def _files(tmp_path: Path) -> tuple[Path, Path]:
    missed, acc = tmp_path / "missed_calls.csv", tmp_path / "acc.csv"
    missed.write_text(MISSED)
    acc.write_text(ACC)
    return missed, acc


async def _balance(ledger: Ledger) -> int:
    return (await ledger.get_account("carol")).balance_micros


async def test_answered_call_after_its_unanswered_attempt_in_an_earlier_run_is_billed(
    ledger: Ledger, pg_url: str, tmp_path: Path
) -> None:
    """The missed_calls export imported first: its 408 stored the Call-ID as an
    unanswered call, and the answered call of the acc export was then a "duplicate":
    10 minutes of talk never billed (read 1, stored 0, duplicates 1)."""
    missed, acc = _files(tmp_path)
    db = await BillingDB.open(pg_url)
    try:
        first = await _mediator(DbStore(db), ledger).run_file(missed)
        assert (first.stored, first.unanswered) == (1, 1)
        second = await _mediator(DbStore(db), ledger).run_file(acc)
        assert (second.stored, second.duplicates) == (1, 0)
        assert await _balance(ledger) == 10_000_000 - COST
        # Re-running either file charges nothing again.
        for path in (missed, acc):
            again = await _mediator(DbStore(db), ledger).run_file(path)
            assert (again.stored, again.duplicates) == (0, 1)
        assert await _balance(ledger) == 10_000_000 - COST
    finally:
        await db.close()


async def test_answered_call_after_its_unanswered_attempt_in_one_run_is_stored_answered(
    ledger: Ledger, tmp_path: Path
) -> None:
    """Both exports in one run: the answered call's cost was debited, but the CDR stored
    was the 408's (unanswered, cost 0, charged 0.35): an invoice showing an unanswered
    call that cost money, and a rerate at its cost 0 refunding the call."""
    missed, acc = _files(tmp_path)
    store = MemoryStore()
    summary, _ = await _mediator(store, ledger).run_files([missed, acc])
    assert (summary.stored, summary.duplicates, summary.unanswered) == (2, 0, 1)
    by_status = {c.status: c for c in store.cdrs.values()}
    unanswered, answered = by_status["unanswered"], by_status["normal"]
    assert (unanswered.call_id, unanswered.cost_micros, unanswered.charged_micros) == (
        "fork-1@10.0.0.1",
        0,
        0,
    )
    assert (answered.billed_s, answered.cost_micros, answered.charged_micros) == (
        600,
        COST,
        COST,
    )
    assert answered.extra["switch_call_id"] == "fork-1@10.0.0.1"
    assert await _balance(ledger) == 10_000_000 - COST
    # The other order (the acc export first): the answered call holds the Call-ID, the
    # missed attempt is the duplicate.
    store2 = MemoryStore()
    summary2, _ = await _mediator(store2, ledger).run_files([acc, missed])
    assert (summary2.stored, summary2.duplicates) == (1, 1)
    assert [c.status for c in store2.cdrs.values()] == ["normal"]


# The same serial forking in Kamailio's acc syslog, hourly files: the failed branch at
# the end of one file (a "call missed" line), the answered INVITE in the next, its BYE
# in the one after. The INVITE is kept for its BYE; it was counted a duplicate of the
# unanswered call and dropped: the call never billed.
_LOG = (
    "Nov  3 10:00:{s} sbc kamailio[100]: NOTICE: acc [acc.c:275]: ACC: {what}: "
    "timestamp={ts};method={method};from_tag=ft9;to_tag={tag};call_id=fork-9@10.0.0.1;"
    "code={code};reason={reason};src_user=4930111222;dst_user=4989987654\n"
)
T0 = 1_793_786_430  # 2026-11-03T10:00:30Z
KAMAILIO_LOGS = (
    _LOG.format(s=30, what="call missed", ts=T0, method="INVITE", tag="tb1", code=408,
                reason="Request Timeout"),
    _LOG.format(s=35, what="transaction answered", ts=T0 + 5, method="INVITE", tag="tb2",
                code=200, reason="OK"),
    _LOG.format(s=35, what="transaction answered", ts=T0 + 605, method="BYE", tag="tb2",
                code=200, reason="OK"),
)  # fmt: skip


async def test_answered_invite_kept_across_rotations_after_a_missed_branch_is_billed(
    ledger: Ledger, tmp_path: Path
) -> None:
    source = SourceConfig(
        format="kamailio",
        default_country="DE",
        account_rule="ani",
        plan=TARIFF,
        tenant="chargingd.test",
        charge="ledger",
    )
    store = MemoryStore()
    summaries, kept = [], []
    for n, text in enumerate(KAMAILIO_LOGS):
        path = tmp_path / f"acc.log.{3 - n}"
        path.write_text(text)
        med = Mediator(
            "kam", source, payers=Payers(source, ledger), rater=Rater(source), store=store,
            charger=Charger("kam", source, store, ledger),
        )  # fmt: skip
        summaries.append(await med.run_file(path))
        kept.append([h.kind for h in await store.kept("kam")])
    assert [(s.stored, s.duplicates) for s in summaries] == [
        (1, 0),  # the missed branch: an unanswered call
        (0, 0),  # the answered INVITE, kept for its BYE (was: a duplicate, dropped)
        (1, 0),  # paired: the call
    ]
    assert kept == [[], ["INVITE"], []]
    answered = store.cdrs[("kam", "fork-9@10.0.0.1#answered")]
    assert (answered.status, answered.billed_s, answered.charged_micros) == ("normal", 600, COST)
    assert await _balance(ledger) == 10_000_000 - COST


# logrotate compresses with gzip unless told otherwise: `compresscmd /usr/bin/xz`
# (`compressext .xz`), bzip2 or zstd are common for big syslog files. A Kamailio acc
# log so compressed was read as binary noise, no line an ACC line: read 0, exit 0, the
# hour's calls silently never billed.
_ACC_LOG = "".join(KAMAILIO_LOGS[1:])  # an answered INVITE and its BYE: 600 s


def _kamailio_config(tmp_path: Path) -> Path:
    config = tmp_path / "chargingd.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path}"\n[mediation.sources.sbc]\nformat = "kamailio"\n'
        'default_country = "DE"\naccount_rule = "fixed"\naccount = "c1"\n'
        f'plan = "{TARIFF}"\ntenant = "chargingd.test"\ncharge = "record_only"\n'
    )
    return config


@pytest.mark.parametrize(
    ("suffix", "compress"),
    [(".bz2", bz2.compress), (".xz", lzma.compress)],
    ids=["bzip2", "xz"],
)
def test_acc_log_compressed_by_logrotate_compresscmd_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str, compress: Any
) -> None:
    path = tmp_path / f"acc.log.1{suffix}"
    path.write_bytes(compress(_ACC_LOG.encode()))
    argv = ["mediate", str(path), "--source", "sbc", "--quiet", "--dry-run"]
    assert main([*argv, "--config", str(_kamailio_config(tmp_path))]) == 0
    assert "dry run: read 1, stored 1, duplicates 0, rejected 0" in capsys.readouterr().out
    # Cut short (logrotate still compressing it): the lines before the damage, then
    # one reject saying why.
    path.write_bytes(compress((_ACC_LOG * 40).encode())[:-40])
    assert main([*argv, "--config", str(_kamailio_config(tmp_path))]) == 1
    out = capsys.readouterr().out
    assert "damaged compressed file, the rest unreadable" in out


def test_zstd_compressed_file_is_one_reject_not_an_empty_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """zstd (compresscmd /usr/bin/zstd) has no reader in Python's standard library: the
    file is one reject that says so (exit 1), never 'read 0' and exit 0."""
    path = tmp_path / "acc.log.1.zst"
    # A zstd frame: magic 28 B5 2F FD, then a frame header and a raw block.
    path.write_bytes(b"\x28\xb5\x2f\xfd\x24\x0b\x59\x00\x00hello world\x00\x00\x00\x00")
    argv = ["mediate", str(path), "--source", "sbc", "--quiet", "--dry-run"]
    assert main([*argv, "--config", str(_kamailio_config(tmp_path))]) == 1
    out = capsys.readouterr().out
    assert "dry run: read 1, stored 0, duplicates 0, rejected 1" in out
    assert "zstd-compressed" in out


def _json_log(message: str, eol: str = "\\n") -> str:
    """A Kamailio log line with --log-engine=json (core docs, "Log Engine CLI
    Parameter"): one JSON document a line, the log text in "message", JSON-escaped,
    its end of line kept unless the engine data has the M flag."""
    return (
        '{ "idx": 1, "pid": 18239, "level": "NOTICE", "module": "acc", "file": "acc.c",'
        ' "line": 275, "function": "acc_log_request", "logprefix": "{1 1 INVITE x} ",'
        f' "message": "{message}{eol}" }}\n'
    )


def test_kamailio_json_log_engine_acc_lines_are_read() -> None:
    """The ACC text inside "message": its last pair (dst_user) ended in '\\n" }' and
    every call was rejected ("callee '4989987654\\n\\" }' is not a telephone number")."""
    from chargingd.mediation.pipeline import normalised

    acc = [line.split("ACC: ", 1)[1].rstrip("\n") for line in KAMAILIO_LOGS[1:]]
    source = SourceConfig(format="kamailio", default_country="DE")
    for eol in ("\\n", ""):  # without and with the M flag
        lines = [_json_log(f"ACC: {text}", eol) for text in acc]
        found = [item for _, item in normalised(lines, "s", source)]
        assert [(c.call_id, c.callee, c.duration_s) for c in found] == [  # type: ignore[union-attr]
            ("fork-9@10.0.0.1", "+4989987654", 600)
        ], found
    # A plain syslog line whose log_prefix holds braces is read as before.
    prefixed = [f"Nov  3 10:00:35 sbc kamailio[100]: {{1 1 INVITE x}} ACC: {t}\n" for t in acc]
    (call,) = [item for _, item in normalised(prefixed, "s", source)]
    assert call.callee == "+4989987654"  # type: ignore[union-attr]


def test_kamailio_dialog_cdr_in_a_json_log_engine_line_is_read() -> None:
    """acc_cdr.c's log line through the JSON log engine: its last cdr_extra pair ended
    in '\\n" }' (a callee that is no number)."""
    from chargingd.mediation.pipeline import normalised

    cdr = (
        "start_time=1773219605.900000; end_time=1773219666.300000; duration=60.400000;"
        " callid=c1@h; src_user=4930123456; dst_user=4930111222"
    )
    source = SourceConfig(format="kamailio_cdrs", cdr_start="confirmed", default_country="DE")
    (call,) = [item for _, item in normalised([_json_log(cdr)], "s", source)]
    assert (call.call_id, call.callee, call.duration_s) == ("c1@h", "+4930111222", 60)  # type: ignore[union-attr]
