"""The package layout is enforced: import contracts (`make lint`) fail on an upward import
or an import cycle, and pass on the tree as it is."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from paths import REPO

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint_copy(tmp_path: Path, edits: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """lint-imports on a copy of the package with `edits` (path -> appended line)."""
    src = tmp_path / "src"
    shutil.copytree(
        REPO / "chargingd", src / "chargingd", ignore=shutil.ignore_patterns("__pycache__")
    )
    for rel, line in edits.items():
        with (src / "chargingd" / rel).open("a") as fh:
            fh.write(f"\n{line}\n")
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    env = {**os.environ, "PYTHONPATH": str(src)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture(scope="module")
def contracts() -> list[dict[str, object]]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    found: list[dict[str, object]] = config["tool"]["importlinter"]["contracts"]
    return found


def test_layers_name_every_part_and_core_is_the_bottom(contracts: list[dict[str, object]]) -> None:
    layers = next(c for c in contracts if c["type"] == "layers")["layers"]
    assert isinstance(layers, list)
    named = {p.strip() for layer in layers for p in layer.split("|")}
    parts = {
        f"chargingd.{p.name}"
        for p in (REPO / "chargingd").iterdir()
        if p.is_dir() and (p / "__init__.py").exists()
    }
    assert named == parts  # a new part must take its place in the layers
    assert layers[-1] == "chargingd.core"


@pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter not installed (dev extra)")
def test_the_tree_keeps_every_contract(tmp_path: Path) -> None:
    result = _lint_copy(tmp_path, {})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter not installed (dev extra)")
def test_an_upward_import_breaks_the_layers(tmp_path: Path) -> None:
    # core (the bottom layer) reaching up into the ledger.
    result = _lint_copy(tmp_path, {"core/money.py": "import chargingd.ledger.keys  # noqa"})
    assert result.returncode != 0
    assert "Parts are layered" in result.stdout and "BROKEN" in result.stdout
    assert "chargingd.core.money -> chargingd.ledger.keys" in result.stdout


@pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter not installed (dev extra)")
def test_an_import_cycle_inside_a_part_is_refused(tmp_path: Path) -> None:
    # The rating model importing its engine again (the cycle this layout removed).
    result = _lint_copy(tmp_path, {"rating/model.py": "import chargingd.rating.engine  # noqa"})
    assert result.returncode != 0
    assert "No import cycles" in result.stdout and "BROKEN" in result.stdout


def test_only_the_ledger_names_ledger_keys_or_reads_an_account_hash() -> None:
    """Outside chargingd/ledger no code or script builds a ledger key or reads `:acct`
    (the one hash tag helper, keys.account_tag, is shared with the session store)."""
    import re

    ledger_keys = re.compile(
        r"ledger:identities|ledger:holdidx|IDENTITIES_KEY|HOLD_INDEX_KEY|:acct\b|:holds\b"
        r"|:leases\b|:audit\b|:ls:|:txn:|acct_key|session_keys|HMGET', KEYS\[1\], 'tariff'"
    )
    found = []
    for path in sorted((REPO / "chargingd").rglob("*")):
        if path.suffix not in (".py", ".lua") or "ledger" in path.relative_to(REPO).parts[1:2]:
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if ledger_keys.search(line):
                found.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert found == []
