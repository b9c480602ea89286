"""The mediation run: read a file, normalise, rate, charge, store; rejects to a CSV file.

``normalised`` is the pure half (lines in, calls and rejects out) and needs no
database. ``Mediator`` adds the payer lookup, rating, the source's charge mode
(mediation.charge) and the injected store (the billing database, or memory), batch
by batch. A ``--dry-run`` writes nothing at all: no CDR, no ledger debit, no rejects
file (its rejects are kept in the Summary for the command to show).
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import lzma
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, TypeGuard

from chargingd.billing.cdr import CDR, CdrStatus
from chargingd.core.config.mediation import SourceConfig
from chargingd.core.currencies import totals_text
from chargingd.mediation.charge import Charger
from chargingd.mediation.formats import freeswitch, parser_for
from chargingd.mediation.legs import LEG_KIND, LEG_REASON, due, settle
from chargingd.mediation.normalise import Call, Normaliser
from chargingd.mediation.pairing import (
    PAIRED_FORMATS,
    REJOINED_FORMATS,
    Met,
    expire,
    rejoin,
    resolve,
)
from chargingd.mediation.payers import Payers
from chargingd.mediation.pendingdb import PendingHalf
from chargingd.mediation.rate import Rater
from chargingd.mediation.records import (
    BRIDGE,
    DANGLING,
    LONE,
    TAIL,
    BLeg,
    Conference,
    Half,
    Internal,
    InternalCallError,
    RawCall,
    Reject,
    RowError,
)
from chargingd.mediation.store import CdrStore

Progress = Callable[[int], None]  # advanced by the characters read
BOM = "\ufeff"  # a UTF-8 byte-order mark, decoded: any format's file may start with one
NUL_REASON = "damaged record: a NUL byte in it (the file was damaged: a crash while written?)"
DRY_RUN_REJECTS_KEPT = 1000


@dataclass
class Summary:
    """What one run did; read = calls and rejected rows seen."""

    read: int = 0
    stored: int = 0
    duplicates: int = 0
    rejected: int = 0
    internal: int = 0  # calls to an internal extension (internal_max_digits): skipped
    b_legs: int = 0  # B-legs of bridged calls their A-leg bills (cdr_csv legs = "ab"): skipped
    conference: int = 0  # CUCM conference bridge legs that bill nothing: skipped
    unanswered: int = 0
    # what the ledger moved for the stored calls, per currency (a source's accounts may
    # hold several: never one sum)
    charged: dict[str, int] = field(default_factory=dict)
    would_debit: dict[str, int] = field(default_factory=dict)  # --dry-run: a real run's
    pending: int = 0  # halves of calls kept for their other half (the source's, after the run)
    # records left for the next run: a file being written (ended()), its last record
    # without its end; a spool directory's files being written
    unfinished: int = 0
    unfinished_line: int = 0  # the line where this file's unfinished record starts
    reject_file: str = ""
    files: list[str] = field(default_factory=list)
    rejects: list[tuple[int, Reject]] = field(default_factory=list)  # --dry-run only

    def add(self, other: Summary) -> None:
        """Add another file's counts to this one."""
        self.read += other.read
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.rejected += other.rejected
        self.internal += other.internal
        self.b_legs += other.b_legs
        self.conference += other.conference
        self.unanswered += other.unanswered
        _add(self.charged, other.charged)
        _add(self.would_debit, other.would_debit)
        self.files.extend(other.files)

    def line(self) -> str:
        """The one-line summary printed at the end of a run."""
        text = (
            f"read {self.read}, stored {self.stored}, duplicates {self.duplicates}, "
            f"rejected {self.rejected}"
        )
        if self.internal:  # a source with internal_max_digits
            text += f", internal {self.internal}"
        if self.b_legs:  # FreeSWITCH cdr_csv with legs = "ab"
            text += f", b-legs {self.b_legs}"
        if self.conference:  # CUCM conference bridge legs
            text += f", conference {self.conference}"
        text += f", unanswered {self.unanswered}"
        # each currency's amount with its minor unit and code (300 JPY, 2.08 EUR)
        if any(self.charged.values()):
            text += f", debited {totals_text(self.charged)}"
        if any(self.would_debit.values()):
            text += f", would debit {totals_text(self.would_debit)}"
        if self.pending:
            text += f", pending {self.pending}"
        if self.unfinished:
            text += f", unfinished {self.unfinished}"
        return text


# The id of an answered call whose switch id an unanswered record of it holds.
ANSWERED_SUFFIX = "#answered"


def _bridge(item: object) -> TypeGuard[Call]:
    """A CUCM conference bridge leg to decide with the stored calls (Mediator._bridged)."""
    return isinstance(item, Call) and item.leg == BRIDGE


def _skipped(item: object, summary: Summary) -> bool:
    """Count a record that bills nothing and is no reject: an internal call, a B-leg its
    A-leg bills, a CUCM conference bridge leg that bills nothing."""
    if isinstance(item, Internal):
        summary.internal += 1  # not billable, not a bad row
    elif isinstance(item, BLeg):
        summary.b_legs += 1  # its A-leg bills the call
    elif isinstance(item, Conference):
        summary.conference += 1  # a bridge leg that bills nothing
    else:
        return False
    return True


