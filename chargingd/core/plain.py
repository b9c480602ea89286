"""`@plain_class`: a class that stays a plain Python class in a module mypyc compiles.

Compiled with mypyc (setup.py), a class becomes a native class unless it has a class
decorator other than `dataclass` (and mypyc's own): then it stays a plain Python class
whose methods are compiled. Its instances keep their ``__dict__``, its methods can be
replaced per instance or per class (the tests that slow or break one step of a
request), and interpreted classes may subclass it. Interpreted (no build), the
decorator changes nothing either.
"""

from __future__ import annotations

from typing import TypeVar

C = TypeVar("C")


def plain_class(cls: type[C]) -> type[C]:
    """The class as it is (see the module doc)."""
    return cls
