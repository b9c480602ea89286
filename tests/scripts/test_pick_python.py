"""scripts/pick-python.sh: the Python the Makefile makes the venv with (PYTHON unset).

It must answer an interpreter that can build chargingd (CPython >= 3.11, venv, its C
headers) and prefer one whose core is linked into its executable over one loading a
shared libpython (the daemon's CPU per request ~20 % lower: docs/performance.md round
23). The candidates are the machine's real interpreters."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "pick-python.sh"

PROBE = """
import os, sys, sysconfig
ok = sys.version_info >= (3, 11)
try:
    import ensurepip, venv
except ImportError:
    ok = False
ok = ok and os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))
with open("/proc/self/maps") as maps:
    shared = any("libpython" in line for line in maps)
print(int(ok), int(shared))
"""


def pick(candidates: list[str] | None = None) -> str:
    env = dict(os.environ)
    if candidates is not None:
        env["PICK_PYTHON_CANDIDATES"] = " ".join(candidates)
    out = subprocess.run(
        ["sh", str(SCRIPT)], capture_output=True, text=True, env=env, check=True, timeout=60
    )
    return out.stdout.strip()


def probe(python: str) -> tuple[bool, bool]:
    """(usable to build chargingd, loads a shared libpython)"""
    out = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, timeout=30)
    if out.returncode:
        return False, True
    ok, shared = out.stdout.split()
    return ok == "1", shared == "1"


def interpreters() -> dict[str, bool]:
    """The machine's usable interpreters (real paths) -> loads a shared libpython."""
    found: dict[str, bool] = {}
    names = [sys.executable, "python3", "/usr/bin/python3", "/usr/local/bin/python3"]
    for name in names:
        path = shutil.which(name)
        if path is None:
            continue
        real = os.path.realpath(path)
        if real in found:
            continue
        usable, shared = probe(real)
        if usable:
            found[real] = shared
    return found


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux's /proc")
def test_the_default_pick_can_build_chargingd() -> None:
    chosen = pick()
    usable, _ = probe(chosen)
    assert usable, f"{chosen} cannot make chargingd's venv"
    kinds = interpreters()
    if any(not shared for shared in kinds.values()):  # a static core exists: it wins
        assert not probe(chosen)[1], f"{chosen} loads a shared libpython; {kinds}"


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux's /proc")
def test_a_core_in_the_executable_is_preferred_in_either_order() -> None:
    kinds = interpreters()
    static = [p for p, shared in kinds.items() if not shared]
    shared = [p for p, is_shared in kinds.items() if is_shared]
    if not static or not shared:
        pytest.skip(f"needs one interpreter of each kind on this machine: {kinds}")
    for order in ([shared[0], static[0]], [static[0], shared[0]]):
        assert os.path.realpath(pick(order)) == os.path.realpath(static[0])


def test_unusable_candidates_are_passed_over(tmp_path: Path) -> None:
    old = tmp_path / "python-old"  # an interpreter too old (or no CPython at all)
    old.write_text("#!/bin/sh\nexit 1\n")
    old.chmod(0o755)
    assert pick([str(old), str(tmp_path / "missing")]) == "python3"
    usable = [p for p in interpreters()]
    if not usable:
        pytest.skip("no usable interpreter on this machine")
    chosen = pick([str(old), usable[0]])
    assert os.path.realpath(chosen) == os.path.realpath(usable[0])
