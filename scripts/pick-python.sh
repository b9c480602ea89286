#!/bin/sh
# Which Python the Makefile makes the venv with (when PYTHON is not given): the first
# CPython >= 3.11 that can make a venv and has its C headers (mypyc compiles the request
# path against them), preferring one whose interpreter core is linked into its executable
# over one that loads it from a shared libpython.
#
# Why: the daemon spends about half its CPU inside the interpreter's core. A libpython
# loaded as a shared library without -fno-semantic-interposition (pyenv's and most
# hand-made builds: ./configure --enable-shared without --enable-optimizations) calls
# its own functions through the PLT; a distribution's python3 (Debian, Ubuntu: the core
# linked into /usr/bin/python3.X) does not. Measured with the
# side-by-side kit (auth32w1, 1 worker, the same compiled tree): the daemon's CPU per
# Access-Request 84-87 us on pyenv's 3.11.7, 66-72 us on Debian's 3.11.2
# (docs/performance.md, round 23). `make PYTHON=/path/to/python3` chooses by hand.
#
# Prints the chosen interpreter's path; with none usable, "python3" (the Makefile then
# says what is missing).
set -u
best=""
best_static=0
seen=""
# (PICK_PYTHON_CANDIDATES: other candidates, in order; tests/scripts/test_pick_python.py)
for cand in ${PICK_PYTHON_CANDIDATES:-python3 /usr/bin/python3 /usr/local/bin/python3 python3.13 python3.12 python3.11}; do
  path=$(command -v "$cand" 2>/dev/null) || continue
  real=$(readlink -f "$path" 2>/dev/null || echo "$path")
  case " $seen " in *" $real "*) continue ;; esac
  seen="$seen $real"
  # (pyenv's shim is a script: what it runs is asked of the interpreter itself)
  verdict=$("$path" - 2>/dev/null <<'PY'
import os, sys, sysconfig
if sys.implementation.name != "cpython" or sys.version_info < (3, 11):
    raise SystemExit(1)
try:
    import ensurepip, venv  # noqa: F401  (Debian without python3-venv has no ensurepip)
except ImportError:
    raise SystemExit(1)
if not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")):
    raise SystemExit(1)
try:
    with open("/proc/self/maps") as maps:
        shared = any("libpython" in line for line in maps)
except OSError:  # (no /proc: not Linux; nothing to prefer it by)
    shared = True
print(("shared" if shared else "static") + " " + sys.executable)
PY
) || continue
  kind=${verdict%% *}
  exe=${verdict#* }
  if [ "$kind" = static ] && [ "$best_static" = 0 ]; then
    best=$exe
    best_static=1
  elif [ -z "$best" ]; then
    best=$exe
  fi
done
echo "${best:-python3}"
