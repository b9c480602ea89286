"""Background loops: run a pass every interval until a stop event, never dying of an error;
and the one stand-in for a component the configuration turned off."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from chargingd.core.ratelog import RateLimitedLog
from chargingd.core.redisconn import CLUSTER_UNAVAILABLE


class ServiceUnreachable(Exception):
    """Base (or mixin) of an error that says a server this process needs is not there
    (the billing database: billing.errors.DatabaseUnavailable): logged without a
    traceback, which would only show the retry path."""


# Failures that say "a server this process needs (Redis, the billing database) is not
# there", never an error of the work itself; a cluster's slot not served right now is
# one of them (core.redisconn). The commands exit 69 on them (core.exits).
SERVICE_DOWN: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ServiceUnreachable,
    *CLUSTER_UNAVAILABLE,
)
# The same and any OSError (their traceback tells nothing): logged without a traceback.
UNREACHABLE: tuple[type[BaseException], ...] = (*SERVICE_DOWN, OSError)


async def wait_or_stop(stop: asyncio.Event, timeout_s: float) -> bool:
    """Sleep up to ``timeout_s``; True as soon as ``stop`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=timeout_s)
    return stop.is_set()


async def run_every(
    stop: asyncio.Event,
    interval_s: float,
    one_pass: Callable[[], Awaitable[object]],
    *,
    log: logging.Logger,
    what: str,
    retry_s: float | None = None,
    retry_max_s: float | None = None,
) -> None:
    """Call ``one_pass`` every ``interval_s`` until ``stop``; a failed pass is logged,
    the loop goes on (a background task must not die silently).

    With ``retry_s``, the wait after a failed pass is ``retry_s``, doubling after each
    further failure up to ``retry_max_s`` (a dependency that is down is not hammered).
    Failures repeating (Redis down) are logged once per ``RateLimitedLog`` interval with
    a count, the first with its traceback unless Redis is simply unreachable, and once
    on recovery. The one background-loop helper: every periodic task runs on it.
    """
    failures = RateLimitedLog(log)
    kind = f"{what} pass failed"
    backoff_s = retry_s
    while not stop.is_set():
        wait_s = interval_s
        try:
            await one_pass()
            backoff_s = retry_s
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures.failure(kind, exc, trace=not isinstance(exc, UNREACHABLE))
            if backoff_s is not None:
                wait_s = backoff_s
                backoff_s = min(backoff_s * 2, retry_max_s or backoff_s)
        else:
            failures.recovered(kind)
        if await wait_or_stop(stop, wait_s):
            return


class Disabled:
    """A component turned off by configuration: starts and stops nothing, says why once."""

    def __init__(self, name: str, why: str, *, log: logging.Logger | None = None) -> None:
        self.name = name
        self.why = why
        self._log = log or logging.getLogger("chargingd")

    async def start(self) -> None:
        self._log.info("%s not started (%s)", self.name, self.why)

    async def stop(self) -> None:
        return None
