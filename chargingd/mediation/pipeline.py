"""The mediation run: read a file, normalise, rate, store; rejects to a CSV file.

``normalised`` is the pure half (lines in, calls and rejects out) and needs no
database. ``Mediator`` adds the payer lookup, rating and the injected ``store``
(BillingDB.store_cdrs, or a MemoryStore), batch by batch.
"""

from __future__ import annotations

import csv
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from chargingd.billing.cdr import CDR, CdrStatus
from chargingd.core.config.mediation import SourceConfig
from chargingd.mediation.formats import parser_for
from chargingd.mediation.normalise import Call, Normaliser
from chargingd.mediation.payers import Payers
from chargingd.mediation.rate import Rater
from chargingd.mediation.records import RawCall, Reject, RowError

Store = Callable[[Sequence[CDR]], Awaitable[int]]
Progress = Callable[[int], None]  # advanced by the characters read


@dataclass
class Summary:
    """What one run did; read = calls and rejected rows seen."""

    read: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    unanswered: int = 0
    reject_file: str = ""
    files: list[str] = field(default_factory=list)

    def add(self, other: Summary) -> None:
        """Add another file's counts to this one."""
        self.read += other.read
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.rejected += other.rejected
        self.unanswered += other.unanswered
        self.files.extend(other.files)

    def line(self) -> str:
        """The one-line summary printed at the end of a run."""
        return (
            f"read {self.read}, stored {self.stored}, duplicates {self.duplicates}, "
            f"rejected {self.rejected}, unanswered {self.unanswered}"
        )


class MemoryStore:
    """An in-memory CDR store, idempotent on (source, call_id) like the billing DB."""

    def __init__(self) -> None:
        self.cdrs: dict[tuple[str, str], CDR] = {}

    async def __call__(self, cdrs: Sequence[CDR]) -> int:
        new = 0
        for cdr in cdrs:
            key = (cdr.source, cdr.call_id)
            if key not in self.cdrs:
                self.cdrs[key] = cdr
                new += 1
        return new


def normalised(
    lines: Iterable[str], name: str, source: SourceConfig
) -> Iterator[tuple[int, Call | Reject]]:
    """(line number, normalised call or reject) for each record: no I/O, no database."""
    normaliser = Normaliser(name, source)
    for line_no, item in parser_for(source)(lines):
        if isinstance(item, RawCall):
            try:
                yield line_no, normaliser.call(item)
            except RowError as exc:
                yield line_no, Reject(str(exc), item.call_id)
        else:
            yield line_no, item


class RejectWriter:
    """FILE.rejects.csv (line, reason, raw), created on the first reject only."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None
        self._writer: Any = None  # a csv writer (its type is private to _csv)

    def write(self, line_no: int, reject: Reject) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "w", newline="", encoding="utf-8")  # noqa: SIM115
            self._writer = csv.writer(self._fh)
            self._writer.writerow(("line", "reason", "raw"))
        self._writer.writerow((line_no, reject.reason, reject.raw))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def rejects_path(path: Path, rejects_dir: str) -> Path:
    """Where the rejects of ``path`` go: FILE.rejects.csv, next to it or in rejects_dir."""
    name = path.name + ".rejects.csv"
    return Path(rejects_dir) / name if rejects_dir else path.with_name(name)


def counted(fh: Iterable[str], progress: Progress | None, every: int = 4096) -> Iterator[str]:
    """The lines of ``fh``, reporting characters read to ``progress`` every ``every`` lines."""
    if progress is None:
        yield from fh
        return
    pending = 0
    for i, line in enumerate(fh, start=1):
        pending += len(line)
        if i % every == 0:
            progress(pending)
            pending = 0
        yield line
    progress(pending)


class Mediator:
    """Mediates the files of one source into ``store``."""

    def __init__(
        self,
        name: str,
        source: SourceConfig,
        *,
        payers: Payers,
        rater: Rater,
        store: Store,
        batch_size: int = 1000,
    ) -> None:
        self.name = name
        self.source = source
        self.payers = payers
        self.rater = rater
        self.store = store
        self.batch_size = batch_size

    async def run_lines(self, lines: Iterable[str], rejects: RejectWriter | None = None) -> Summary:
        """Mediate one file's lines; rejects go to ``rejects`` when given."""
        summary = Summary()
        batch: list[CDR] = []
        for line_no, item in normalised(lines, self.name, self.source):
            summary.read += 1
            cdr = item if isinstance(item, Reject) else await self._rated(item)
            if isinstance(cdr, Reject):
                summary.rejected += 1
                if rejects is not None:
                    rejects.write(line_no, cdr)
                continue
            batch.append(cdr)
            if len(batch) >= self.batch_size:
                await self._flush(batch, summary)
        await self._flush(batch, summary)
        return summary

    async def _rated(self, call: Call) -> CDR | Reject:
        try:
            payer = await self.payers.payer(call)
            return self.rater.cdr(call, payer)
        except RowError as exc:
            return Reject(str(exc), call.call_id)

    async def _flush(self, batch: list[CDR], summary: Summary) -> None:
        if not batch:
            return
        inserted = await self.store(batch)
        summary.stored += inserted
        summary.duplicates += len(batch) - inserted
        summary.unanswered += sum(1 for c in batch if c.status == CdrStatus.UNANSWERED)
        batch.clear()

    async def run_file(
        self, path: Path, rejects_dir: str = "", progress: Progress | None = None
    ) -> Summary:
        """Mediate one file; its rejects go to FILE.rejects.csv."""
        writer = RejectWriter(rejects_path(path, rejects_dir))
        try:
            with open(path, encoding="utf-8", errors="replace", newline="") as fh:
                summary = await self.run_lines(counted(fh, progress), writer)
        finally:
            writer.close()
        summary.files.append(str(path))
        if summary.rejected:
            summary.reject_file = str(writer.path)
        else:
            writer.path.unlink(missing_ok=True)  # a stale file of an earlier run
        return summary
