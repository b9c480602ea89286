"""Where the tests find the repository, their fixtures and the shared reference data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
FIXTURES = TESTS / "fixtures"
# The CGRateS reference plans and switch CDR samples live beside the repository
# (../shared/data); a clone without them skips the tests that need them, saying so.
# CHARGINGD_SHARED_DATA points elsewhere (or at nothing, to see what skips without it).
SHARED_DATA = Path(os.environ.get("CHARGINGD_SHARED_DATA") or REPO.parent / "shared" / "data")


def needs_shared(subdir: str) -> pytest.MarkDecorator:
    """Skip, saying where the data was looked for, when ../shared/data/SUBDIR is absent."""
    where = SHARED_DATA / subdir
    return pytest.mark.skipif(
        not where.is_dir(),
        reason=f"needs the shared reference data {where} (a checkout of the project's"
        " shared/ beside the repository, as CI has it)",
    )
