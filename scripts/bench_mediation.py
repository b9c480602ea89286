"""Mediation throughput: CDRs/s read, normalised, rated (and stored) for generated files.

    .venv/bin/python scripts/bench_mediation.py [--rows 1000000] [--formats asterisk,freeswitch]
    (formats: asterisk, freeswitch, kamailio_cdrs, freeswitch_json, kamailio)
        [--db-url postgresql://... | --pg-dir DIR]  [--workdir DIR]

Writes a Master.csv-style file per format (numbers from 20,000 callers to 200,000
callees, national and international, 60 % answered), then times each stage on its
own: parse only; parse + normalise; parse + normalise + rate (CGRateS tariff
directory, fixed account); and, with --db-url, the whole run into the billing DB.
kamailio (acc syslog, an INVITE and a BYE line per answered call): also the file cut
in two at its middle line (an hourly rotation), both files in one run: the calls
running at the cut are halves, paired across the files (pairing.py).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

from chargingd.billing.cdr import CDR
from chargingd.billing.lookup import StoredCharge
from chargingd.core.config.mediation import SourceConfig
from chargingd.mediation.charge import Charger
from chargingd.mediation.formats import parser_for
from chargingd.mediation.payers import Payers
from chargingd.mediation.pipeline import Mediator, normalised
from chargingd.mediation.rate import Rater
from chargingd.mediation.store import CdrStore, DbStore, MemoryStore

TARIFF = {
    "Destinations.csv": "#Id,Prefix\nDST_DE,49\nDST_DE_MOB,4915\nDST_DE_MOB,4917\n"
    "DST_CH,41\nDST_FR,33\nDST_UK,44\n",
    "Rates.csv": "#Id,ConnectFee,Rate,RateUnit,RateIncrement,GroupIntervalStart\n"
    "RT_FIX,0,0.02,60s,60s,0s\nRT_MOB,0,0.09,60s,1s,0s\nRT_INTL,0.05,0.12,60s,30s,0s\n",
    "DestinationRates.csv": "#Id,DestinationId,RatesTag,RoundingMethod,RoundingDecimals,"
    "MaxCost,MaxCostStrategy\nDR,DST_DE,RT_FIX,*up,4,0,\nDR,DST_DE_MOB,RT_MOB,*up,4,0,\n"
    "DR,DST_CH,RT_INTL,*up,4,0,\nDR,DST_FR,RT_INTL,*up,4,0,\nDR,DST_UK,RT_INTL,*up,4,0,\n",
    "RatingPlans.csv": "#Id,DestinationRatesId,TimingTag,Weight\nRP_BENCH,DR,*any,10\n",
    "RatingProfiles.csv": "#Tenant,Category,Subject,ActivationTime,RatingPlanId,"
    "RatesFallbackSubject\nbench,call,*any,2020-01-01T00:00:00Z,RP_BENCH,\n",
    "Timings.csv": "#Id,Years,Months,MonthDays,WeekDays,Time\n",
}
# Dialled prefix -> digits that follow (national significant number lengths).
CALLEE_PREFIXES = {
    "030": 8,
    "089": 7,
    "040": 8,
    "0151": 8,
    "0171": 7,
    "0041": 9,
    "0033": 9,
    "0044": 10,
}


def numbers(rng: random.Random) -> tuple[list[str], list[str]]:
    callers = [f"030{rng.randrange(10**6, 10**7)}" for _ in range(20_000)]
    callees = []
    for _ in range(200_000):
        prefix, width = rng.choice(list(CALLEE_PREFIXES.items()))
        callees.append(prefix + str(rng.randrange(10 ** (width - 1), 10**width)))
    return callers, callees


def rows(n: int, seed: int = 7) -> list[tuple[str, str, datetime, int, int]]:
    """(caller, callee, start, ring_s, talk_s) per call; talk 0 = unanswered."""
    rng = random.Random(seed)
    callers, callees = numbers(rng)
    start = datetime(2026, 7, 1)
    out = []
    for i in range(n):
        talk = rng.randrange(1, 900) if rng.random() < 0.6 else 0
        when = start + timedelta(seconds=i * 2)
        out.append((rng.choice(callers), rng.choice(callees), when, rng.randrange(1, 20), talk))
    return out


def stamp(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S")


def write_asterisk(path: Path, calls: Sequence[tuple[str, str, datetime, int, int]]) -> None:
    with open(path, "w") as fh:
        for i, (a, b, start, ring, talk) in enumerate(calls):
            answer = stamp(start + timedelta(seconds=ring)) if talk else ""
            end = stamp(start + timedelta(seconds=ring + talk))
            disp = "ANSWERED" if talk else "NO ANSWER"
            fh.write(
                f'"acc1","{a}","{b}","from-internal","""X"" <{a}>","SIP/x-{i:08x}",'
                f'"SIP/trunk-{i:08x}","Dial","SIP/trunk/{b}","{stamp(start)}",'
                f'{answer and chr(34) + answer + chr(34)},"{end}",{ring + talk},{talk},'
                f'"{disp}","BILLING","{1782864000 + i}.{i}",""\n'
            )