def _add(into: dict[str, int], more: dict[str, int]) -> None:
    for currency, micros in more.items():
        into[currency] = into.get(currency, 0) + micros


def _charged(cdrs: list[CDR]) -> dict[str, int]:
    """What the ledger holds for these calls (the first record of each call), per
    currency."""
    seen: set[str] = set()
    total: dict[str, int] = {}
    for c in cdrs:
        if c.call_id not in seen:
            seen.add(c.call_id)
            total[c.currency] = total.get(c.currency, 0) + c.charged_micros
    return total


def text_line(line: str) -> str:
    """A line read with surrogateescape (open_cdr_file) as text: UTF-8, or, when its
    bytes are no UTF-8, Windows-1252 (else Latin-1). Switches write a display name as
    the call brought it (Asterisk cdr_csv and FreeSWITCH cdr_csv expand it as they
    hold it): "Müller" from an ISDN display IE or an old UA is Latin-1, and was read
    "M\ufffdller"; a file may hold both kinds of line."""
    if line.isascii():
        return line
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        data = line.encode("utf-8", "surrogateescape")
        try:
            return data.decode("cp1252")
        except UnicodeDecodeError:
            return data.decode("latin-1")
    return line


def without_bom(lines: Iterable[str]) -> Iterator[str]:
    """The lines as text (text_line) without a UTF-8 byte-order mark at their start
    (any format): files written on Windows start with one, and files concatenated with
    `cat` carry theirs into the middle; it is never part of a CDR."""
    for line in lines:
        if not line.isascii():
            line = text_line(line)
        if "\x00" in line:
            # NUL bytes before a record: the padding a crash (power loss) leaves where
            # the file's last writes were lost; the switch's next record follows it on
            # the same physical line, whole. NULs anywhere else damage the record
            # (normalised() rejects it: PostgreSQL text cannot hold them).
            line = line.lstrip("\x00")
        yield line[1:] if line[:1] == BOM else line


def normalised(
    lines: Iterable[str], name: str, source: SourceConfig, normaliser: Normaliser | None = None
) -> Iterator[tuple[int, Call | Reject]]:
    """(line number, normalised call or reject) for each record: no I/O, no database.
    ``normaliser``: one kept across files (its caches; a spool directory holds a file
    per call), else a new one."""
    normaliser = normaliser or Normaliser(name, source)
    for line_no, item in parser_for(source, normaliser.shared)(without_bom(lines)):
        if "\x00" in item.raw and (isinstance(item, (RawCall, Half)) or type(item) is Reject):
            # A record holding a NUL byte (a damaged file) is this record's reject:
            # stored, it failed the whole batch in PostgreSQL (exit 70, the good
            # records beside it lost with it); a reject says so before its reason.
            reason = NUL_REASON if type(item) is not Reject else f"{NUL_REASON}; {item.reason}"
            yield line_no, Reject(reason, item.raw)
        elif isinstance(item, RawCall):
            try:
                call = _storable(normaliser.call(item))
                yield line_no, call if not isinstance(call, str) else Reject(call, item.raw)
            except InternalCallError as exc:
                yield line_no, Internal(str(exc), item.raw)
            except RowError as exc:
                yield line_no, Reject(str(exc), item.raw)
        else:
            yield line_no, item


def _storable(call: Call) -> Call | str:
    """The call as PostgreSQL can store it (text and jsonb hold UTF-8 without NUL), or
    why it cannot be: an id, gateway or account code holding a NUL byte or a lone UTF-16
    surrogate (a JSON CDR's "\\ud83d", half an emoji cut by the switch) is a damaged
    record; in an extra value (a display name) such a character becomes U+FFFD, never a
    reason to lose the call. Checked before the call is rated and charged: stored as it
    was, it failed the whole batch (exit 70, a debit without its CDR)."""
    extra = call.extra
    every = "".join((call.call_id, call.gateway, call.account, *extra, *extra.values()))
    if every.isascii() and "\x00" not in every:
        return call  # the common case: one pass over the text, no copy of the call
    for text in (call.call_id, call.gateway, call.account):
        if not _is_storable(text):
            return f"damaged record: {text!r} is no text PostgreSQL can hold (NUL, lone surrogate)"
    if all(_is_storable(k) and _is_storable(v) for k, v in extra.items()):
        return call
    return replace(call, extra={_clean(k): _clean(v) for k, v in extra.items()})


def _is_storable(text: str) -> bool:
    if text.isascii():
        return "\x00" not in text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\x00" not in text


