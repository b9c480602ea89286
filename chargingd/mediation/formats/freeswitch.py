"""FreeSWITCH mod_cdr_csv files.

A cdr_csv template is a line of quoted ``${variable}`` references; the file holds one
such line per call. ``EXAMPLE`` is the ``example`` template of the vanilla
autoload_configs/cdr_csv.conf.xml, ``SQL`` its ``sql`` template (an INSERT statement
per call, without the codecs), whose 13 values are also mod_cdr_csv's built-in
``default`` template (used when cdr_csv.conf names no default-template). A source
may give its own template as ``fields``.
Times are local ``${start_stamp}`` style ("YYYY-MM-DD HH:MM:SS") or ``*_epoch`` /
``*_uepoch`` integers; an unanswered call has an empty answer_stamp.

cdr_csv writes one call per line and expands variables as they are (no escaping): a
value holding a quote breaks the CSV quoting, so a line is read alone (it never takes
the next with it), and a line whose quotes do not add up is split on the ``","``
between its quoted values when that gives the template's column count.

cdr_csv.conf's ``legs`` (mod_cdr_csv.c my_on_reporting) picks the channels written:
"a" (the default) skips a channel with an originator caller profile (a B-leg, one
another channel originated), "b" one with an originatee profile, "ab" writes every
channel, with the same template to the same Master.csv. A bridged call is then two
lines: its A-leg names the B-leg in ``${bleg_uuid}``, the B-leg repeats the call
(the caller's number, the number dialled, its own times). A line whose uuid is
another line's bleg_uuid, or whose ``${originating_leg_uuid}`` (a template's own
column; set on an originated channel) is set, is a B-leg: a ``BLeg``, skipped, so
the call is billed once, from its A-leg. The two lines are written when each leg
hangs up, in either order and with other calls' lines between them: a line is held
back until ``LEG_WINDOW`` lines followed it (or the file ended) before it is yielded.
A rotation between the two hang-ups puts them in two files: a line whose other leg
may be in another file says so in ``RawCall.leg`` (DANGLING, LONE, TAIL), and the
mediation settles it with what it stored (mediation/legs.py).
The bleg_uuid pairing runs only where the source says ``legs = "ab"``: in a file of
A-legs (the default) a line another names is no B-leg to skip (FreeSWITCH's source
does not show that bleg_uuid never names an inbound channel: two inbound calls
bridged by uuid_bridge or intercept would then lose one's billing).
"""

from __future__ import annotations

import csv
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

from chargingd.mediation.causes import freeswitch_q850
from chargingd.mediation.formats.csvlines import left_open
from chargingd.mediation.formats.fscdr import exact_billsec
from chargingd.mediation.records import (
    DANGLING,
    LONE,
    TAIL,
    BLeg,
    Parsed,
    RawCall,
    RawTime,
    Reject,
    RowError,
    int_field,
    opt_int,
    parse_stamp,
    shifted,
)

EXAMPLE = (
    "caller_id_name",
    "caller_id_number",
    "destination_number",
    "context",
    "start_stamp",
    "answer_stamp",
    "end_stamp",
    "duration",
    "billsec",
    "hangup_cause",
    "uuid",
    "bleg_uuid",
    "accountcode",
    "read_codec",
    "write_codec",
)
SQL = EXAMPLE[:13]
_SQL_HEAD = "INSERT INTO "
# How many lines after a line its other leg may come (legs = "ab"): FreeSWITCH writes
# a bridged call's two lines when each leg hangs up, milliseconds apart.
LEG_WINDOW = 10_000
# A line that ended within this of its file's last line may have its other leg in the
# next file (a rotation between the two legs' hang-ups, milliseconds apart).
TAIL_S = 60


