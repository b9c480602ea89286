"""Rate-limited failure logs: during an outage, one line per kind per interval.

A Redis outage makes every request, and every pass of every background loop, fail the
same way. Logging each failure grows the log with the traffic; this logs the first
failure of a kind at once, then one line per ``interval_s`` with how many failures it
stood for, and one line when the kind works again (with the outage's count and length).

    outage = RateLimitedLog(log)
    try:
        ...
    except RedisError as exc:
        outage.failure("redis unreachable at authorize", exc)
    else:
        outage.recovered("redis unreachable at authorize")

``recovered`` is a dict lookup when nothing failed: cheap on the request path.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_INTERVAL_S = 10.0
# The settle_s of kinds that concurrent requests feed (see RateLimitedLog).
REQUEST_SETTLE_S = 1.0


@dataclass
class _Episode:
    """One kind's failures since it last worked."""

    first_s: float
    last_logged_s: float
    total: int = 1
    unlogged: int = 0  # failures since the last line
    last_failure_s: float = 0.0
    flapping: bool = False  # failed again within settle_s of a success that ended it


class RateLimitedLog:
    """Failure lines per kind: the first at once, then one per interval, one on recovery.

    ``trace``: the first line of an episode carries the traceback (for errors nobody
    expected); repeats never do.

    ``settle_s``: for kinds that concurrent requests feed. When only part of Redis is
    away (one shard of a cluster failing over, or taking no writes), requests on the
    other shards succeed between the failures; each success ending the episode made
    each next failure a new one: two lines per flip (a partial outage logged dozens of
    lines a second instead of one per interval). With ``settle_s``, a failure within
    that long of the success that ended its kind's episode reopens that episode without
    a line, and a reopened (flapping) episode ends only at a success that comes
    ``settle_s`` after its last failure. 0: every success ends it (a loop's pass).
    """

    def __init__(
        self,
        log: logging.Logger,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        clock_s: Callable[[], float] = time.monotonic,
        level: int = logging.ERROR,
        settle_s: float = 0.0,
    ) -> None:
        self.log = log
        self.settle_s = settle_s
        self.interval_s = interval_s
        self.clock_s = clock_s
        self.level = level
        # The kinds failing now (failing): read-only to others. The request path reads it
        # (``kind in log.episodes``) for failing() without an interpreted frame.
        self.episodes: dict[str, _Episode] = {}
        # Every failure ever counted, by kind (monitoring exports them as counters).
        self.totals: dict[str, int] = {}
        # With settle_s: each kind's last ended episode and when it ended.
        self._ended: dict[str, tuple[_Episode, float]] = {}

    def failing(self, kind: str) -> bool:
        """True while ``kind`` has failed since it last worked."""
        return kind in self.episodes

    def failure(self, kind: str, exc: BaseException | str, *, trace: bool = False) -> None:
        """Count one failure of ``kind``; log it if it is the first or the interval passed."""
        now = self.clock_s()
        why = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        self.totals[kind] = self.totals.get(kind, 0) + 1
        episode = self.episodes.get(kind)
        if episode is None and self._ended:
            ended = self._ended.pop(kind, None)
            if ended is not None and now - ended[1] < self.settle_s:
                episode = ended[0]  # flapping: the same outage, no new first line
                episode.flapping = True
                self.episodes[kind] = episode
        if episode is None:
            self.episodes[kind] = _Episode(first_s=now, last_logged_s=now, last_failure_s=now)
            exc_info = exc if trace and isinstance(exc, BaseException) else None
            self.log.log(self.level, "%s: %s", kind, why, exc_info=exc_info)
            return
        episode.total += 1
        episode.unlogged += 1
        episode.last_failure_s = now
        if now - episode.last_logged_s >= self.interval_s:
            self.log.log(
                self.level,
                "%s: %s (%d more in the last %.0f s; %d since %.0f s ago)",
                kind,
                why,
                episode.unlogged,
                now - episode.last_logged_s,
                episode.total,
                now - episode.first_s,
            )
            episode.last_logged_s = now
            episode.unlogged = 0

    def recovered(self, kind: str) -> None:
        """``kind`` worked: if it was failing, say so once, with the outage's figures
        (a flapping one: once it failed no more for ``settle_s``)."""
        episode = self.episodes.get(kind)
        if episode is None:
            return
        now = self.clock_s()
        if episode.flapping and now - episode.last_failure_s < self.settle_s:
            return  # still failing for some requests: the same episode
        del self.episodes[kind]
        if self.settle_s > 0:
            self._ended[kind] = (episode, now)
        # A flapping episode's ending success may come long after its last failure (no
        # traffic meanwhile): the outage lasted until that failure.
        until = episode.last_failure_s if episode.flapping else now
        self.log.warning(
            "%s: recovered after %d failures in %.1f s",
            kind,
            episode.total,
            until - episode.first_s,
        )
