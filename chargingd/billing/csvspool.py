"""Rotated CSV files of exported CDRs, for billing systems that take files.

Rows go to a hidden ``.tmp`` file; a file is published by an atomic rename once it
holds ``rotate_rows`` rows or is ``rotate_s`` old, so a reader never sees a partial
file. After a crash the leftover ``.tmp`` is continued: its partial last line is cut
and the keys it holds are remembered, so a redelivered batch is not written twice.
A corrected CDR (a higher ``revision`` of a call, sessions/late.py) is a new row even
when the file holds the call already: the row with the highest revision counts.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from chargingd.billing.cdr import CDR
from chargingd.core.money import format_amount

log = logging.getLogger("chargingd.cdrcsv")

COLUMNS = (
    "source", "call_id", "account_id", "caller", "callee", "destination", "start_utc",
    "answer_utc", "end_utc", "duration_s", "billed_s", "cost", "currency", "tariff",
    "gateway", "disconnect_cause", "status", "extra", "charged", "charge", "charge_reason",
    "revision",
)  # fmt: skip


def _iso(ms: int) -> str:
    if ms == 0:
        return ""
    stamp = datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{ms % 1000:03d}Z"


def csv_row(c: CDR) -> list[str]:
    """One CDR as CSV fields: UTC ISO times, money as decimal strings (at the edge).

    ``charged`` (what the ledger moved), ``charge``, ``charge_reason`` and
    ``revision`` come last so readers of the older column sets keep their positions."""
    return [
        c.source, c.call_id, c.account_id, c.caller, c.callee, c.destination,
        _iso(c.start_ms), _iso(c.answer_ms), _iso(c.end_ms), str(c.duration_s),
        str(c.billed_s), format_amount(c.cost_micros), c.currency, c.tariff, c.gateway,
        str(c.disconnect_cause), c.status, json.dumps(c.extra, sort_keys=True),
        format_amount(c.charged_micros), c.charge, c.charge_reason, str(c.revision),
    ]  # fmt: skip


class CsvSpool:
    """The current CSV file of one exporter (``name`` keeps two exporters apart)."""

    def __init__(
        self,
        directory: Path,
        *,
        name: str,
        rotate_rows: int,
        rotate_s: int,
        clock_s: Callable[[], float] = time.time,
    ) -> None:
        self.dir = directory
        self.name = re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "exporter"
        self.rotate_rows = rotate_rows
        self.rotate_s = rotate_s
        self.clock_s = clock_s
        self.tmp_path = self.dir / f".cdrs-{self.name}.csv.tmp"
        self.rows = 0
        self.opened_s = 0.0
        self.published = 0
        self._keys: dict[tuple[str, str], int] = {}  # (source, call_id) -> revision
        self._fh: io.TextIOWrapper | None = None

    def _open(self) -> io.TextIOWrapper:
        if self._fh is not None:
            return self._fh
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.tmp_path.exists():
            self._recover()
        fh = open(self.tmp_path, "a", newline="", encoding="utf-8")  # noqa: SIM115
        if self.rows == 0 and fh.tell() == 0:
            csv.writer(fh).writerow(COLUMNS)
            self.opened_s = self.clock_s()
        self._fh = fh
        return fh

    def _recover(self) -> None:
        """Continue a file left by a crash: cut a partial last line, remember its keys."""
        data = self.tmp_path.read_bytes()
        cut = data.rfind(b"\n") + 1
        if cut < len(data):
            with open(self.tmp_path, "r+b") as fh:
                fh.truncate(cut)
        lines = data[:cut].decode("utf-8").splitlines()
        parsed = list(csv.reader(lines))
        if parsed and tuple(parsed[0]) != COLUMNS:
            # Written by a version with other columns: publish it as it is, start anew.
            self.rows = max(1, len(parsed) - 1)
            self._publish()
            return
        rows = parsed[1:]
        rev = COLUMNS.index("revision")
        self._keys = {}
        for r in rows:
            if len(r) > rev:
                key = (r[0], r[1])
                self._keys[key] = max(self._keys.get(key, -1), _int(r[rev]))
        self.rows = len(rows)
        self.opened_s = self.tmp_path.stat().st_mtime if self.rows else self.clock_s()
        log.info("csv export: continuing %s with %d rows", self.tmp_path, self.rows)

    def write(self, cdrs: Sequence[CDR]) -> None:
        """Append CDRs not yet in the current file (or a higher revision of one that
        is: a correction), and flush to the OS."""
        fh = self._open()
        writer = csv.writer(fh)
        for c in cdrs:
            key = (c.source, c.call_id)
            if self._keys.get(key, -1) >= c.revision:
                continue
            self._keys[key] = c.revision
            writer.writerow(csv_row(c))
            self.rows += 1
        fh.flush()

    def due(self) -> bool:
        """True when the current file should be published."""
        if self.rows == 0:
            return False
        if self.rotate_rows and self.rows >= self.rotate_rows:
            return True
        return bool(self.rotate_s) and self.clock_s() - self.opened_s >= self.rotate_s

    def rotate(self) -> Path | None:
        """Publish the current file (fsync, then rename); None when it is empty."""
        if self._fh is None and self.tmp_path.exists():
            self._open()
        if self._fh is None or self.rows == 0:
            return None
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._fh = None
        return self._publish()

    def _publish(self) -> Path:
        """Rename the .tmp file to its final name (fsync of the directory after)."""
        stamp = datetime.fromtimestamp(self.clock_s(), UTC).strftime("%Y%m%dT%H%M%S")
        final = self.dir / f"cdrs-{self.name}-{stamp}-{self.published:06d}.csv"
        while final.exists():
            self.published += 1
            final = self.dir / f"cdrs-{self.name}-{stamp}-{self.published:06d}.csv"
        os.rename(self.tmp_path, final)
        dir_fd = os.open(self.dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        self.published += 1
        self.rows = 0
        self._keys = {}
        log.info("csv export: published %s", final)
        return final

    def close(self) -> None:
        """Publish what is written (a clean stop leaves no .tmp behind)."""
        self.rotate()
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self.rows == 0 and self.tmp_path.exists():
            self.tmp_path.unlink()


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0