def write_freeswitch(path: Path, calls: Sequence[tuple[str, str, datetime, int, int]]) -> None:
    with open(path, "w") as fh:
        for i, (a, b, start, ring, talk) in enumerate(calls):
            answer = stamp(start + timedelta(seconds=ring)) if talk else ""
            end = stamp(start + timedelta(seconds=ring + talk))
            cause = "NORMAL_CLEARING" if talk else "NO_ANSWER"
            fh.write(
                f'"X","{a}","{b}","default","{stamp(start)}","{answer}","{end}",'
                f'"{ring + talk}","{talk}","{cause}","00000000-0000-4000-8000-{i:012x}","",'
                f'"acc1","PCMA","PCMA"\n'
            )


def write_kamailio_cdrs(path: Path, calls: Sequence[tuple[str, str, datetime, int, int]]) -> None:
    """acc_cdrs with cdr_start_on_confirmed: start_time is the answer; failed dialogs 0 s."""
    with open(path, "w") as fh:
        fh.write("id,start_time,end_time,duration,callid,src_user,dst_user\n")
        for i, (a, b, start, ring, talk) in enumerate(calls):
            begin = start + timedelta(seconds=ring) if talk else start
            end = begin + timedelta(seconds=talk)
            fh.write(
                f"{i + 1},{stamp(begin)},{stamp(end)},{talk}.000000,{i:016x}@192.0.2.10,{a},{b}\n"
            )


def write_freeswitch_json(path: Path, calls: Sequence[tuple[str, str, datetime, int, int]]) -> None:
    """mod_json_cdr A-leg documents (URL-encoded values), one per line in one file (a
    spool directory holds a file each: add the cost of opening them)."""
    import json
    from urllib.parse import quote

    with open(path, "w") as fh:
        for i, (a, b, start, ring, talk) in enumerate(calls):
            t0 = int(start.timestamp() * 1_000_000)
            answer = t0 + ring * 1_000_000 if talk else 0
            variables = {
                "uuid": f"00000000-0000-4000-8000-{i:012x}", "caller_id_name": "Bench Caller",
                "caller_id_number": a, "destination_number": b, "accountcode": "acc1",
                "start_stamp": quote(stamp(start)), "start_uepoch": str(t0),
                "answer_uepoch": str(answer), "end_uepoch": str(t0 + (ring + talk) * 1_000_000),
                "billsec": str(talk), "duration": str(ring + talk),
                "hangup_cause": "NORMAL_CLEARING" if talk else "NO_ANSWER",
            }  # fmt: skip
            doc = {"core-uuid": "bench", "switchname": "fs1", "variables": variables,
                   "callflow": [{"caller_profile": {"caller_id_number": a}}]}  # fmt: skip
            fh.write(json.dumps(doc, separators=(",", ":")) + "\n")


def write_kamailio(path: Path, calls: Sequence[tuple[str, str, datetime, int, int]]) -> None:
    """acc syslog: an answered call's INVITE (at its answer) and BYE; a failed one's
    "call missed" INVITE; in time order, as Kamailio logs them."""
    events: list[tuple[float, str]] = []
    head = "Jul  1 08:00:00 sbc1 kamailio[2211]: NOTICE: acc [acc.c:284]: ACC: "
    for i, (a, b, start, ring, talk) in enumerate(calls):
        cid = f"call_id={i:016x}@192.0.2.10"
        users = f"src_user={a};dst_user={b}"
        t0 = start.timestamp() + ring
        tags = f"from_tag=f{i};to_tag=t{i};{cid}"
        if not talk:
            missed = f"call missed: timestamp={t0:.0f};method=INVITE;{tags};code=486;"
            events.append((t0, f"{head}{missed}reason=Busy Here;{users}"))
            continue
        invite = f"timestamp={t0:.0f};method=INVITE;{tags};code=200;reason=OK;{users}"
        events.append((t0, f"{head}transaction answered: {invite}"))
        bye = f"timestamp={t0 + talk:.0f};method=BYE;from_tag=t{i};to_tag=f{i};{cid};code=200"
        events.append((t0 + talk, f"{head}transaction answered: {bye};reason=OK;{users}"))
    events.sort(key=lambda e: e[0])
    with open(path, "w") as fh:
        fh.writelines(text + "\n" for _, text in events)


