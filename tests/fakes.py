"""Test doubles shared by every test folder (the fixtures that use them: conftest.py)."""

from __future__ import annotations

T0_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


class Clock:
    """Injected epoch-ms clock that tests move by hand."""

    def __init__(self, now_ms: int = T0_MS) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, seconds: float) -> int:
        self.now_ms += int(seconds * 1000)
        return self.now_ms