def _clean(text: str) -> str:
    if _is_storable(text):
        return text
    return "".join("\ufffd" if "\ud800" <= ch <= "\udfff" or ch == "\x00" else ch for ch in text)


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

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def rejects_path(path: Path, rejects_dir: str, taken: set[Path] | None = None) -> Path:
    """Where the rejects of ``path`` go: FILE.rejects.csv, next to it or in rejects_dir.

    ``taken``: the rejects files of the run's earlier files. Two files of one name (a
    switch's Master.csv of two days, from two folders, with one rejects_dir) would
    share one: the second truncated the first's rejects, or removed them when it had
    none. A later one gets FILE.2.rejects.csv (.3, ...)."""
    folder = Path(rejects_dir) if rejects_dir else path.parent
    found = folder / (path.name + ".rejects.csv")
    n = 1
    while taken is not None and found in taken:
        n += 1
        found = folder / f"{path.name}.{n}.rejects.csv"
    if taken is not None:
        taken.add(found)
    return found


GZIP_MAGIC = b"\x1f\x8b"
# What logrotate's compresscmd may write instead of gzip (compressext .bz2, .xz, .zst):
# the files' magic bytes, whatever their names.
MAGIC = (
    (GZIP_MAGIC, "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)


def compression(path: Path) -> str:
    """How the file is compressed, by its first bytes: gzip, bzip2, xz, zstd or ""."""
    with open(path, "rb") as probe:
        head = probe.read(6)
    return next((name for magic, name in MAGIC if head.startswith(magic)), "")


def is_gzip(path: Path) -> bool:
    """The file starts with gzip's magic bytes (whatever its name)."""
    return compression(path) == "gzip"


class UnreadableFile(Exception):
    """A file chargingd cannot read at all: its one reject says why (Readable)."""


class _Refused(io.StringIO):
    """The text of a file that cannot be read: reading it raises UnreadableFile."""

    def __init__(self, why: str) -> None:
        super().__init__("")
        self.why = why

    def __next__(self) -> str:  # type: ignore[override]  # typeshed: _IOBase's bytes
        raise UnreadableFile(self.why)


def open_cdr_file(path: Path) -> IO[str]:
    """A CDR file's text: UTF-8, its bytes that are not kept as surrogates for
    text_line to read the line as Windows-1252 (normalised does, line by line);
    decompressed when gzip-, bzip2- or xz-compressed (logrotate's Master.csv.1.gz, or
    its compresscmd's .bz2 / .xz). A zstd file (no reader in Python's standard library)
    is one reject saying so: before 2026-12-07 a file compressed other than by gzip was
    read as binary noise, an acc log as no call at all (read 0, exit 0)."""
    kind = compression(path)
    enc, errors = "utf-8", "surrogateescape"
    if kind == "gzip":
        return gzip.open(path, "rt", encoding=enc, errors=errors, newline="")
    if kind == "bzip2":
        return bz2.open(path, "rt", encoding=enc, errors=errors, newline="")
    if kind == "xz":
        return lzma.open(path, "rt", encoding=enc, errors=errors, newline="")
    if kind == "zstd":
        return _Refused(
            "zstd-compressed file: not read (chargingd reads gzip, bzip2 and xz);"
            " decompress it (zstd -d) and mediate that"
        )
    return open(path, encoding=enc, errors=errors, newline="")


# How long `chargingd mediate` watches a file modified within settle_s whose last record
# has no end yet: a switch or exporter writing it adds to it within this time.
WATCH_S = 1.0
_SPOOLED = ("freeswitch_json", "freeswitch_xml")


@dataclass
class Watched:
    """What `watch` saw of a run's files before reading them: each file's size, the
    files that changed while watched (being written), and settle_s."""

    sizes: dict[Path, int] = field(default_factory=dict)
    growing: set[Path] = field(default_factory=set)
    settle_s: int = 0


def _open_end(path: Path, source: SourceConfig) -> bool:
    """The file's last record has no end yet: no newline after its last line (a
    FreeRADIUS detail file: no blank line after its last record). A spool file's
    document has no newline to tell (mod_json_cdr ends none with one): any."""
    if source.format in _SPOOLED:
        return True
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, 2)
            if not size:
                return False
            fh.seek(max(0, size - 4))
            tail = fh.read()
    except OSError:
        return False
    if source.format == "cisco_radius":
        return not tail.replace(b"\r", b"").endswith(b"\n\n")
    return not tail.endswith((b"\n", b"\r"))


def watch(
    paths: list[Path], source: SourceConfig, settle_s: int, sleep: Callable[[float], None]
) -> Watched:
    """Before a run: each file's size; the files modified less than ``settle_s`` ago
    whose last record has no end (a last line without its newline, a detail file's
    record without its blank line, a spool document) are watched for WATCH_S (once for
    them all), and those that change are being written (``growing``)."""
    seen = Watched(settle_s=settle_s)
    if settle_s <= 0:
        return seen
    now = time.time()
    candidates: list[tuple[Path, int, int]] = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            continue
        seen.sizes[path] = st.st_size
        recent = now - st.st_mtime < settle_s
        if recent and not compression(path) and _open_end(path, source):
            candidates.append((path, st.st_size, st.st_mtime_ns))
    if candidates:
        sleep(WATCH_S)
        for path, size, mtime_ns in candidates:
            try:
                st = path.stat()
            except OSError:
                seen.growing.add(path)  # moved away while watched: not read now
                continue
            if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
                seen.growing.add(path)
    return seen


def ended(
    lines: Iterable[str],
    path: Path,
    watched: Watched | None,
    source: SourceConfig,
    summary: Summary,
) -> Iterator[str]:
    """The file's lines, but its last record when it has no end and the file may still
    be being written. Its end: the newline of the last line; for a FreeRADIUS detail
    file (cisco_radius) the blank line after the record. Being written: a file that
    changed while `watch` watched it, or since (its size then is not its size now).
    Left unread (counted ``unfinished``), it is read whole by the next run, the records
    before it duplicates then. Read now, a half line was rejected (its reject removed by
    the next run's rejects file) or, cut after a whole column (a talk time "6" of "65"),
    billed short, and the whole line a duplicate of it later: billed short for ever. A
    file that did not change while watched is read to its end: its writer is done (a
    tool that ends a file without a newline, a file copied in a moment ago, a crash):
    a record never waits for a run that may not come."""
    if watched is None or path not in watched.sizes or compression(path):
        yield from lines
        return
    blocks = source.format == "cisco_radius"
    tail: list[str] = []  # the last line; for detail files the record since a blank line
    line_no = 0
    for line in lines:
        line_no += 1
        if blocks and line.strip():
            tail.append(line)
            continue
        yield from tail
        tail.clear()
        if blocks:
            yield line  # a blank line ends a record
        else:
            tail.append(line)
    if not tail or (not blocks and tail[-1].endswith(("\n", "\r"))):
        yield from tail
        return
    try:
        size = path.stat().st_size
    except OSError:
        size = -1
    if path in watched.growing or size != watched.sizes[path]:
        summary.unfinished += 1
        summary.unfinished_line = line_no - len(tail) + 1
        return
    yield from tail


class Readable:
    """A file's lines up to where its compressed data is damaged (a gzip file cut short:
    logrotate still compressing it, an interrupted copy), then the end: the lines read
    are mediated (a parser holding records back yields them at the end, as for any
    file) and the damage is one reject (``error``), never an exception that drops the
    run's unstored batch. A complete file later: its rows read now are duplicates."""

    def __init__(self, fh: Iterable[str]) -> None:
        self.fh = fh
        self.lines = 0  # read so far
        self.error = ""  # why the rest could not be read ("": it could)

    def __iter__(self) -> Iterator[str]:
        try:
            for line in self.fh:
                self.lines += 1
                yield line
        except UnreadableFile as exc:
            self.error = str(exc)
        except (EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
            # gzip.BadGzipFile and bz2's "Invalid data stream" are OSErrors.
            self.error = f"damaged compressed file, the rest unreadable: {exc}"

    def reject(self, run: _FileRun) -> None:
        """The damage, if any, as the file's last reject."""
        if self.error:
            run.summary.read += 1
            run.reject(self.lines + 1, Reject(self.error, ""))


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


class _FileRun:
    """One file being mediated: its counts and its rejects (a file, or kept: dry run)."""

    def __init__(self, writer: RejectWriter | None, name: str = "") -> None:
        self.summary = Summary()
        self.writer = writer
        self.name = name  # the file's path, as given
        self.pending = 0  # its CDRs (and halves) in the batch, not flushed yet
        self.held = False  # kept open after its read: the run's expired halves go to it

    def reject(self, line_no: int, item: Reject) -> None:
        self.summary.rejected += 1
        if self.writer is not None:
            self.writer.write(line_no, item)
        elif len(self.summary.rejects) < DRY_RUN_REJECTS_KEPT:
            self.summary.rejects.append((line_no, item))

    def close(self) -> None:
        """The rejects file is complete: named in the summary, or removed (a stale file of
        an earlier run) when there were none."""
        if self.writer is None or self.held:
            return
        self.writer.close()
        if self.summary.rejected:
            self.summary.reject_file = str(self.writer.path)
        else:
            self.writer.path.unlink(missing_ok=True)
        self.writer = None


@dataclass
class _Batch:
    cdrs: list[CDR] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # the line of each CDR
    raws: list[str] = field(default_factory=list)  # the raw record of each CDR
    runs: list[_FileRun] = field(default_factory=list)  # the file of each CDR
    halves: list[Met[_FileRun]] = field(default_factory=list)  # of calls a rotation split
    legs: list[str] = field(default_factory=list)  # each CDR's RawCall.leg (cdr_csv legs ab)
    # cdr_csv legs = "ab": answered lines at the end of their file (leg TAIL), not rated:
    # kept until the next file's A-leg names them, or billed once none can (_release).
    tails: list[tuple[Call, int, _FileRun]] = field(default_factory=list)
    done: list[_FileRun] = field(default_factory=list)  # read; closed after the flush


class Mediator:
    """Mediates the files of one source into ``store``, charging through ``charger``."""

    def __init__(
        self,
        name: str,
        source: SourceConfig,
        *,
        payers: Payers,
        rater: Rater,
        store: CdrStore,
        charger: Charger,
        batch_size: int = 1000,
        dry_run: bool = False,
        pending_max_age_s: int = 86_400,
        waiting: Callable[[str], None] | None = None,
        watched: Watched | None = None,
    ) -> None:
        self.name = name
        # What `watch` saw of the files before the run: a file being written has its
        # last record without its end left for the next run (ended()); None: read all.
        self.watched = watched
        self.source = source
        self.payers = payers
        self.rater = rater
        self.store = store
        self.charger = charger
        self.batch_size = batch_size
        self.dry_run = dry_run
        self.normaliser = Normaliser(name, source)  # its caches serve every file
        # Halves of calls split by a rotation are kept (pairing.py); 0: rejected at once.
        self.pending_max_age_s = pending_max_age_s
        self.pairs = source.format in PAIRED_FORMATS and pending_max_age_s > 0
        # FreeSWITCH cdr_csv with legs = "ab": a bridged call's two lines may be in two
        # files (a rotation between the legs' hang-ups). Lines whose other leg is not in
        # their file are settled with what is stored (_settle_legs); an answered line at
        # the end of its file is kept (not with pending_max_age_s = 0) until an A-leg of
        # the next file names it, or billed once none can (_release).
        self.legs = source.format == "freeswitch" and source.legs == "ab"
        self.holds = self.legs and pending_max_age_s > 0
        self.latest_end_ms = 0  # the latest end of the calls read by this Mediator
        # The call ids whose halves the store keeps (read when a run starts, and those
        # this run keeps): a stored call of one forgets them, a Kamailio call of one is
        # rejoined. Another import's halves meanwhile: forgotten at their expiry (their
        # call is stored). Calls of other ids cost no store round trip.
        self.kept_keys: set[str] = set()
        # Told when another import of the source holds its lock (_exclusive): why we wait.
        self.waiting = waiting

    def _exclusive(self) -> AbstractAsyncContextManager[None]:
        """One import of a source at a time (store.exclusive: a PostgreSQL advisory lock
        per source), from before the first file is read until its last call is stored.
        Each import decides its lines with what earlier imports stored (a FreeSWITCH
        B-leg named by a stored A-leg, a kept line billed once nothing can name it, a
        Kamailio call begun at a kept INVITE); interleaved, two imports of adjacent
        files each missed the other's calls (a B-leg at the start of the later file,
        read before the other import stored its A-leg, was billed: the call twice).
        A dry run stores nothing: it takes no lock."""
        if self.dry_run:
            return nullcontext()
        return self.store.exclusive(self.name, self.waiting)

    async def run_lines(self, lines: Iterable[str], rejects: RejectWriter | None = None) -> Summary:
        """Mediate one file's lines; rejects go to ``rejects`` when given."""
        run = _FileRun(rejects)
        batch = _Batch()
        async with self._exclusive():
            await self._feed(lines, run, batch, run.summary)
            run.summary.add(await self._flush(batch))
        return run.summary

    async def _feed(
        self, lines: Iterable[str], run: _FileRun, batch: _Batch, totals: Summary
    ) -> None:
        """Read one file into ``batch``, flushing it (counts into ``totals``) when full."""
        for line_no, parsed in normalised(lines, self.name, self.source, self.normaliser):
            run.summary.read += 1
            item = await self._bridged(parsed) if _bridge(parsed) else parsed
            if _skipped(item, run.summary):
                continue
            if self.pairs and isinstance(item, Half):
                batch.halves.append(Met(item, line_no, run.name, run))
                run.pending += 1
                if len(batch.cdrs) + len(batch.halves) >= self.batch_size:
                    totals.add(await self._flush(batch))
                continue
            if isinstance(item, Call):
                if item.end_ms > self.latest_end_ms:
                    self.latest_end_ms = item.end_ms
                if item.leg == TAIL and self.holds and item.answer_ms:
                    batch.tails.append((item, line_no, run))
                    run.pending += 1
                    if len(batch.cdrs) + len(batch.tails) >= self.batch_size:
                        totals.add(await self._flush(batch))
                    continue
            cdr = item if isinstance(item, Reject) else await self._rated(item)
            if isinstance(cdr, Reject):
                run.reject(line_no, cdr)
                continue
            batch.cdrs.append(cdr)
            batch.lines.append(line_no)
            batch.raws.append(item.raw if isinstance(item, Call) else "")
            batch.runs.append(run)
            batch.legs.append(item.leg if isinstance(item, Call) else "")
            run.pending += 1
            if len(batch.cdrs) + len(batch.halves) + len(batch.tails) >= self.batch_size:
                totals.add(await self._flush(batch))

    async def _bridged(self, call: Call) -> Call | Reject:
        """A CUCM conference bridge leg whose participant's leg no record of this run
        had (formats/cucm.py; ``leg`` BRIDGE, the participant its callee), decided with
        the stored calls: the call that had it as its called leg bills the
        participant's time on the bridge (its caller -> its callee); one that had it as
        its calling leg placed it (nothing to bill); none: rejected, who called whom
        unknown (a dry run stores nothing: the files of the run only)."""
        leg = call.extra.get("orig_leg", "")
        participant = call.extra.get("participant", "") or "(no number)"
        bridge = call.extra.get("bridge", "")
        where = f"conference bridge leg of {participant} (leg {leg or '?'}, to {bridge})"
        found = await self.store.leg_call(self.name, leg, call.start_ms) if leg else None
        if found is None:
            gcid = call.call_id.split("#", 1)[0]
            return Reject(
                f"{where}, globalCallID {gcid}: no record of this run nor stored call had"
                f" leg {leg or '?'} (the original or setup call that brought the participant"
                " in), so who called whom is unknown; mediate the file that holds that call"
                " together with this one",
                call.raw,
            )
        if not found.called:
            reason = (
                f"{where}: its own side of call {found.call_id}, which it placed; nothing to bill"
            )
            return Conference(reason, call.raw)
        extra = {
            k: v for k, v in call.extra.items() if k not in ("caller_raw", "dialled", "access_code")
        }
        extra.update(found.extra)
        extra["conference"] = "ad hoc"
        extra["conference_call"] = found.call_id
        return replace(call, caller=found.caller, callee=found.callee, extra=extra, leg="")

    async def _rated(self, call: Call) -> CDR | Reject:
        try:
            payer = await self.payers.payer(call)
            return self.rater.cdr(call, payer)
        except RowError as exc:
            return Reject(str(exc), call.raw)

    async def _flush(self, batch: _Batch) -> Summary:
        """Charge and store the batch; the counts it adds. Files read to their end whose
        CDRs were in it have their rejects files closed."""
        counts = Summary()
        done = await self._pair(batch, counts) if batch.halves else []
        if self.legs and (batch.cdrs or batch.tails):
            done += await self._settle_legs(batch, counts)
        if batch.cdrs and self.kept_keys and self.source.format in REJOINED_FORMATS:
            await self._rejoin(batch)
        if batch.cdrs:
            kept_done = [c.call_id for c in batch.cdrs if c.call_id in self.kept_keys]
            batch.cdrs = await self._answered_after_unanswered(batch.cdrs)
            settled = await self.charger.settle(batch.cdrs)
            refused = {id(c): why for c, why in settled.refused}
            for cdr, line_no, raw, run in zip(
                batch.cdrs, batch.lines, batch.raws, batch.runs, strict=True
            ):
                run.pending = 0
                if id(cdr) in refused:
                    run.reject(line_no, Reject(refused[id(cdr)], raw))
            inserted = await self.store.store_cdrs(settled.cdrs)
            counts.stored = inserted
            counts.duplicates += len(settled.cdrs) - inserted
            counts.unanswered = sum(1 for c in settled.cdrs if c.status == CdrStatus.UNANSWERED)
            counts.would_debit = settled.would_debit
            counts.charged = _charged(settled.cdrs)
            # A call stored (or refused) ends the halves kept of it.
            done.extend(kept_done)
            batch.cdrs, batch.lines, batch.raws, batch.runs = [], [], [], []
            batch.legs = []
        if done:
            await self.store.unpend(self.name, [(key, "") for key in sorted(set(done))])
        for run in batch.done:
            run.close()
        batch.done = []
        return counts

    async def _answered_after_unanswered(self, cdrs: list[CDR]) -> list[CDR]:
        """The batch, with an answered call whose switch id an unanswered record holds
        (stored, or earlier in the batch) under an id of its own, ``<id>#answered``
        (extra ``switch_call_id`` keeps the switch's).

        A switch may write a failed attempt and the answered call under one id: Kamailio
        and OpenSIPS log a serial-forking branch that failed (log/db_missed_flag set again
        in failure_route, the missed_calls table) with the Call-ID of the branch that
        answered, and the two records can be in two files (missed_calls and acc exports,
        a rotation between the two branches). Whichever came first held the id: the
        answered call after an unanswered one was a duplicate and never billed, or (one
        run) was debited while the unanswered record was stored with its charge. A
        record after an answered one stays a duplicate; re-running finds the new id."""
        answered = sorted({c.call_id for c in cdrs if c.status != CdrStatus.UNANSWERED})
        if not answered:
            return cdrs
        stored = await self.store.charges(self.name, answered)
        holder = {call_id: found.status for call_id, found in stored.items()}
        out = []
        for cdr in cdrs:
            held = holder.setdefault(cdr.call_id, cdr.status)
            if held == CdrStatus.UNANSWERED and cdr.status != CdrStatus.UNANSWERED:
                extra = {**cdr.extra, "switch_call_id": cdr.call_id}
                cdr = replace(cdr, call_id=f"{cdr.call_id}{ANSWERED_SUFFIX}", extra=extra)
            out.append(cdr)
        return out

    async def _settle_legs(self, batch: _Batch, counts: Summary) -> list[str]:
        """cdr_csv legs = "ab": the batch's lines whose other leg is not in their file,
        settled with what the store holds (legs.settle): B-legs leave the batch, an
        A-leg whose call is billed already is a duplicate, answered lines at the end
        of their file are kept. The kept lines to forget once the batch is stored."""
        dangling: dict[str, int] = {}  # bleg_uuid -> the index of its A-leg's CDR
        lone: dict[str, int] = {}  # uuid -> the index of its CDR
        for i, (cdr, leg) in enumerate(zip(batch.cdrs, batch.legs, strict=True)):
            if leg == DANGLING:
                dangling[cdr.extra.get("bleg_uuid", "")] = i
            elif leg in (LONE, TAIL):
                lone[cdr.call_id] = i
        tails: dict[str, _FileRun] = {}
        pending: list[PendingHalf] = []
        for call, line_no, run in batch.tails:
            tails[call.call_id] = run
            run.pending = 0
            pending.append(
                PendingHalf(call.call_id, LEG_KIND, 0, LEG_REASON, call.raw, "", run.name, line_no)
            )
        batch.tails = []
        out = await settle(self.store, self.name, sorted(dangling), sorted(lone), pending)
        counts.b_legs += len(out.forget)  # read in an earlier file, decided now
        counts.duplicates += len(out.billed) + len(out.stored_tails)
        for uuid in out.b_legs:  # counted in the file that has the line
            if uuid in tails:
                tails[uuid].summary.b_legs += 1
            if uuid in lone:
                batch.runs[lone[uuid]].summary.b_legs += 1
        drop = {dangling[b] for b in out.billed} | {lone[u] for u in out.b_legs if u in lone}
        if drop:
            for i in drop:
                batch.runs[i].pending = 0
            at = [i for i in range(len(batch.cdrs)) if i not in drop]
            batch.cdrs = [batch.cdrs[i] for i in at]
            batch.lines = [batch.lines[i] for i in at]
            batch.raws = [batch.raws[i] for i in at]
            batch.runs = [batch.runs[i] for i in at]
            batch.legs = [batch.legs[i] for i in at]
        return out.forget

    async def _release(self, run: _FileRun) -> Summary:
        """cdr_csv legs = "ab": the lines kept at the end of a file that no A-leg can
        name any more (legs.due) are billed; one a stored A-leg names is forgotten (a
        B-leg). Their rejects go to ``run`` (the run's first file), naming the file
        they came from. The counts it adds."""
        counts = Summary()
        held = [h for h in await self.store.kept(self.name) if h.kind == LEG_KIND]
        old_ms = int(time.time() * 1000) - self.pending_max_age_s * 1000
        due_now: dict[str, tuple[PendingHalf, Call | Reject]] = {}
        for h in held:
            call = self._reread(h)
            if isinstance(call, Reject) or due(call.end_ms, h.since_ms, self.latest_end_ms, old_ms):
                due_now[h.key] = (h, call)
        if not due_now:
            return counts
        named = await self.store.named(self.name, sorted(due_now))
        stored = await self.store.charges(self.name, sorted(due_now))
        counts.b_legs += len(named)
        batch = _Batch()
        for key, (h, call) in due_now.items():
            if key in named or key in stored:
                continue  # a B-leg, or billed already: forgotten below
            cdr = call if isinstance(call, Reject) else await self._rated(call)
            if isinstance(cdr, Reject):
                run.reject(h.line, Reject(f"{cdr.reason} (kept from {h.file}:{h.line})", h.raw))
                continue
            batch.cdrs.append(cdr)
            batch.lines.append(h.line)
            batch.raws.append(h.raw)
            batch.runs.append(run)
            batch.legs.append("")
        counts.add(await self._flush(batch))
        await self.store.unpend(self.name, [(key, LEG_KIND) for key in sorted(due_now)])
        return counts

    def _reread(self, kept: PendingHalf) -> Call | Reject:
        """A kept cdr_csv line read again as a call of its own (a reject: the source's
        template or numbering changed since it was kept)."""
        for _, item in freeswitch.parse([kept.raw], fields=self.source.fields):
            if isinstance(item, Reject):
                return item
            try:
                return self.normaliser.call(item)
            except RowError as exc:
                return Reject(str(exc), kept.raw)
        return Reject("an empty line", kept.raw)

    async def _pair(self, batch: _Batch, counts: Summary) -> list[str]:
        """The batch's halves: paired calls join the batch (rated, charged and stored
        with it), rejects go to their files; the keys to forget once it is stored."""
        met, batch.halves = batch.halves, []
        resolved = await resolve(self.store, self.name, self.source, met)
        self.kept_keys.update(m.half.key for m in met)
        counts.duplicates += resolved.duplicates
        for m, rej in resolved.rejects:
            m.owner.reject(m.line_no, rej)
        for m, raw in resolved.calls:
            try:
                cdr: CDR | Reject = await self._rated(self.normaliser.call(raw))
            except InternalCallError:  # the pair is an internal call: decided, skipped
                m.owner.summary.internal += 1
                resolved.done.append(m.half.key)
                continue
            except RowError as exc:
                cdr = Reject(str(exc), raw.raw)
            if isinstance(cdr, Reject):  # the pair is decided: rejected, saying why
                m.owner.reject(m.line_no, cdr)
                resolved.done.append(m.half.key)
                continue
            batch.cdrs.append(cdr)
            batch.lines.append(m.line_no)
            batch.raws.append(raw.raw)
            batch.runs.append(m.owner)
        for m in met:
            m.owner.pending = 0
        return resolved.done

    async def _rejoin(self, batch: _Batch) -> None:
        """Calls of the batch that began at an INVITE kept from an earlier file (their
        file held a re-INVITE and the BYE): rated again from that INVITE."""
        calls = {
            c.call_id: raw
            for c, raw in zip(batch.cdrs, batch.raws, strict=True)
            if c.call_id in self.kept_keys
        }
        if not calls:
            return
        joined = await rejoin(self.store, self.name, self.source, calls)
        for i, cdr in enumerate(batch.cdrs):
            raw = joined.get(cdr.call_id)
            if raw is None:
                continue
            try:
                whole = await self._rated(self.normaliser.call(raw))
            except RowError:
                continue  # the call as its file has it stays
            if isinstance(whole, CDR):
                batch.cdrs[i], batch.raws[i] = whole, raw.raw

    async def _load_kept(self) -> None:
        self.kept_keys = {half.key for half in await self.store.kept(self.name)}

    async def _expire(self, run: _FileRun) -> None:
        """Halves kept longer than pending_max_age_s: rejects of ``run`` (the run's
        first file; the reason names the file they came from), then forgotten. After
        the run's pairing: a half whose other half came in this run (a backlog after
        mediation stopped longer than the max age) was paired, not expired."""
        rejects, forget = await expire(self.store, self.name, self.pending_max_age_s)
        for half, rej in rejects:
            run.reject(half.line, rej)
        await self.store.unpend(self.name, forget)

    async def run_file(
        self, path: Path, rejects_dir: str = "", progress: Progress | None = None
    ) -> Summary:
        """Mediate one file; its rejects go to FILE.rejects.csv (a dry run writes none)."""
        async with self._exclusive():
            return await self._run_file(path, rejects_dir, progress)

    async def _run_file(self, path: Path, rejects_dir: str, progress: Progress | None) -> Summary:
        run = _FileRun(
            None if self.dry_run else RejectWriter(rejects_path(path, rejects_dir)), str(path)
        )
        if self.pairs and not self.dry_run:
            await self._load_kept()
        try:
            with open_cdr_file(path) as fh:
                batch = _Batch()
                readable = Readable(fh)
                lines = ended(readable, path, self.watched, self.source, run.summary)
                await self._feed(counted(lines, progress), run, batch, run.summary)
                readable.reject(run)
                run.summary.add(await self._flush(batch))
            if self.holds:
                run.summary.add(await self._release(run))
                run.summary.pending = len(await self.store.kept(self.name))
        finally:
            run.close()
        run.summary.files.append(str(path))
        return run.summary

    async def run_files(
        self,
        paths: Iterable[Path],
        rejects_dir: str = "",
        progress: Callable[[Path], AbstractContextManager[Progress | None]] | None = None,
    ) -> tuple[Summary, list[tuple[Path, Summary]]]:
        """Mediate files with batches that span them (a FreeSWITCH spool directory is a
        file per call: a store round trip each would cost ~1.5 ms a call). The total, and
        each file's summary (read, rejected, its rejects file or kept rejects)."""
        async with self._exclusive():
            return await self._run_files(paths, rejects_dir, progress)

    async def _run_files(
        self,
        paths: Iterable[Path],
        rejects_dir: str,
        progress: Callable[[Path], AbstractContextManager[Progress | None]] | None,
    ) -> tuple[Summary, list[tuple[Path, Summary]]]:
        total = Summary()
        files: list[tuple[Path, Summary]] = []
        batch = _Batch()
        runs: list[_FileRun] = []
        taken: set[Path] = set()
        try:
            for path in paths:
                run = _FileRun(
                    None if self.dry_run else RejectWriter(rejects_path(path, rejects_dir, taken)),
                    str(path),
                )
                if not runs and (self.pairs or self.holds) and not self.dry_run:
                    run.held = True  # expired or released lines: its rejects, at the end
                if not runs and self.pairs and not self.dry_run:
                    await self._load_kept()
                runs.append(run)
                shown = progress(path) if progress is not None else nullcontext(None)
                with (
                    open_cdr_file(path) as fh,
                    shown as advance,
                ):
                    readable = Readable(fh)
                    lines = ended(readable, path, self.watched, self.source, run.summary)
                    await self._feed(counted(lines, advance), run, batch, total)
                    readable.reject(run)
                run.summary.files.append(str(path))
                files.append((path, run.summary))
                if run.pending:
                    batch.done.append(run)  # closed when its CDRs are stored
                else:
                    run.close()
            total.add(await self._flush(batch))
            if runs and self.holds:
                total.add(await self._release(runs[0]))
            if runs and runs[0].held:
                runs[0].held = False
                if self.pairs:
                    await self._expire(runs[0])
                runs[0].close()
            if self.pairs or self.holds:
                total.pending = len(await self.store.kept(self.name))
        finally:
            for run in runs:
                run.held = False
                run.close()
        for _, summary in files:
            total.read += summary.read
            total.rejected += summary.rejected
            total.internal += summary.internal
            total.conference += summary.conference
            total.b_legs += summary.b_legs
            total.unfinished += summary.unfinished
            total.files.extend(summary.files)
        return total, files
