"""The compiled build (setup.py, mypyc) is the package's own behaviour, or absent.

`make test` builds the request path with mypyc by default and runs the whole suite on
it (`CHARGINGD_MYPYC=0 make test`: on pure Python): these tests check that what runs is
one whole build, never a stale extension shadowing an edited module, and that the
compiled modules keep the rules setup.py lists (what mypyc compiles differently).
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

from paths import REPO

COMPILED = re.findall(r'^    "(chargingd/.*\.py)",$', (REPO / "setup.py").read_text(), re.M)
# Must stay interpreted: subclassed by interpreted code (base.py).
INTERPRETED = [
    "chargingd/ledger/base.py",
]


def _module(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def _c_source(ext: Path) -> Path:
    return ext.with_name(ext.name.split(".", 1)[0] + ".c")


def _extensions() -> list[Path]:
    """The mypyc-built modules (not radius/_mmsg.c: plain C, built in both modes)."""
    found = (REPO / "chargingd").rglob("*.so")
    return [p for p in found if "__mypyc" not in p.name and not _c_source(p).exists()]


def test_plain_c_extensions_are_never_stale() -> None:
    for ext in (REPO / "chargingd").rglob("*.so"):
        if _c_source(ext).exists():
            assert ext.stat().st_mtime >= _c_source(ext).stat().st_mtime, f"{ext} is stale"


def test_the_list_names_modules_that_exist_and_none_that_must_stay_interpreted() -> None:
    assert len(COMPILED) >= 30
    for path in COMPILED:
        assert (REPO / path).is_file(), path
    assert not set(INTERPRETED) & set(COMPILED)


def test_the_build_is_whole_or_absent_and_never_stale() -> None:
    built = _extensions()
    if not built:  # pure Python: no compiled module is loaded
        for path in COMPILED:
            assert importlib.import_module(_module(path)).__file__.endswith(".py"), path
        return
    for path in COMPILED:
        loaded = importlib.import_module(_module(path)).__file__
        assert loaded is not None and loaded.endswith(".so"), f"{path} is not compiled"
    for ext in built:
        source = ext.with_name(ext.name.split(".", 1)[0] + ".py")
        assert str(source.relative_to(REPO)) in COMPILED, f"{ext} is not in setup.py's list"
        assert ext.stat().st_mtime >= source.stat().st_mtime, f"{ext} is older than {source}"


def test_compiled_modules_keep_what_mypyc_compiles_differently() -> None:
    """Class attributes read from the class are ClassVar (a plain one becomes an instance
    default); one `except ... as NAME` type per name and function (mypyc gives the name
    the first handler's type, and the second handler's exception fails its check);
    `raise X from Y` through core.chain.chained (mypyc drops the `from`); no
    functools.cached_property (compiled, it computes again on every access)."""
    for path in COMPILED:
        tree = ast.parse((REPO / path).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                for deco in node.decorator_list:  # no instance __dict__ to cache in
                    assert "cached_property" not in ast.unparse(deco), f"{path}:{node.lineno}"
            if isinstance(node, ast.Raise) and node.cause is not None:
                assert ast.unparse(node.exc).startswith("chained("), f"{path}:{node.lineno}"
            if isinstance(node, ast.ClassDef) and not any(
                "Enum" in ast.unparse(base) for base in node.bases
            ):
                for stmt in node.body:
                    if isinstance(stmt, ast.Assign):
                        names = [ast.unparse(t) for t in stmt.targets]
                        assert names == ["__slots__"], f"{path}:{stmt.lineno}: use ClassVar"
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                seen: dict[str, str] = {}
                for sub in ast.walk(node):
                    if isinstance(sub, ast.ExceptHandler) and sub.name and sub.type:
                        kind = ast.unparse(sub.type)
                        assert seen.setdefault(sub.name, kind) == kind, (
                            f"{path}:{sub.lineno}: rename `{sub.name}`"
                        )