WRITERS: dict[str, Callable[[Path, Sequence[tuple[str, str, datetime, int, int]]], None]] = {
    "asterisk": write_asterisk,
    "freeswitch": write_freeswitch,
    "kamailio_cdrs": write_kamailio_cdrs,
    "freeswitch_json": write_freeswitch_json,
    "kamailio": write_kamailio,
}


def timed(label: str, n: int, work: Callable[[], object]) -> float:
    t0, c0 = time.perf_counter(), time.process_time()
    work()
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(
        f"  {label:<34} {elapsed:7.2f} s  {n / elapsed:10,.0f} rows/s"
        f"  (CPU {cpu:.2f} s: {cpu / n * 1e6:.1f} us/row)",
        flush=True,
    )
    return elapsed


class _Discard(MemoryStore):
    """A store that keeps no CDR (rating throughput without a database); pending halves
    in memory."""

    async def store_cdrs(self, cdrs: Sequence[CDR]) -> int:
        return len(cdrs)

    async def charges(self, source: str, call_ids: Sequence[str]) -> dict[str, StoredCharge]:
        return {}


def bench(fmt: str, path: Path, n: int, tariff: Path, db_url: str) -> None:
    source = SourceConfig(
        format=fmt,
        time_zone="Europe/Berlin",
        default_country="DE",
        account_rule="fixed",
        account="bench",
        plan=str(tariff),
        tenant="bench",
        charge="record_only",  # no ledger: parse, normalise, rate, match, store
        loguniqueid=True,  # the asterisk file below: cdr.conf loguniqueid/loguserfield=yes
        loguserfield=True,
        cdr_start="confirmed",  # kamailio_cdrs: start_time is the answer
    )
    print(f"{fmt}: {n:,} rows, {path.stat().st_size / 1e6:.0f} MB")

    def parse_only() -> None:
        with open(path, newline="") as fh:
            for _ in parser_for(source)(fh):
                pass

    def parse_normalise() -> None:
        with open(path, newline="") as fh:
            for _ in normalised(fh, "bench", source):
                pass

    def mediate(store: CdrStore) -> Callable[[], None]:
        def run() -> None:
            med = Mediator(
                "bench",
                source,
                payers=Payers(source, None),
                rater=Rater(source),
                store=store,
                charger=Charger("bench", source, store, None),
                batch_size=5000,
            )
            summary = asyncio.run(med.run_file(path, str(path.parent)))
            print(f"    {summary.line()}")

        return run

    def rotated() -> None:
        """The file cut in two at its middle line, both mediated in one run."""
        lines = path.read_text().splitlines(keepends=True)
        first, second = path.with_suffix(".1"), path.with_suffix(".2")
        first.write_text("".join(lines[: len(lines) // 2]))
        second.write_text("".join(lines[len(lines) // 2 :]))
        store = _Discard()
        med = Mediator("bench", source, payers=Payers(source, None), rater=Rater(source),
                       store=store, charger=Charger("bench", source, store, None),
                       batch_size=5000)  # fmt: skip
        total, _ = asyncio.run(med.run_files([second, first], str(path.parent)))
        print(f"    {total.line()} (files out of order)")

    timed("parse", n, parse_only)
    timed("parse + normalise", n, parse_normalise)
    timed("parse + normalise + rate", n, mediate(_Discard()))
    if fmt == "kamailio":
        timed("rotated: 2 files, + rate", n, rotated)
    if db_url:
        timed("parse + normalise + rate + store", n, mediate_db(mediate, db_url))


def mediate_db(
    mediate: Callable[[CdrStore], Callable[[], None]], db_url: str
) -> Callable[[], None]:
    def run() -> None:
        from chargingd.billing.db import BillingDB

        async def opened() -> BillingDB:
            return await BillingDB.open(db_url)

        db = asyncio.run(opened())
        try:
            mediate(DbStore(db))()
        finally:
            asyncio.run(db.close())

    return run


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--formats", default="asterisk,freeswitch")
    parser.add_argument("--db-url", default="", help="also store into this billing database")
    parser.add_argument("--pg-dir", help="start an embedded PostgreSQL here and store into it")
    parser.add_argument("--workdir", help="where the generated files go (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.pg_dir and not args.db_url:
        from chargingd.billing.db import start_embedded

        args.db_url = start_embedded(Path(args.pg_dir), "bench")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        tariff = work / "tariff"
        tariff.mkdir(exist_ok=True)
        for name, text in TARIFF.items():
            (tariff / name).write_text(text)
        t0 = time.perf_counter()
        calls = rows(args.rows)
        print(f"generated {args.rows:,} calls in {time.perf_counter() - t0:.1f} s")
        for fmt in args.formats.split(","):
            path = work / f"{fmt}.csv"
            WRITERS[fmt](path, calls)
            bench(fmt, path, args.rows, tariff, args.db_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