class _Template:
    """Column positions of one template, resolved once (not per row)."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names
        self.width = len(names)
        at = {name: i for i, name in enumerate(names)}
        self.at = at
        self.times = tuple(_time_reader(at, stem) for stem in ("start", "answer", "end"))
        # A template may log no answer time at all: then billsec says the call was
        # answered, billsec seconds before its end.
        self.answer_logged = any(f"answer_{kind}" in at for kind in ("stamp", "epoch", "uepoch"))
        # legs = "ab": a template's own ${originating_leg_uuid} column marks a B-leg.
        self.origin = at.get("originating_leg_uuid")
        self.extra: tuple[tuple[str, int], ...] = tuple(
            (k, at[k]) for k in ("caller_id_name", "bleg_uuid", "context") if k in at
        )

    def get(self, values: list[str], name: str) -> str:
        i = self.at.get(name)
        return values[i] if i is not None else ""

    def call(self, values: list[str]) -> RawCall:
        get = self.get
        cause = get(values, "hangup_cause")
        q850 = freeswitch_q850(
            opt_int(get(values, "hangup_cause_q850"), "hangup_cause_q850"), cause
        )
        billsec = get(values, "billsec")
        exact = (get(values, "billmsec"), get(values, "billusec"))
        extra: dict[str, str] = {k: values[i] for k, i in self.extra if values[i]}
        if cause:
            extra["hangup_cause"] = cause
        start, answer, end = (read(values) for read in self.times)
        talk_s = exact_billsec(
            int_field(billsec, "billsec") if billsec else None,
            opt_int(exact[0], "billmsec"),
            opt_int(exact[1], "billusec"),
        )
        if not self.answer_logged and talk_s and end is not None:
            answer = _before(end, talk_s)
        duration = get(values, "duration")
        return RawCall(
            call_id=get(values, "uuid") or get(values, "call_uuid"),
            # As mod_json_cdr is read (fscdr): the opencdrrate template logs ${ani}.
            caller=get(values, "caller_id_number")
            or get(values, "sip_from_user")
            or get(values, "ani"),
            callee=get(values, "destination_number"),
            start=start,
            answer=answer,
            end=end,
            talk_s=talk_s,
            q850=q850,
            sip_code=opt_int(get(values, "sip_term_status"), "sip_term_status"),
            cause_text=cause,
            account=get(values, "accountcode"),
            gateway=get(values, "sip_network_ip") or get(values, "network_addr"),
            extra=extra,
            total_s=int_field(duration, "duration") if duration else None,
        )


def _before(when: int | datetime, seconds: int) -> RawTime:
    """``seconds`` before ``when`` (epoch ms or a local time)."""
    return shifted(when, -seconds * 1000, "billsec")


def _time_reader(at: dict[str, int], stem: str) -> Callable[[list[str]], RawTime]:
    """``<stem>_stamp`` (local), else ``<stem>_uepoch`` / ``<stem>_epoch`` (UTC)."""
    if f"{stem}_stamp" in at:
        i, name = at[f"{stem}_stamp"], f"{stem}_stamp"
        return lambda values: parse_stamp(values[i], name)
    if f"{stem}_uepoch" in at:
        j, uname = at[f"{stem}_uepoch"], f"{stem}_uepoch"
        return lambda values: (opt_int(values[j], uname) or 0) // 1000 or None
    if f"{stem}_epoch" in at:
        k, ename = at[f"{stem}_epoch"], f"{stem}_epoch"
        return lambda values: (opt_int(values[k], ename) or 0) * 1000 or None
    return lambda values: None


class _Legs:
    """A file's lines in order, each held back until ``window`` lines followed it, so
    that a B-leg written before its A-leg is known as one when it is yielded
    (legs = "ab"). Memory: the window, and the B-leg uuids named in about the last
    two windows' lines (a B-leg comes within the window of its A-leg).

    A call a rotation split has one leg in each file: a line yielded as a call says so
    in ``RawCall.leg`` (DANGLING: an A-leg whose B-leg is not in the file; LONE: a
    line no other names and that names none; TAIL: a LONE line that ended within
    ``TAIL_S`` of the file's last line, whose A-leg may come in the next file), for the
    mediation to settle with what it stored of the other files (pipeline.py)."""

    def __init__(self, window: int = LEG_WINDOW) -> None:
        self.window = window
        self.queue: deque[tuple[int, RawCall | Reject, str]] = deque()
        self.held: dict[str, int] = {}  # uuid -> the line of its queued call
        self.marked: dict[int, str] = {}  # the line of a queued B-leg -> its A-leg's uuid
        self.named: dict[str, str] = {}  # B-leg uuid -> its A-leg's uuid
        self.older: dict[str, str] = {}  # the generation before
        self.found: set[str] = set()  # B-legs met of A-legs still queued
        self.last: RawTime = None  # the latest end of the file's lines so far

    def add(self, line_no: int, item: RawCall | Reject, origin: str = "") -> Parsed | None:
        """Queue one line's call (``origin``: its originating_leg_uuid) or reject; the
        line that leaves the window, if one does (a plain return: a generator per line
        cost a third of the parser's time)."""
        uuid = ""
        if isinstance(item, RawCall):
            uuid = item.call_id
            end = item.end
            if end is not None and (self.last is None or _later(end, self.last)):
                self.last = end
            named_by = self.named.get(uuid) or self.older.get(uuid)
            a_leg = origin or named_by
            if a_leg:
                item = _b_leg(item, a_leg)
                if named_by:
                    self.found.add(uuid)  # its A-leg, queued still, is no DANGLING one
            else:
                b_leg = item.extra.get("bleg_uuid")
                if b_leg and b_leg != uuid:
                    if len(self.named) >= self.window:
                        self.older, self.named = self.named, {}
                    self.named[b_leg] = uuid
                    other = self.held.get(b_leg)
                    if other is not None:
                        self.marked[other] = uuid
                        self.found.add(b_leg)
            self.held[uuid] = line_no  # a B-leg too: an A-leg after it finds it there
        self.queue.append((line_no, item, uuid))
        return self._pop() if len(self.queue) > self.window else None

    def rest(self) -> Iterator[Parsed]:
        """The lines still held: the file ended."""
        try:
            tail = None if self.last is None else shifted(self.last, -TAIL_S * 1000, "end")
        except RowError:  # a local time at the start of year 1
            tail = None
        while self.queue:
            line_no, item = self._pop()
            if isinstance(item, RawCall) and item.leg == LONE:
                end = item.end
                if tail is None or end is None or not _later(tail, end):
                    item.leg = TAIL  # ended within TAIL_S of the last line (or unknown)
            yield line_no, item

    def _pop(self) -> Parsed:
        line_no, item, uuid = self.queue.popleft()
        if uuid and self.held.get(uuid) == line_no:
            del self.held[uuid]
        a_leg = self.marked.pop(line_no, None) if self.marked else None
        if not isinstance(item, RawCall):
            return line_no, item
        if a_leg is not None:
            return line_no, _b_leg(item, a_leg)
        b_leg = item.extra.get("bleg_uuid", "")
        if not b_leg or b_leg == uuid:
            item.leg = LONE
        elif b_leg in self.found:
            self.found.discard(b_leg)
        else:
            item.leg = DANGLING
        return line_no, item


def _later(a: int | datetime, b: int | datetime) -> bool:
    """``a`` after ``b``: two ends of one file's lines, both epoch ms or both local
    times (a template writes one kind); never for one of each."""
    if isinstance(a, datetime):
        return isinstance(b, datetime) and a > b
    return not isinstance(b, datetime) and a > b


def _b_leg(call: RawCall, a_leg: str) -> BLeg:
    return BLeg(f"B-leg of {a_leg}: its A-leg bills the call", call.raw)


def parse(lines: Iterable[str], fields: tuple[str, ...] = (), legs: str = "a") -> Iterator[Parsed]:
    """Yield the calls of a cdr_csv file written with ``fields`` (default: example);
    a B-leg as a BLeg: one whose originating_leg_uuid is set, and with ``legs`` "ab"
    one another line's bleg_uuid names."""
    template = _Template(fields or EXAMPLE)
    sql = _Template(SQL) if not fields else template
    paired = _Legs() if legs == "ab" else None
    for line_no, line in enumerate(lines, start=1):
        raw = line.rstrip("\r\n")
        text = raw.strip()
        if not text:
            continue
        try:
            used, values = _split(text, template, sql)
            call = used.call(values)
        except RowError as exc:
            item: RawCall | Reject = Reject(str(exc), raw)
            origin = ""
        else:
            call.raw = raw
            item = call
            origin = values[used.origin] if used.origin is not None else ""
        if paired is not None:
            out = paired.add(line_no, item, origin)
            if out is not None:
                yield out
        elif origin and isinstance(item, RawCall):
            yield line_no, _b_leg(item, origin)
        else:
            yield line_no, item
    if paired is not None:
        yield from paired.rest()


def _split(text: str, template: _Template, sql: _Template) -> tuple[_Template, list[str]]:
    used = template
    if text.startswith(_SQL_HEAD):
        # sql template: INSERT INTO cdr VALUES ("...","...", "...");
        open_at = text.find("(")
        if open_at < 0 or not text.endswith(");"):
            raise RowError("INSERT statement without a VALUES (...) list")
        text = text[open_at + 1 : -2]
        used = sql
    # cdr_csv quotes values without escaping them: a fully quoted line splits on the
    # "," between values (a value holding a quote stays whole); other lines are CSV.
    # Without a custom template, a line of the sql template's 13 values is FreeSWITCH's
    # built-in "default" template (mod_cdr_csv.c default_template: what it writes when
    # cdr_csv.conf names no default-template), the example template's first 13 columns.
    builtin = sql if used is template and sql is not template else None
    for layout in (used,) if builtin is None else (used, builtin):
        quoted = _quoted_fields(text, layout.width)
        if quoted is not None:
            return layout, quoted
    if left_open(text):
        raise RowError("damaged record: a quoted field never closes")
    try:
        values = next(csv.reader((text,), skipinitialspace=True))
    except csv.Error as exc:
        raise RowError(f"unreadable CSV: {exc}") from None
    if builtin is not None and len(values) == builtin.width:
        return builtin, values
    if len(values) != used.width:
        raise RowError(f"{len(values)} columns; the template has {used.width}")
    return used, values


def _quoted_fields(text: str, width: int) -> list[str] | None:
    """The fields of a line where every value is "quoted" and quotes inside a value are
    not escaped (cdr_csv expands ${variables} as they are: a caller name with a quote
    in it): split on the "," between values; None when that does not give ``width``."""
    if not (text.startswith('"') and text.endswith('"')):
        return None
    values = [v.strip() for v in text[1:-1].replace('", "', '","').split('","')]
    return values if len(values) == width else None
