"""The webhook sender against a local HTTP server: JSON POST, signature, retries with
back-off, final refusals, a bounded queue, and a caller that never waits."""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import json
import time

import redis.asyncio as aioredis
from fakes import Clock
from webhook_receiver import webhook_receiver

from chargingd.alerts import Alerts, Severity, WebhookSender
from chargingd.alerts.store import AlertStore
from chargingd.alerts.webhook import retry_after_s, signature


def sender(url: str, **options: object) -> WebhookSender:
    opts: dict[str, object] = {"timeout_s": 2.0, "attempts": 4, "backoff_s": 0.02}
    opts.update(options)
    return WebhookSender(url, jitter=lambda: 1.0, **opts)  # type: ignore[arg-type]


async def test_an_alert_is_posted_as_signed_json() -> None:
    async with webhook_receiver() as rx:
        hook = sender(rx.url, secret="s3cret")
        await hook.start()
        assert hook.submit("1-0", {"kind": "fraud.velocity", "count": 1})
        (got,) = await rx.wait_for(1)
        await hook.stop()
    assert got.json == {"kind": "fraud.velocity", "count": 1}
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["X-Chargingd-Delivery"] == "1-0"
    assert got.headers["X-Chargingd-Signature"] == signature("s3cret", got.body)
    assert hook.counters() == {"sent": 1, "failed": 0, "dropped": 0, "retries": 0, "queued": 0}


async def test_5xx_and_429_are_retried_with_back_off_until_accepted() -> None:
    async with webhook_receiver() as rx:
        rx.statuses = [503, 429, 500]
        hook = sender(rx.url, attempts=5, backoff_s=0.05, max_backoff_s=1.0)
        await hook.start()
        hook.submit("1-0", {"n": 1})
        got = await rx.wait_for(4)
        await hook.stop()
    assert [r.json for r in got] == [{"n": 1}] * 4
    assert all(r.headers["X-Chargingd-Delivery"] == "1-0" for r in got)
    assert (hook.sent, hook.retries, hook.failed) == (1, 3, 0)


async def test_back_off_doubles_between_attempts() -> None:
    stamps: list[float] = []
    async with webhook_receiver() as rx:
        rx.statuses = [500, 500, 500]
        hook = sender(rx.url, attempts=4, backoff_s=0.1, max_backoff_s=10.0)
        await hook.start()
        hook.submit("1-0", {})
        for n in range(1, 5):
            await rx.wait_for(n)
            stamps.append(time.monotonic())
        await hook.stop()
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    # 0.1, 0.2, 0.4 s (jitter pinned to its maximum); generous upper bounds for a busy box
    for gap, want in zip(gaps, (0.1, 0.2, 0.4), strict=True):
        assert want * 0.9 <= gap < want + 1.0


async def test_a_rate_limited_receiver_is_asked_again_after_its_retry_after() -> None:
    """429 with Retry-After (Slack, PagerDuty): the back-off (0.05 s here) waited less
    than the receiver asked, so a burst of fraud alerts used up its attempts on a
    receiver that had said when to come back."""
    stamps: list[float] = []
    async with webhook_receiver() as rx:
        rx.statuses, rx.retry_after = [429], "1"
        hook = sender(rx.url, attempts=3, backoff_s=0.05, max_backoff_s=10.0)
        await hook.start()
        hook.submit("1-0", {})
        for n in (1, 2):
            await rx.wait_for(n)
            stamps.append(time.monotonic())
        await hook.stop()
    assert 0.95 <= stamps[1] - stamps[0] < 3.0
    assert (hook.sent, hook.retries) == (1, 1)
    # Never longer than webhook_max_backoff_s, and an HTTP-date works too.
    async with webhook_receiver() as rx:
        rx.statuses, rx.retry_after = [503], "3600"
        hook = sender(rx.url, attempts=3, backoff_s=0.05, max_backoff_s=0.2)
        await hook.start()
        hook.submit("2-0", {})
        start = time.monotonic()
        await rx.wait_for(2)
        assert time.monotonic() - start < 2.0
        await hook.stop()
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # past
    assert 50 < retry_after_s(email.utils.formatdate(time.time() + 60, usegmt=True)) <= 60
    assert retry_after_s("soon") == retry_after_s(None) == 0.0


async def test_a_4xx_is_final_and_the_last_failure_gives_up() -> None:
    async with webhook_receiver() as rx:
        rx.statuses = [400, 500, 500]
        hook = sender(rx.url, attempts=2)
        await hook.start()
        hook.submit("refused", {})
        hook.submit("failing", {})
        await rx.wait_for(3)
        await hook.stop()
    assert [r.headers["X-Chargingd-Delivery"] for r in rx.received] == [
        "refused",
        "failing",
        "failing",
    ]
    assert (hook.sent, hook.failed, hook.retries) == (0, 2, 1)


async def test_an_unreachable_receiver_is_retried_then_given_up() -> None:
    async with webhook_receiver() as rx:
        url = rx.url  # the server stops at the end of this block: nothing listens then
    hook = sender(url, attempts=3)
    await hook.start()
    hook.submit("1-0", {})
    await hook.stop(grace_s=10.0)
    assert (hook.sent, hook.failed, hook.retries) == (0, 1, 2)


async def test_a_full_queue_drops_and_submit_never_waits() -> None:
    async with webhook_receiver() as rx:
        rx.hold = asyncio.Event()  # the receiver hangs: nothing is ever delivered
        hook = sender(rx.url, queue_size=3, timeout_s=30.0)
        await hook.start()
        started = time.perf_counter()
        accepted = [hook.submit(f"{i}-0", {"i": i}) for i in range(10)]
        elapsed = time.perf_counter() - started
        await rx.wait_for(1)  # the sender took the first one and waits on the receiver
        more = [hook.submit(f"{i}-0", {"i": i}) for i in range(10, 12)]
        rx.hold.set()
        await hook.stop(grace_s=10.0)
    assert accepted == [True] * 3 + [False] * 7
    assert more == [True, False]  # one slot freed when the sender took the first
    assert elapsed < 0.05
    assert hook.dropped == 8 and hook.sent == 4


async def test_raising_an_alert_does_not_wait_for_a_hanging_webhook(
    redis: aioredis.Redis, clock: Clock
) -> None:
    async with webhook_receiver() as rx:
        rx.hold = asyncio.Event()
        store = AlertStore(
            redis,
            clock_ms=clock,
            dedup_window_s=60,
            retention_s=3600,
            calls_kept=5,
            stream_maxlen=1000,
        )
        hook = sender(rx.url, timeout_s=30.0)
        alerts = Alerts(store, webhook=hook)
        await alerts.start()
        started = time.perf_counter()
        for i in range(5):
            await alerts.raise_alert(
                "fraud.destination",
                severity=Severity.CRITICAL,
                incident="fraud.destination:acc9",
                summary="premium range",
                details={"account": "acc9"},
                call=f"sid-{i}",
            )
        elapsed = time.perf_counter() - started
        (first,) = await rx.wait_for(1)
        rx.hold.set()
        await alerts.stop()
    assert elapsed < 1.0  # five Redis round trips, no HTTP
    assert len(rx.received) == 1  # one incident, one webhook
    body = json.loads(first.body)
    assert body["incident"] == "fraud.destination:acc9"
    assert body["severity"] == "critical"
    assert body["details"] == {"account": "acc9"}
    assert body["call"] == "sid-0"
    assert body["id"] == first.headers["X-Chargingd-Delivery"]
