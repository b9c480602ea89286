#!/usr/bin/env python3
"""Fold a perf profile of the compiled daemon: where its CPU goes, by compiled function.

mypyc's functions are C symbols (``CPyDef_chargingd___sessions___fused___authorize_...``);
an interpreted Python frame is ``_PyEval_EvalFrameDefault`` (CPython 3.11 has no perf
trampoline), named here by the compiled frame it runs under and the C call that entered
it (``_PyObject_Call_Prepend``: a class's Python ``__init__``, e.g. a dataclass's).
Record with call graphs that unwind without frame pointers (docs/performance.md, round
7b), while a load runs against the daemon:

    perf record -e cpu-clock -F 499 --call-graph dwarf,16384 -o perf.data -p PID -- sleep 8
    python3 scripts/perf_fold.py perf.data [--top 40]

Prints: the leaf's library, the self share by owner (the innermost compiled function,
or the interpreted frame under it), the inclusive share by compiled function and by
compiled module, the interpreted share, and how interpreted code was entered.
"""

from __future__ import annotations

import argparse
import collections
import re
import subprocess

Frame = tuple[str, str]  # (symbol, library file name)
LINE = re.compile(r"\s*[0-9a-f]+ (.*?)(?: \((.*)\))?$")


def samples(perf_data: str) -> list[list[Frame]]:
    """Each sample's stack, leaf first."""
    text = subprocess.run(
        ["perf", "script", "-i", perf_data, "-F", "comm,tid,period,ip,sym,dso"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    out: list[list[Frame]] = []
    current: list[Frame] | None = None
    for line in text.splitlines():
        if not line.strip():
            if current:
                out.append(current)
            current = None
        elif not line[0].isspace():
            current = []
        elif current is not None:
            m = LINE.match(line.rstrip())
            if m:
                current.append((m.group(1), (m.group(2) or "").rsplit("/", 1)[-1]))
    if current:
        out.append(current)
    return out


def compiled(frame: Frame) -> bool:
    sym, lib = frame
    return "__mypyc" in lib and sym.startswith(("CPyDef_chargingd", "CPyPy_chargingd"))


def short(sym: str) -> str:
    s = re.sub(r"^CPy(Def|Py)_chargingd___", "", sym)
    s = re.sub(r"_gen_____mypyc_generator_helper__$", " (coroutine)", s)
    return s.replace("___", ".")


def interpreted_at(stack: list[Frame]) -> int | None:
    """Index of the eval loop frame below the innermost compiled one, if any."""
    for i, frame in enumerate(stack):
        if compiled(frame):
            return None
        if frame[0].startswith("_PyEval_EvalFrameDefault"):
            return i
    return None


def fold(stacks: list[list[Frame]], top: int) -> None:
    n = len(stacks)
    leaf: collections.Counter[str] = collections.Counter()
    owner: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    modules: collections.Counter[str] = collections.Counter()
    entered: collections.Counter[str] = collections.Counter()
    interpreted = 0
    for stack in stacks:
        sym, lib = stack[0] if stack else ("?", "?")
        if lib.startswith("libpython"):
            lib = "libpython: eval loop" if "EvalFrame" in sym else "libpython: runtime"
        leaf["compiled chargingd" if "__mypyc" in lib else lib or "inlined"] += 1
        at = interpreted_at(stack)
        above = next((short(f[0]) for f in stack[at or 0 :] if compiled(f)), "-")
        if at is not None:
            interpreted += 1
            owner[f"[interpreted] under {above}"] += 1
            calls = [s for s, _ in stack[at + 1 :] if not s.endswith("(inlined)")]
            entered[f"{above} via {' < '.join(calls[:3])}"] += 1
        else:
            inner = next((short(f[0]) for f in stack if compiled(f)), None)
            owner[inner or f"[no Python frame] {stack[0][1] if stack else '?'}"] += 1
        names = {short(f[0]) for f in stack if compiled(f)}
        inclusive.update(names)
        modules.update({f[1].split("__mypyc")[0] for f in stack if compiled(f)})

    def table(title: str, counts: collections.Counter[str], rows: int) -> None:
        print(f"\n## {title} ({n} samples)")
        for key, count in counts.most_common(rows):
            print(f"{100 * count / n:6.1f}%  {key}")

    table("self, by the leaf's library", leaf, 15)
    table("self, by owner (innermost compiled function, or interpreted frame)", owner, top)
    table("inclusive, by compiled function", inclusive, top)
    table("inclusive, by compiled module", modules, 25)
    print(f"\n## interpreted: {100 * interpreted / max(n, 1):.1f}% of the samples")
    table("interpreted code entered from (compiled caller via C calls)", entered, 20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("perf_data")
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args()
    fold(samples(args.perf_data), args.top)


if __name__ == "__main__":
    main()
