"""The mediation run end to end: payer lookup (real ledger on Redis), rating (a real
CGRateS tariff directory), storage (the real billing database), rejects, re-runs."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import shutil
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from paths import FIXTURES as ALL_FIXTURES

from chargingd.billing.cdr import CDR
from chargingd.billing.db import BillingDB
from chargingd.core.config.mediation import SourceConfig
from chargingd.ledger import Ledger, Mode
from chargingd.mediation.charge import Charger
from chargingd.mediation.payers import Payers
from chargingd.mediation.pendingdb import PendingHalf
from chargingd.mediation.pipeline import Mediator
from chargingd.mediation.rate import Rater
from chargingd.mediation.store import CdrStore, DbStore, MemoryStore

FIXTURES = ALL_FIXTURES / "cdr"
TARIFF = str(FIXTURES / "tariff_tp")

ASTERISK = SourceConfig(
    format="asterisk",
    time_zone="Europe/Berlin",
    default_country="DE",
    account_rule="fixed",
    account="pbx-customer",
    plan=TARIFF,
    tenant="chargingd.test",
    charge="record_only",  # these tests look at rating and storage; test_charge.py at money
    loguniqueid=True,
    loguserfield=True,
)


def mediator(source: SourceConfig, store: CdrStore, ledger: Ledger | None = None) -> Mediator:
    return Mediator(
        "pbx1",
        source,
        payers=Payers(source, ledger),
        rater=Rater(source),
        store=store,
        charger=Charger("pbx1", source, store, ledger),
        batch_size=2,
    )


def copy_fixture(name: str, tmp_path: Path) -> Path:
    target = tmp_path / name
    target.write_bytes((FIXTURES / name).read_bytes())
    return target


def read_rejects(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


async def test_rates_stores_and_rerun_adds_nothing(tmp_path: Path) -> None:
    store = MemoryStore()
    path = copy_fixture("asterisk_Master.csv", tmp_path)
    first = await mediator(ASTERISK, store).run_file(path)
    assert (first.read, first.stored, first.duplicates, first.rejected, first.unanswered) == (
        9,
        5,
        0,
        4,
        2,
    )
    muc = store.cdrs[("pbx1", "1782892800.11")]
    # DST_DE_MUC: connect fee 0.05 + 0.03/min per second over 300 s = 0.20.
    assert (muc.cost_micros, muc.billed_s, muc.destination, muc.tariff) == (
        200_000,
        300,
        "DST_DE_MUC",
        TARIFF,  # the source's plan file (not an id of [rating] plans)
    )
    assert (muc.account_id, muc.currency, muc.status) == ("pbx-customer", "EUR", "normal")
    paris = store.cdrs[("pbx1", "1782900000.21")]
    assert (paris.cost_micros, paris.destination) == (120_000, "DST_FR")  # 60 s at 0.12/min
    busy = store.cdrs[("pbx1", "1768467600.3")]
    assert (busy.status, busy.cost_micros, busy.billed_s, busy.disconnect_cause) == (
        "unanswered",
        0,
        0,
        17,
    )
    rejects = read_rejects(tmp_path / "asterisk_Master.csv.rejects.csv")
    assert [(r["line"], r["reason"]) for r in rejects] == [
        (
            "6",
            "11 columns; the source's Master.csv has 18"
            " (loguniqueid=yes, loguserfield=yes, newcdrcolumns=no)",
        ),
        ("7", "start is not a time: '2026-13-01 14:00:00'"),
        ("8", "callee 'nobody' is not a telephone number"),
        ("9", "end time before start time"),
    ]
    again = await mediator(ASTERISK, store).run_file(path, str(tmp_path / "rej"))
    assert (again.read, again.stored, again.duplicates, again.rejected) == (9, 0, 5, 4)
    assert len(store.cdrs) == 5
    assert (tmp_path / "rej" / "asterisk_Master.csv.rejects.csv").exists()


async def test_unratable_call_is_rejected_with_the_rating_code(tmp_path: Path) -> None:
    path = tmp_path / "gen.csv"
    path.write_text(
        "id,from,to,end,talk\n"
        "g1,+4930123456,+442071234567,1782893107,60\n"
        "g2,+4930123456,+41441234567,1782893107,61\n"
    )
    source = dataclasses.replace(
        ASTERISK,
        format="csv",
        time_format="epoch",
        mapping={
            "call_id": "id",
            "caller": "from",
            "callee": "to",
            "end": "end",
            "billsec": "talk",
        },
    )
    store = MemoryStore()
    summary = await mediator(source, store).run_file(path)
    assert (summary.stored, summary.rejected) == (1, 1)
    (reject,) = read_rejects(tmp_path / "gen.csv.rejects.csv")
    assert reject["line"] == "2"
    assert reject["reason"].startswith("rating failed (unknown_destination)")
    zurich = store.cdrs[("pbx1", "g2")]
    assert (zurich.billed_s, zurich.cost_micros) == (120, 240_000)  # 60 s increments


async def test_unrated_source_keeps_cost_zero(tmp_path: Path) -> None:
    source = dataclasses.replace(ASTERISK, rate=False, plan="")
    store = MemoryStore()
    summary = await mediator(source, store).run_file(copy_fixture("asterisk_Master.csv", tmp_path))
    assert summary.stored == 5
    assert {c.cost_micros for c in store.cdrs.values()} == {0}
    assert store.cdrs[("pbx1", "1782892800.11")].billed_s == 0


@pytest.fixture
async def ledger(redis: aioredis.Redis) -> AsyncIterator[Ledger]:
    led = Ledger(redis)
    await led.load_scripts()
    await led.create_account(
        "carol",
        mode=Mode.POSTPAID,
        currency="CHF",
        tariff="std",
        identities=("ani:+493012345678",),
        who="test",
    )
    await led.create_account("eve", mode=Mode.PREPAID, currency="EUR", tariff="std", who="test")
    yield led


async def test_ani_rule_finds_the_ledger_account(ledger: Ledger, tmp_path: Path) -> None:
    source = dataclasses.replace(ASTERISK, account_rule="ani", account="", plan="")
    rater = Rater(source, plans={"std": TARIFF})
    store = MemoryStore()
    med = Mediator(
        "pbx1", source, payers=Payers(source, ledger), rater=rater, store=store,
        charger=Charger("pbx1", source, store, ledger),
    )  # fmt: skip
    summary = await med.run_file(copy_fixture("asterisk_Master.csv", tmp_path))
    # Carol's two calls are hers; Dave's and Eve's callers have no ani identity.
    assert summary.stored == 2
    assert {c.account_id for c in store.cdrs.values()} == {"carol"}
    assert store.cdrs[("pbx1", "1782892800.11")].currency == "CHF"
    reasons = {r["reason"] for r in read_rejects(tmp_path / "asterisk_Master.csv.rejects.csv")}
    assert "no account with identity ani:+4930222333" in reasons


async def test_accountcode_rule_maps_codes_to_accounts(ledger: Ledger, tmp_path: Path) -> None:
    source = dataclasses.replace(
        ASTERISK, account_rule="accountcode", account="", account_map={"acc3": "eve"}
    )
    store = MemoryStore()
    await mediator(source, store, ledger).run_file(copy_fixture("asterisk_Master.csv", tmp_path))
    assert {c.account_id for c in store.cdrs.values()} == {"eve"}
    reasons = [r["reason"] for r in read_rejects(tmp_path / "asterisk_Master.csv.rejects.csv")]
    assert reasons.count("unknown account 'acc1'") == 2


async def test_real_database_rerun_stores_nothing_twice(pg_url: str, tmp_path: Path) -> None:
    db = await BillingDB.open(pg_url)
    try:
        for name, source in (
            ("asterisk_Master.csv", ASTERISK),
            ("cucm_cdr.csv", dataclasses.replace(ASTERISK, format="cucm", time_zone="UTC")),
        ):
            path = copy_fixture(name, tmp_path)
            first = await mediator(source, DbStore(db)).run_file(path)
            again = await mediator(source, DbStore(db)).run_file(path)
            assert first.stored > 0
            assert (again.stored, again.duplicates) == (0, first.stored)
        assert await db.count_cdrs() == 5 + 3
    finally:
        await db.close()


async def test_progress_reports_every_character(tmp_path: Path) -> None:
    path = copy_fixture("asterisk_Master.csv", tmp_path)
    seen: list[int] = []
    await mediator(ASTERISK, MemoryStore()).run_file(path, str(tmp_path), seen.append)
    assert sum(seen) == len(path.read_text())


async def test_clean_rerun_removes_a_stale_reject_file(tmp_path: Path) -> None:
    path = tmp_path / "Master.csv"
    lines = (FIXTURES / "asterisk_Master.csv").read_text().splitlines(keepends=True)
    path.write_text("".join(lines))
    await mediator(ASTERISK, MemoryStore()).run_file(path)
    assert (tmp_path / "Master.csv.rejects.csv").exists()
    path.write_text("".join(lines[:5]))  # the operator fixed the file: only good rows
    summary = await mediator(ASTERISK, MemoryStore()).run_file(path)
    assert (summary.stored, summary.rejected) == (5, 0)
    assert not (tmp_path / "Master.csv.rejects.csv").exists()


class CountingStore(MemoryStore):
    """A MemoryStore that records the size of every store round trip."""

    def __init__(self) -> None:
        super().__init__()
        self.trips: list[int] = []

    async def store_cdrs(self, cdrs: Sequence[CDR]) -> int:
        self.trips.append(len(cdrs))
        return await super().store_cdrs(cdrs)


@pytest.mark.parametrize("batch_size", [1000, 3])
async def test_run_files_batches_across_a_spool_directory(tmp_path: Path, batch_size: int) -> None:
    """A FreeSWITCH log-dir is a file per call: batches span files (one round trip for
    the directory, not one a file); each file keeps its own rejects file, stale ones of
    files now clean are removed, and the counts add up."""
    spool = tmp_path / "spool"
    shutil.copytree(FIXTURES / "freeswitch_json", spool)
    stale = spool / "a_0b1d6f0e-4f7a-4c3e-9a51-2f3c1a7e0c01.cdr.json.rejects.csv"
    stale.write_text("line,reason,raw\n1,an earlier run,x\n")
    source = dataclasses.replace(ASTERISK, format="freeswitch_json", time_zone="UTC", rate=False)
    store = CountingStore()
    med = mediator(source, store)
    med.batch_size = batch_size
    paths = sorted(p for p in spool.iterdir() if p.name.endswith(".cdr.json"))
    total, files = await med.run_files(paths)
    assert store.trips == ([4] if batch_size == 1000 else [3, 1])
    assert (total.read, total.stored, total.rejected, total.unanswered) == (5, 4, 1, 2)
    assert len(files) == 6 and sum(s.read for _, s in files) == 5
    damaged = {p.name: s for p, s in files if s.rejected}
    ((name, summary),) = damaged.items()
    assert name == "a_0b1d6f0e-4f7a-4c3e-9a51-2f3c1a7e0c99.cdr.json"
    assert summary.reject_file == f"{spool / name}.rejects.csv"
    assert [r["line"] for r in read_rejects(Path(summary.reject_file))] == ["1"]
    assert not stale.exists()
    again, _ = await med.run_files(paths)
    assert (again.stored, again.duplicates) == (0, 4)


async def test_acc_table_exports_split_by_a_rotation_pair(tmp_path: Path) -> None:
    """kamailio_db: the INVITE row in one export, its BYE row in the next (each with its
    header line); out of order, in one run: one call, read again after the header."""
    source = SourceConfig(
        format="kamailio_db", time_zone="Europe/Berlin", default_country="DE",
        account_rule="fixed", account="c1", plan=TARIFF, tenant="chargingd.test",
        charge="record_only",
    )  # fmt: skip
    rows = (FIXTURES / "kamailio_acc_db.csv").read_text().splitlines(keepends=True)
    first, second = tmp_path / "acc-10.csv", tmp_path / "acc-11.csv"
    first.write_text(rows[0] + rows[1])  # header, the INVITE of a1b2c3d4
    second.write_text(rows[0] + rows[3])  # header, its BYE, 300 s later
    store = MemoryStore()
    total, _ = await mediator(source, store).run_files([second, first], str(tmp_path))
    assert (total.read, total.stored, total.rejected, total.pending) == (2, 1, 0, 0)
    (cdr,) = store.cdrs.values()
    assert (cdr.call_id, cdr.duration_s, cdr.extra["paired"]) == (
        "a1b2c3d4@198.51.100.7",
        300,
        f"{first}:2 {second}:2",
    )
    again, _ = await mediator(source, store).run_files([first], str(tmp_path))
    assert (again.stored, again.duplicates, again.pending) == (0, 1, 0)


async def test_a_half_kept_past_the_max_age_pairs_with_its_other_half_of_the_run(
    tmp_path: Path,
) -> None:
    """Mediation stopped longer than pending_max_age_s (a weekend, a database outage),
    then the backlog: a kept INVITE whose BYE is in this run is paired and billed, not
    rejected as expired (the expiry comes after the run's pairing)."""
    source = SourceConfig(
        format="kamailio_db", time_zone="Europe/Berlin", default_country="DE",
        account_rule="fixed", account="c1", plan=TARIFF, tenant="chargingd.test",
        charge="record_only",
    )  # fmt: skip
    rows = (FIXTURES / "kamailio_acc_db.csv").read_text().splitlines(keepends=True)
    first, second = tmp_path / "acc-10.csv", tmp_path / "acc-11.csv"
    first.write_text(rows[0] + rows[1])
    second.write_text(rows[0] + rows[3])
    store = MemoryStore()
    total, _ = await mediator(source, store).run_files([first], str(tmp_path))
    assert (total.stored, total.pending) == (0, 1)
    for kinds in store.halves.values():  # kept two days ago
        for kind, half in kinds.items():
            kinds[kind] = dataclasses.replace(half, since_ms=half.since_ms - 2 * 86_400_000)
    total, _ = await mediator(source, store).run_files([second], str(tmp_path))
    assert (total.stored, total.rejected, total.pending) == (1, 0, 0)
    assert [c.duration_s for c in store.cdrs.values()] == [300]


async def test_two_imports_at_once_pair_their_halves(pg_url: str) -> None:
    """Two imports running at once, one with a call's INVITE and one with its BYE: each
    keeps its half and reads the key's halves under a lock on the key, so the second
    always sees the first (without it both could read only their own: never paired)."""
    one, two = await BillingDB.open(pg_url), await BillingDB.open(pg_url)
    try:
        for i in range(6):
            invite = PendingHalf(f"k{i}", "INVITE", 0, "no BYE", "i", "", "acc.log.1", 1)
            bye = PendingHalf(f"k{i}", "BYE", 1, "no INVITE", "b", "", "acc.log", 1)
            seen = await asyncio.gather(
                DbStore(one).pend("sbc", [invite]), DbStore(two).pend("sbc", [bye])
            )
            assert max(len(found[f"k{i}"]) for found in seen) == 2
            again = await DbStore(one).pend("sbc", [invite])  # kept once
            assert [h.kind for h in again[f"k{i}"]] == ["INVITE", "BYE"]
        await DbStore(two).unpend("sbc", [(f"k{i}", "") for i in range(6)])
        assert await DbStore(one).kept("sbc") == []
    finally:
        await one.close()
        await two.close()


async def test_acc_table_exports_with_other_columns_pair(tmp_path: Path) -> None:
    """kamailio_db: the acc table gained a column (db_extra) between two exports: the
    INVITE's row and the BYE's are each read under their own header (a header line
    again in a file starts its columns anew): one call, 300 s, no reject."""
    source = SourceConfig(
        format="kamailio_db", time_zone="Europe/Berlin", default_country="DE",
        account_rule="fixed", account="c1", plan=TARIFF, tenant="chargingd.test",
        charge="record_only",
    )  # fmt: skip
    rows = (FIXTURES / "kamailio_acc_db.csv").read_text().splitlines(keepends=True)
    first, second = tmp_path / "acc-10.csv", tmp_path / "acc-11.csv"
    first.write_text(rows[0] + rows[1])
    second.write_text(rows[0].rstrip("\n") + ",src_ip\n" + rows[3].rstrip("\n") + ",192.0.2.1\n")
    for order in ([first], [second]), ([second], [first]):
        store = MemoryStore()
        for files in order:
            total, _ = await mediator(source, store).run_files(files, str(tmp_path))
        assert (total.stored, total.rejected, total.pending) == (1, 0, 0), order
        assert [c.duration_s for c in store.cdrs.values()] == [300]


async def test_files_of_one_name_keep_their_own_rejects_in_one_rejects_dir(
    tmp_path: Path,
) -> None:
    """Master.csv of two days, from two folders, into one --rejects DIR: each file's
    rejects were written to DIR/Master.csv.rejects.csv, the second truncating the
    first's (or removing them when it had none)."""
    lines = (FIXTURES / "asterisk_Master.csv").read_text().splitlines(keepends=True)
    day1, day2, rejects = tmp_path / "d1", tmp_path / "d2", tmp_path / "rejects"
    day1.mkdir()
    day2.mkdir()
    (day1 / "Master.csv").write_text("".join(lines))  # its bad rows are rejected
    (day2 / "Master.csv").write_text("".join(lines[:5]))  # good rows only
    total, files = await mediator(ASTERISK, MemoryStore()).run_files(
        [day1 / "Master.csv", day2 / "Master.csv"], str(rejects)
    )
    first = files[0][1]
    assert first.rejected > 0 and first.reject_file == str(rejects / "Master.csv.rejects.csv")
    assert len(read_rejects(rejects / "Master.csv.rejects.csv")) == first.rejected
    assert files[1][1].rejected == 0 and total.rejected == first.rejected
    # and a second file with rejects of its own gets its own rejects file
    (day2 / "Master.csv").write_text("".join(lines))
    _, files = await mediator(ASTERISK, MemoryStore()).run_files(
        [day1 / "Master.csv", day2 / "Master.csv"], str(rejects)
    )
    assert [summary.reject_file for _, summary in files] == [
        str(rejects / "Master.csv.rejects.csv"),
        str(rejects / "Master.csv.2.rejects.csv"),
    ]
    assert len(read_rejects(rejects / "Master.csv.rejects.csv")) == first.rejected
    assert len(read_rejects(rejects / "Master.csv.2.rejects.csv")) == first.rejected
