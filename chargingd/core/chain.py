"""`raise chained(Error(...), cause) from cause`: the `from` that mypyc keeps.

Compiled with mypyc (setup.py), `raise X from Y` drops Y: `__cause__` stays None and
`from None` hides no context. Setting `__cause__` (None too) is what `from` does
(it also sets `__suppress_context__`), compiled or not; the `from` stays for the
reader (and ruff's B904), and does the same when interpreted.
"""

from __future__ import annotations

from typing import TypeVar

E = TypeVar("E", bound=BaseException)


def chained(error: E, cause: BaseException | None) -> E:
    error.__cause__ = cause
    return error
