"""Optional compiled build of the hot pure modules (issue 15); pyproject.toml has the rest.

`CHARGINGD_MYPYC=1` compiles the RADIUS codec, E.164 normalisation and the rating
walk with mypyc (the code is mypy --strict, which mypyc needs): 20-35% less CPU in
those modules, about 5% of an authorize (docs/performance.md). Without the variable
(the default, and `make test`) nothing is compiled and the package is pure Python.
`make compiled` builds the extensions in place (next to the .py files, which they
shadow until `make uncompiled` removes them).
"""

from __future__ import annotations

import os

from setuptools import setup

COMPILED = [
    "chargingd/radius/codec.py",
    "chargingd/core/numbers.py",
    "chargingd/rating/engine.py",
    "chargingd/rating/price.py",
    "chargingd/rating/card.py",
    "chargingd/rating/prefixes.py",
    "chargingd/rating/resolve.py",
]

ext_modules = []
if os.environ.get("CHARGINGD_MYPYC") == "1":
    from mypyc.build import mypycify  # mypy is a dev dependency

    ext_modules = mypycify(COMPILED, opt_level="3")

setup(ext_modules=ext_modules)
