"""What the default authorize rules would cost evaluated in the daemon, on per-account
state each daemon keeps (docs/fraud-cost.md "Sixteenth round": a design measured, not built).

    .venv/bin/python scripts/bench_fraud_daemon_state.py [--calls 20000] [--accounts 5000]
        [--interpreted]

Compiles scripts/proto/fraud_daemon_state.py with mypyc into a temporary directory (as
the daemon's own modules are built; --interpreted: as it is) and counts, under callgrind,
the instructions of --calls evaluations (velocity per account and identity, same range,
distinct numbers, new country, concurrent, the call's fact packed for Redis's log) over
--accounts accounts, less the same run without them. Prints instructions per call.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = HERE / "proto" / "fraud_daemon_state.py"

DRIVER = """
import random, sys
from fraud_daemon_state import AccountState, evaluate
random.seed(1)
n, accounts, run = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1"
states = [AccountState() for _ in range(accounts)]
calls = []
for _ in range(n):
    a = random.randrange(accounts)
    number = f"+4420798{random.randrange(100000):05d}"
    calls.append((states[a], f"user:{a:012d}", number, "GB"))
now = 1_796_553_530_000
if run:
    for i, (st, identity, number, country) in enumerate(calls):
        evaluate(st, now + i // 20, identity, number, country, 3)
"""


def instructions(where: Path, calls: int, accounts: int, run: bool) -> int:
    out = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
         sys.executable, str(where / "driver.py"), str(calls), str(accounts), str(int(run))],
        capture_output=True, text=True, cwd=where, check=True,
    )  # fmt: skip
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise SystemExit("callgrind gave no count:\n" + out.stderr[-2000:])
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--accounts", type=int, default=5_000)
    parser.add_argument("--interpreted", action="store_true")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("needs valgrind (apt-get install valgrind)")
    with tempfile.TemporaryDirectory() as tmp:
        where = Path(tmp)
        shutil.copy(PROTO, where / PROTO.name)
        (where / "driver.py").write_text(DRIVER)
        if not args.interpreted:
            mypyc = Path(sys.executable).with_name("mypyc")
            subprocess.run([str(mypyc), PROTO.name], cwd=where, check=True, capture_output=True)
        base = instructions(where, args.calls, args.accounts, False)
        full = instructions(where, args.calls, args.accounts, True)
    how = "interpreted" if args.interpreted else "compiled (mypyc)"
    print(f"{how}: {(full - base) / args.calls / 1000:.1f}k instructions per call "
          f"({args.calls} calls over {args.accounts} accounts)")  # fmt: skip


if __name__ == "__main__":
    main()
