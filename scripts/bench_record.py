"""Microbenchmark: the per-request objects of sessions/ as a request builds them (issue
#15 round 8a): a CallInfo per packet, a new call's SessionRecord built and packed as
the fused authorize sends it, an interim's noted record (noting.note + Noted.after),
a stored record decoded (SessionRecord.unpack).

    PYTHONPATH=$PWD .venv/bin/python scripts/bench_record.py [loops] [runs] [step]

Prints ns per operation (min of the runs) for each step; compare two trees with the
same command (compiled: the .so files of each). The same steps under callgrind give
instruction counts that do not depend on the machine's load:

    valgrind --tool=callgrind --callgrind-out-file=/dev/null .venv/bin/python \
        scripts/bench_record.py 20000 1 STEP
    (minus the same with 0 loops: the start-up), divided by the loops; STEP is the
    index of one step (all by default)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from chargingd.sessions.ccapi import CallInfo
from chargingd.sessions.noting import note
from chargingd.sessions.record import SessionRecord

AUTH_MS = 1_799_150_400_000


def call_info(i: int) -> object:
    return CallInfo(
        f"sess-{i}",
        "alice",
        "+4930123456",
        "00447700900123",
        "10.0.0.1",
        "gw1",
        conf_id=f"sess-{i}",
        lookup=("user", "ani"),
        caller_ip="192.0.2.7",
    )


def new_record(i: int, **more: int) -> SessionRecord:
    """What RecordMaker.new_record builds for a new call (``more``: later fields)."""
    return SessionRecord.build(
        session_id=f"sess-{i}",
        account_id="acc1",
        user_name="alice",
        caller="+4930123456",
        callee="+447700900123",
        destination="UK_MOBILE",
        plan="default",
        currency="EUR",
        gateway="10.0.0.1",
        client="gw1",
        auth_ms=AUTH_MS + i,
        last_seen_ms=AUTH_MS + i,
        held_micros=150_000,
        paid_usage_s=60,
        nas_session_id="",
        conf_id=f"sess-{i}",
        call_origin="answer",
        **more,
    )


REC = new_record(1, answer_ms=AUTH_MS + 2_000, last_usage_s=60, debited_micros=10_000)
BLOB = REC.pack()


def authorize_record(i: int) -> object:
    return new_record(i).pack(extra=1, omit=("credit_micros",))


def interim_record(i: int) -> object:
    noted = note(BLOB, REC, usage_s=60 + i % 60, now_ms=AUTH_MS + 65_000, answer_ms=0)
    assert noted is not None
    return noted.after(held_micros=150_000, paid_usage_s=180)


def read_record(i: int) -> object:
    return SessionRecord.unpack("acc1", "sess-1", BLOB)


STEPS: dict[str, Callable[[int], object]] = {
    "CallInfo": call_info,
    "new record + pack": authorize_record,
    "interim note + after": interim_record,
    "unpack": read_record,
}


def main() -> None:
    loops = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    only = int(sys.argv[3]) if len(sys.argv) > 3 else -1
    for index, (name, step) in enumerate(STEPS.items()):
        if only >= 0 and index != only:
            continue
        best = float("inf")
        for _ in range(runs):
            began = time.perf_counter_ns()
            for i in range(loops):
                step(i)
            best = min(best, (time.perf_counter_ns() - began) / max(loops, 1))
        print(f"{name:24s} {best:8.0f} ns")


if __name__ == "__main__":
    main()
