"""Where the tests find the repository, their fixtures and the shared reference data."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
FIXTURES = TESTS / "fixtures"
# The CGRateS reference plans and switch CDR samples live beside the repository
# (../shared/data); a clone without them skips the tests that need them, saying so.
SHARED_DATA = REPO.parent / "shared" / "data"
