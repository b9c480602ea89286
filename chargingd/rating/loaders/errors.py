"""The one error every tariff loader raises: where (file, line, key path) and why."""

from __future__ import annotations

from pathlib import Path


class TariffLoadError(ValueError):
    """A tariff that cannot be loaded: names the file, the line or key path, the reason."""

    def __init__(self, file: str | Path, reason: str, *, line: int | None = None, key: str = ""):
        self.file = str(file)
        self.line = line
        self.key = key
        self.reason = reason
        where = self.file + (f":{line}" if line else "") + (f": {key}" if key else "")
        super().__init__(f"{where}: {reason}")
