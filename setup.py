"""The compiled build of the request path (issue 15); pyproject.toml has the rest.

`CHARGINGD_MYPYC=1 python setup.py build_ext --inplace` compiles COMPILED with mypyc
(the code is mypy --strict, which mypyc needs) into extension modules next to the .py
files, which they shadow; the Makefile does this by default when the venv is set up
and whenever one of them changes (`CHARGINGD_MYPYC=0 make ...`: pure Python), and
falls back to pure Python, saying so, when the build fails. Without the variable
(`pip install .`, the wheel) nothing is compiled. docs/performance.md has the figures.
With CHARGINGD_MYPYC=0 or 1 (both Makefile modes, the Dockerfile) the plain C extension
radius/_mmsg.c is built too (Linux; optional: intake.py falls back without it), and
ledger/_resp.c (the batcher's RESP packer; optional: thin.py packs without it), and
fraud/_local.c (the fraud rules' evaluation; optional: fraud/local.py evaluates without it).

What a compiled module must not do (mypyc; tests/test_compiled.py checks the build):
no interpreted subclass of its classes (ledger/base.py stays interpreted: ledger.py
subclasses it), class attributes read from the class declared `ClassVar`, no two
`except ... as NAME` of different types in one function, no argument typed narrower
than what callers pass at run time (the ledger's validating steps.py/keys.py take
`object` where a caller's value is checked, so a float amount stays InvalidRequest,
not a compiled TypeError), no instance `__dict__` in a native class (the classes
built per request, e.g. SessionRecord and CallInfo, have `__slots__` and their own
`__init__`; `replace`/`as_dict` methods stand for dataclasses.replace/asdict).
"""

from __future__ import annotations

import os
import sys

from setuptools import Extension, setup

COMPILED = [
    "chargingd/core/clock.py",
    "chargingd/core/identities.py",
    "chargingd/core/money.py",
    "chargingd/core/numbers.py",
    "chargingd/fraud/compiled.py",
    "chargingd/fraud/destinations.py",
    "chargingd/fraud/engine.py",
    "chargingd/fraud/keys.py",
    "chargingd/fraud/local.py",
    "chargingd/fraud/numtypes.py",
    "chargingd/fraud/plan.py",
    "chargingd/fraud/rules.py",
    "chargingd/fraud/types.py",
    "chargingd/ledger/batch.py",
    "chargingd/ledger/codec.py",
    "chargingd/ledger/keys.py",
    "chargingd/ledger/steps.py",
    "chargingd/ledger/thin.py",
    "chargingd/ledger/types.py",
    "chargingd/ledger/usage.py",
    "chargingd/monitoring/metered.py",
    "chargingd/monitoring/meters.py",
    "chargingd/radius/accesslog.py",
    "chargingd/radius/clients.py",
    "chargingd/radius/codec.py",
    "chargingd/radius/droplog.py",
    "chargingd/radius/intake.py",
    "chargingd/radius/quality.py",
    "chargingd/radius/server.py",
    "chargingd/radius/translate.py",
    "chargingd/rating/card.py",
    "chargingd/rating/engine.py",
    "chargingd/rating/prefixes.py",
    "chargingd/rating/price.py",
    "chargingd/rating/resolve.py",
    "chargingd/sessions/accounting.py",
    "chargingd/sessions/authorize.py",
    "chargingd/sessions/ccapi.py",
    "chargingd/sessions/close.py",
    "chargingd/sessions/fraudhook.py",
    "chargingd/sessions/fused.py",
    "chargingd/sessions/grants.py",
    "chargingd/sessions/indexes.py",
    "chargingd/sessions/late.py",
    "chargingd/sessions/modes.py",
    "chargingd/sessions/newrecord.py",
    "chargingd/sessions/noting.py",
    "chargingd/sessions/pricing.py",
    "chargingd/sessions/record.py",
    "chargingd/sessions/service.py",
    "chargingd/sessions/settle.py",
    "chargingd/sessions/shards.py",
    "chargingd/sessions/store.py",
]

ext_modules = []
if os.environ.get("CHARGINGD_MYPYC") == "1":
    from mypyc.build import mypycify  # mypy is a dev dependency

    # separate: one C file and extension per module, so `build_ext --parallel` uses
    # every core and an edit recompiles that module only. Its own mypy cache: one that
    # `make lint`'s mypy wrote lacks what mypyc keeps (a mixed one made C that failed).
    ext_modules = mypycify(
        ["--cache-dir", "build/mypyc-cache", *COMPILED], opt_level="3", separate=True
    )

# recvmmsg/sendmmsg for the RADIUS ports (radius/_mmsg.c): plain C, Linux only, built
# in both of the Makefile's modes (CHARGINGD_MYPYC=1 and =0). Optional: a failed build
# leaves intake.py on socket.recvmsg/sendto, as does a machine that is not Linux.
if os.environ.get("CHARGINGD_MYPYC") in ("0", "1") and sys.platform == "linux":
    ext_modules.append(
        Extension("chargingd.radius._mmsg", ["chargingd/radius/_mmsg.c"], optional=True)
    )
# The batcher's RESP packer (ledger/_resp.c): plain C, in both modes, optional too (without
# it ledger/thin.py packs the batch itself: the same bytes).
if os.environ.get("CHARGINGD_MYPYC") in ("0", "1"):
    ext_modules.append(
        Extension("chargingd.ledger._resp", ["chargingd/ledger/_resp.c"], optional=True)
    )

# The fraud rules' evaluation on the stored bytes (fraud/_local.c): plain C, both modes,
# optional (without it fraud/local.py evaluates in Python: the same bytes).
if os.environ.get("CHARGINGD_MYPYC") in ("0", "1"):
    ext_modules.append(
        Extension("chargingd.fraud._local", ["chargingd/fraud/_local.c"], optional=True)
    )

setup(ext_modules=ext_modules)
